"""A real VM: the QEMU guest of ``hosts.qemu_guest``, driven over QMP, live-migrated by QEMU.

``QemuVM`` has the interface the roles use of the model (``hosts.vm.VM``): ``start``, ``pause``
/ ``resume``, ``running`` / ``paused``, ``stop``, ``destroy``, ``info``, ``address`` /
``attach_nic``, ``name``, ``mib``, ``size``. Its QEMU runs in the agent's host (namespace) with
its QMP socket, console log and pid file in the agent's private work folder; the guest's
counter answers on ``(ip, port)`` through QEMU's user networking (``hostfwd`` on the VM's own
address when it has a ``hosts.vnic.VmNic``, attached before QEMU binds it).

Migration is QEMU's own pre-copy: ``migrate_out`` hands QEMU one end of a socket pair
(``getfd`` + ``migrate fd:``) and yields what QEMU writes, so a slow reader back-pressures QEMU
as a slow network would; when the stream ends QEMU has stopped the guest (its ``STOP`` event's
time is ``paused_at``) and ``query-migrate`` (total time, downtime, bytes, dirty-sync rounds)
goes into the stats. ``cancel_out`` undoes a migration that did not happen: ``migrate_cancel``
and ``cont``, the guest runs here again. The receiver starts QEMU with ``-incoming defer``
before the stream arrives (``start(incoming=True)``) and loads the stream only once it is
complete and authenticated (``migrate_in(path)``: ``migrate-incoming exec:cat PATH``).

``QMP`` is a small client of QEMU's machine protocol on a unix socket (no dependency).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from hosts import qemu_guest, vnic

MIB = 1 << 20
DEFAULT_MIB = 96  # Debian's kernel with this initramfs does not boot in 64 MiB
MIN_MIB, MAX_MIB = 96, 1024
MAX_DIRTY_KIB = 32768  # what the guest's loop may rewrite every 0.1 s
READ = 256 * 1024
FORCE_DOWNTIME_MS = 600_000  # "stop now": the downtime limit once pre-copy ran out of rounds
KVM_GET_API_VERSION = 0xAE00

log = logging.getLogger(__name__)


class QemuError(RuntimeError):
    """QEMU cannot do what was asked (it is missing, did not start, refused a command)."""


# --- QMP ----------------------------------------------------------------------------------
class QMP:
    """A QMP client on a unix socket: ``execute`` waits for the command's reply; events seen on
    the way are kept in ``events`` (each with QEMU's own ``timestamp``)."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise QemuError(f"QMP socket {path}: {exc}") from None
        self.buf = b""
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._id = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise QemuError(f"not a QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            try:
                part = self.sock.recv(65536)
            except OSError as exc:  # QEMU died (e.g. it exits when a stream fails to load)
                raise QemuError(f"QMP connection lost: {exc}") from None
            if not part:
                raise QemuError("QMP connection closed by QEMU")
            self.buf += part
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd: str, args: dict[str, Any] | None = None,
                fds: list[int] | None = None) -> Any:
        """Run ``cmd``; its ``return`` value, or ``QemuError`` with QEMU's error text. ``fds``
        go along with the command (SCM_RIGHTS), as ``getfd`` needs."""
        with self.lock:
            self._id += 1
            msg = {"execute": cmd, "id": self._id, **({"arguments": args} if args else {})}
            data = json.dumps(msg).encode() + b"\n"
            try:
                if fds:
                    socket.send_fds(self.sock, [data], fds)
                else:
                    self.sock.sendall(data)
            except OSError as exc:
                raise QemuError(f"QMP connection lost: {exc}") from None
            while True:
                r = self._read()
                if "event" in r:
                    self.events.append(r)
                    continue
                if r.get("id") != self._id:
                    continue
                if "error" in r:
                    raise QemuError(f"QMP {cmd}: {r['error'].get('desc', r['error'])}")
                return r.get("return")

    def event_time(self, name: str) -> float | None:
        """The time of the last ``name`` event seen (QEMU's timestamp), or None."""
        self.execute("query-status")  # collect what is pending
        for ev in reversed(self.events):
            if ev.get("event") == name:
                ts = ev.get("timestamp", {})
                return ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# --- the accelerator ----------------------------------------------------------------------
def kvm_usable() -> bool:
    """``/dev/kvm`` opens and speaks KVM API 12 (whether guests boot on it: ``accel``)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


def accel(guest: qemu_guest.Guest | None = None) -> str:
    """``kvm`` or ``tcg``: ``$STEALTH_MTD_QEMU_ACCEL`` if set, else KVM if it is usable and
    the guest boots on it (probed once per machine and kernel, the answer cached beside the
    guest), else TCG. Nested KVM often fails here (an MSR QEMU cannot set, a triple fault)."""
    env = os.environ.get("STEALTH_MTD_QEMU_ACCEL", "")
    if env in ("kvm", "tcg"):
        return env
    if env:
        raise QemuError(f"STEALTH_MTD_QEMU_ACCEL={env!r}: use kvm, tcg or leave it unset")
    if not kvm_usable():
        return "tcg"
    guest = guest or qemu_guest.build()
    mark = os.path.join(os.path.dirname(guest.kernel), "accel")
    try:
        with open(mark) as f:
            return f.read().strip() or "tcg"
    except FileNotFoundError:
        pass
    got = "kvm" if _boots("kvm", guest) else "tcg"
    with open(mark, "w") as f:
        f.write(got + "\n")
    return got


def _boots(acc: str, guest: qemu_guest.Guest, timeout: float = 20.0) -> bool:
    """Whether the guest's init comes up under ``acc`` within ``timeout`` s."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stealth-kvm-probe-") as d:
        con = os.path.join(d, "console")
        p = subprocess.Popen(
            [*_base_args(acc, DEFAULT_MIB, guest, "probe"), "-serial", f"file:{con}",
             "-nic", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and p.poll() is None:
                with contextlib.suppress(FileNotFoundError), open(con, "rb") as f:
                    if qemu_guest.UP_MARK.encode() in f.read():
                        return True
                time.sleep(0.25)
            return False
        finally:
            p.kill()
            p.wait()


def _base_args(acc: str, mib: int, guest: qemu_guest.Guest, name: str,
               dirty_kib: int = 0) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise QemuError("qemu-system-x86_64 missing: install Debian package qemu-system-x86 "
                        "(scripts/setup.sh)")
    cpu = ["-cpu", "host"] if acc == "kvm" else []
    return [qemu, "-machine", f"pc,accel={acc}", *cpu, "-m", str(mib), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", guest.kernel, "-initrd", guest.initrd,
            "-append", guest.append(name, dirty_kib)]


def available() -> str | None:
    """None if a QEMU guest can run here, else why not (for a test's skip)."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 missing (Debian package qemu-system-x86; scripts/setup.sh)"
    try:
        qemu_guest.build()
    except qemu_guest.GuestError as exc:
        return str(exc)
    return None


# --- the VM -------------------------------------------------------------------------------
class QemuVM(vnic.OwnAddress):
    """One QEMU guest in this host (see the module docstring). Thread-safe enough for the
    roles: every QMP command is serialised."""

    kind = "qemu"

    def __init__(self, name: str, workdir: str, mib: int = DEFAULT_MIB, host: str = "",
                 ip: str = "127.0.0.1", port: int = 7000, nic: vnic.VmNic | None = None,
                 dirty_kib: int = 256, tag: str = "") -> None:
        from hosts.vm import check_name  # the model's name rule (a name becomes a file name)

        if not MIN_MIB <= mib <= MAX_MIB:
            raise QemuError(f"a QEMU guest needs {MIN_MIB} to {MAX_MIB} MiB, got {mib}")
        if not 0 <= dirty_kib <= MAX_DIRTY_KIB:
            raise QemuError(f"dirty_kib must be 0..{MAX_DIRTY_KIB}, got {dirty_kib}")
        self.name = check_name(name)
        self.workdir = workdir
        self.mib = mib
        self.size = mib * MIB
        self.host = host
        self.nic = nic
        self.ip = nic.ip if nic is not None else ip
        self.port = port
        self.dirty_kib = dirty_kib
        self.dirty_pages_per_s = dirty_kib * 10 / 4  # what the loop in the guest dirties
        self.seed = 0
        base = os.path.join(workdir, f"qemu-{name}{'.' + tag if tag else ''}")
        self.qmp_path = base + ".qmp"
        self.console = base + ".console"
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QMP | None = None
        self.running = False
        self.incoming = False
        self.accel = ""
        self.stats: dict[str, Any] = {}
        self._nic_up = False
        self._out_digest: str | None = None
        self._migrating = False  # an outgoing migration is under way
        self._life = threading.Lock()  # start vs destroy
        self._destroyed = False
        self._out_sock: socket.socket | None = None  # our end of an outgoing migration

    # --- life cycle -----------------------------------------------------------------------
    def start(self, incoming: bool = False, timeout: float = 60.0) -> None:
        """Start QEMU (booting the guest, or with ``incoming`` waiting for a stream); returns
        once the guest's counter answers (booting) or QMP is up (incoming)."""
        if self.proc is not None and self.proc.poll() is None:
            if not incoming and self.incoming:
                raise QemuError("this QEMU waits for an incoming stream: migrate_in")
            return
        self.attach_nic()
        guest = qemu_guest.build()
        self.accel = accel(guest)
        for p in (self.qmp_path, self.console):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        args = [*_base_args(self.accel, self.mib, guest, self.name, self.dirty_kib),
                "-serial", f"file:{self.console}",
                "-netdev", f"user,id=n0,net=10.0.2.0/24,"
                           f"hostfwd=tcp:{self.ip}:{self.port}-:{qemu_guest.GUEST_PORT}",
                "-device", "e1000,netdev=n0,mac=52:54:00:12:34:56",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if incoming:
            args += ["-incoming", "defer"]
        t0 = time.monotonic()
        with self._life:  # a destroy() racing this start wins: no QEMU left behind
            if self._destroyed:
                raise QemuError(f"VM {self.name} was destroyed before its QEMU started")
            with open(self.console + ".err", "wb") as err:
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=err)
        self.incoming = incoming
        deadline = t0 + timeout
        while True:  # QEMU makes the socket file a moment before it listens on it
            self._check_alive()
            try:
                qmp = QMP(self.qmp_path)
                break
            except QemuError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise QemuError(f"QEMU's QMP socket did not answer in {timeout:.0f}s") \
                        from None
                time.sleep(0.05)
        with self._life:
            if self._destroyed:
                qmp.close()
                raise QemuError(f"VM {self.name} was destroyed while its QEMU started")
            self.qmp = qmp
        if not incoming:
            self.wait_service(deadline - time.monotonic())
            self.stats["boot_s"] = time.monotonic() - t0
            self.running = True
            log.info("vm=%s event=running kind=qemu accel=%s boot_s=%.2f service=%s:%d",
                     self.name, self.accel, self.stats["boot_s"], self.ip, self.port)

    def _check_alive(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            err = ""
            with contextlib.suppress(OSError), open(self.console + ".err") as f:
                err = f.read()[-800:]
            raise QemuError(f"QEMU exited ({proc.returncode if proc else 'stopped'}): "
                            f"{err.strip()}")

    def wait_service(self, timeout: float) -> None:
        """Until the guest's counter accepts a connection (the boot is over)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(OSError), open(self.console, "rb") as f:
                if qemu_guest.UP_MARK.encode() in f.read():
                    return
            if time.monotonic() > deadline:
                raise QemuError(f"guest not up after {timeout:.0f}s (console: {self.console})")
            time.sleep(0.1)

    def status(self) -> str:
        """QEMU's run state (``running``, ``paused``, ``postmigrate``, ``inmigrate``, ...)."""
        if self.qmp is None:
            return "off"
        return str(self.qmp.execute("query-status")["status"])

    def pause(self) -> None:
        if self.qmp is not None and self.status() == "running":
            self.qmp.execute("stop")

    def resume(self) -> None:
        """Run the guest here again; an outgoing migration still going is cancelled first."""
        if self.qmp is None:
            return
        if self._migrating:
            self.cancel_out()
            return
        if self.status() in ("paused", "postmigrate"):
            self.qmp.execute("cont")

    @property
    def paused(self) -> bool:
        """Stopped, or being migrated out (the roles' "not running here for sure")."""
        try:
            return self._migrating or self.status() in ("paused", "postmigrate",
                                                        "finish-migrate")
        except (QemuError, OSError):
            return False

    def stop(self) -> None:
        """QEMU quits (the guest is gone; the VM NIC goes with it)."""
        with self._life:
            qmp, self.qmp = self.qmp, None
            proc, self.proc = self.proc, None
        if qmp is not None:
            with contextlib.suppress(QemuError, OSError):
                qmp.execute("quit")
            qmp.close()
        if proc is not None:
            try:
                proc.wait(5 if qmp is not None else 0.1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.detach_nic()  # the address goes with the service
        self.running = False

    def destroy(self) -> None:
        """Stop for good: a ``start`` racing this one fails instead of leaving a QEMU."""
        with self._life:
            self._destroyed = True
        self.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.qmp_path)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "mib": self.mib, "kind": "qemu", "accel": self.accel,
                "running": self.running, "paused": self.paused, "counter": None,
                "service": f"{self.ip}:{self.port}",
                "mac": self.nic.mac if self.nic is not None else None,
                "pid": self.proc.pid if self.proc is not None else None,
                "boot_s": self.stats.get("boot_s")}

    def digest(self) -> str:
        """SHA-256 of the last outgoing migration stream (``migrate_out``)."""
        if self._out_digest is None:
            raise QemuError("no migration stream sent yet")
        return self._out_digest

    # --- migration ------------------------------------------------------------------------
    def migrate_out(self, stats: dict[str, Any], max_bandwidth: int = 1 << 30,
                    downtime_ms: int = 300, max_rounds: int = 8) -> Iterator[bytes]:
        """QEMU's migration stream, as QEMU writes it; the guest is stopped when it ends.

        Pre-copy that does not converge (the guest dirties faster than the stream drains, as
        over a paced relay) is ended the way the model ends it: after ``max_rounds`` dirty-sync
        rounds the downtime limit goes up to ``FORCE_DOWNTIME_MS`` and QEMU stops the guest
        for the last copy at its next round (``stats['forced']``).

        ``stats`` gets ``paused_at`` (QEMU's STOP event), ``rounds`` (dirty-sync count),
        ``qemu`` (``query-migrate``'s figures) and ``stream_bytes``/``sha256``."""
        if self.qmp is None or not self.running:
            raise QemuError("no running guest to migrate")
        self.qmp.execute("migrate-set-parameters",
                         {"max-bandwidth": max_bandwidth, "downtime-limit": downtime_ms})
        r, w = socket.socketpair()  # a socket, not a pipe: cancel_out can shut it down
        self._out_sock = r
        try:
            self.qmp.execute("getfd", {"fdname": "mig"}, fds=[w.fileno()])
        finally:
            w.close()
        h = hashlib.sha256()
        n = 0
        done = threading.Event()
        self._migrating = True
        try:
            self.qmp.execute("migrate", {"uri": "fd:mig"})
            stats["migrate_started_at"] = time.time()
            stats["forced"] = False
            watch = threading.Thread(target=self._force_stop, args=(stats, max_rounds, done),
                                     name=f"qemu:{self.name}:rounds", daemon=True)
            watch.start()
            while True:
                try:
                    data = r.recv(READ)
                except OSError:
                    data = b""
                if not data:
                    break
                h.update(data)
                n += len(data)
                yield data
        finally:
            done.set()
            self._out_sock = None
            r.close()  # a reader that gives up breaks QEMU's stream: its migration fails
        try:
            info = self._wait_migration(("completed", "failed", "cancelled"), 60.0)
        finally:
            self._migrating = False
        if info.get("status") != "completed":
            raise QemuError(f"QEMU's migration {info.get('status')}: "
                            f"{info.get('error-desc', '')}")
        paused = self.qmp.event_time("STOP")
        stats.update(paused_at=paused if paused is not None else time.time(),
                     rounds=int(info.get("ram", {}).get("dirty-sync-count", 0)),
                     qemu=qemu_figures(info), stream_bytes=n, sha256=h.hexdigest())
        self._out_digest = h.hexdigest()

    def _force_stop(self, stats: dict[str, Any], max_rounds: int,
                    done: threading.Event) -> None:
        """Watch the rounds; past ``max_rounds``, raise the downtime limit (QEMU stops the guest
        for the last copy). Its own thread: at stop-and-copy QEMU's migration thread holds the
        big lock while it writes, so a QMP call from the thread that drains the stream would wait
        for itself."""
        while not done.wait(0.5):
            try:
                assert self.qmp is not None
                ram = self.qmp.execute("query-migrate").get("ram", {})
                if int(ram.get("dirty-sync-count", 0)) >= max_rounds and not done.is_set():
                    self.qmp.execute("migrate-set-parameters",
                                     {"downtime-limit": FORCE_DOWNTIME_MS})
                    stats["forced"] = True
                    return
            except (QemuError, AssertionError):
                return

    def _wait_migration(self, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
        assert self.qmp is not None
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp.execute("query-migrate")
            if info.get("status") in states:
                return dict(info)
            if time.monotonic() > deadline:
                raise QemuError(f"migration still {info.get('status')} after {timeout:.0f}s")
            time.sleep(0.05)

    def _close_out(self) -> None:
        sock = self._out_sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel_out(self) -> None:
        """The migration did not happen: cancel QEMU's (if still going), run the guest here.
        The stream is shut down first: QEMU may be blocked writing into it at stop-and-copy,
        holding the lock its QMP answers need; a broken stream fails its migration at once."""
        if self.qmp is None:
            return
        self._close_out()
        with contextlib.suppress(QemuError):
            st = self.qmp.execute("query-migrate").get("status")
            if st in ("active", "setup", "pre-switchover", "device"):
                self.qmp.execute("migrate_cancel")
                self._wait_migration(("cancelled", "failed", "completed"), 30.0)
        self._migrating = False
        if self.status() in ("paused", "postmigrate"):
            self.qmp.execute("cont")

    def migrate_in(self, path: str, timeout: float = 120.0) -> dict[str, Any]:
        """Load a complete, authenticated stream from ``path`` into the waiting QEMU; returns
        once the guest runs (``resumed_at``, ``load_s``)."""
        return self.incoming_from(f"exec:cat {shlex.quote(path)}", timeout)

    def incoming_from(self, uri: str, timeout: float = 120.0) -> dict[str, Any]:
        """``migrate-incoming uri`` (``migrate_in``; the benchmark's ``tcp:``), until the guest
        runs."""
        if self.qmp is None or not self.incoming:
            raise QemuError("this QEMU was not started with incoming=True")
        t0 = time.time()
        self.qmp.execute("migrate-incoming", {"uri": uri})
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            st = self.status()
            if st == "running":
                break
            info = self.qmp.execute("query-migrate")
            if info.get("status") == "failed":
                raise QemuError(f"QEMU could not load the stream: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise QemuError(f"incoming guest still {st} after {timeout:.0f}s")
            time.sleep(0.02)
        resumed = self.qmp.event_time("RESUME") or time.time()
        self.incoming = False
        self.running = True
        return {"resumed_at": resumed, "load_s": resumed - t0}


    def migrate_to(self, uri: str, timeout: float = 300.0) -> dict[str, Any]:
        """QEMU's own migration to ``uri`` (``tcp:IP:PORT``: the benchmark's baseline); its
        ``query-migrate`` figures once it completed (the guest is stopped here)."""
        if self.qmp is None or not self.running:
            raise QemuError("no running guest to migrate")
        self.qmp.execute("migrate-set-parameters", {"max-bandwidth": 1 << 30})
        t0 = time.time()
        self.qmp.execute("migrate", {"uri": uri})
        info = self._wait_migration(("completed", "failed", "cancelled"), timeout)
        if info.get("status") != "completed":
            raise QemuError(f"QEMU's migration to {uri} {info.get('status')}: "
                            f"{info.get('error-desc', '')}")
        return {"started_at": t0, "paused_at": self.qmp.event_time("STOP"),
                "qemu": qemu_figures(info)}

    def cpu_seconds(self) -> float:
        """CPU time QEMU used so far (user + system), seconds."""
        if self.proc is None:
            return 0.0
        with open(f"/proc/{self.proc.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def qemu_figures(info: dict[str, Any]) -> dict[str, Any]:
    """The ``query-migrate`` figures that go into metrics.json."""
    ram = info.get("ram", {})
    return {
        "status": info.get("status"),
        "total_time_ms": info.get("total-time"),
        "downtime_ms": info.get("downtime"),
        "setup_time_ms": info.get("setup-time"),
        "transferred_bytes": ram.get("transferred"),
        "ram_total_bytes": ram.get("total"),
        "duplicate_pages": ram.get("duplicate"),
        "normal_pages": ram.get("normal"),
        "dirty_sync_count": ram.get("dirty-sync-count"),
        "mbps": ram.get("mbps"),
    }


def main(argv: list[str] | None = None) -> int:
    """The benchmark's baseline, one side per Mininet host: ``python -m hosts.qemu send WORKDIR
    IP URI`` boots a guest at IP, waits ``--settle`` s and migrates it to URI with QEMU's own
    ``migrate``; ``python -m hosts.qemu receive WORKDIR IP URI`` waits for it (``-incoming``) and
    asks the counter once the guest runs. Each prints one JSON line of figures."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m hosts.qemu")
    p.add_argument("side", choices=["send", "receive"])
    p.add_argument("workdir")
    p.add_argument("ip")
    p.add_argument("uri", help="tcp:IP:PORT (send: the receiver's; receive: where to listen)")
    p.add_argument("--mib", type=int, default=DEFAULT_MIB)
    p.add_argument("--dirty-kib", type=int, default=80)
    p.add_argument("--settle", type=float, default=3.0)
    a = p.parse_args(argv)
    os.makedirs(a.workdir, mode=0o700, exist_ok=True)
    vm = QemuVM("bench", a.workdir, a.mib, ip=a.ip, dirty_kib=a.dirty_kib, tag=a.side)
    try:
        if a.side == "send":
            vm.start(timeout=180)
            c0, t0 = vm.cpu_seconds(), time.monotonic()
            time.sleep(a.settle)
            cpu = (vm.cpu_seconds() - c0) / (time.monotonic() - t0)
            got = vm.migrate_to(a.uri)
            out = {"boot_s": vm.stats["boot_s"], "idle_cpu": cpu, "accel": vm.accel, **got}
        else:
            vm.start(incoming=True)
            got = vm.incoming_from(a.uri, timeout=600)
            from hosts.vm import ask_service

            out = {**got, "counter": ask_service(a.ip, vm.port, timeout=10)}
    except QemuError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    finally:
        vm.destroy()
    print(json.dumps(out))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
