"""A running testbed: the controller process, the Mininet network, the run folder.

``Testbed`` is a context manager used by ``experiments.trial`` (so by the runner, the demo and
monitor-eval), the network benchmark and the root tests. It writes the topology description,
starts the os-ken controller as its own process and waits until its OpenFlow port listens (so
OVS never backs off), starts the network, waits until the controller reports every switch's
rules confirmed, and on exit — normal, error, Ctrl-C or SIGTERM — stops the network, the
controller and every process it started.

The management plane lives in a private folder of its own, ``PRIVATE_ROOT/run-<random>``
(root's, 0700, made without following a symlink, unique per run, removed on stop): the
controller's and the agents' sockets, the run secret, the agents' and monitors' key files and the
agents' work folders. Attacker hosts get a tmpfs over ``PRIVATE_ROOT`` (Mininet ``privateDirs``),
so they do not even see it; tenant workloads and attacker-host programs run as ``UNPRIVILEGED``
(``popen(..., unprivileged=True)``), so they can neither enter it nor read a root process's
memory or environment. The runner speaks as ``runner`` (``self.cred``); the tests that inject
faults build the testbed with ``test_faults=True`` and speak as ``test`` (``as_test=True``).

Cover traffic (issue 14's cover arm): ``start_cover(settings)`` asks the controller to start
every registered agent's cover mux (``cover_start``), ``cover_stats()`` reads each agent's mux
stats, and ``stop`` stops the cover before anything else.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hosts.protocol import auth, ops
from hosts.protocol.cover import CoverSettings
from hosts.protocol.mgmt import MgmtError, call
from topologies.base import describe

log = logging.getLogger(__name__)

RUN_ROOT = Path("/tmp/stealth-mtd")
PRIVATE_ROOT = Path("/run/stealth-mtd")  # hidden from attacker hosts (topologies.net)
UNPRIVILEGED = "nobody"  # who tenant workloads and attacker-host programs run as
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _traversable_by_others(path: Path) -> bool:
    """Whether a user with no rights of its own can reach ``path`` (o+x on it and every folder
    above it, o+r on it)."""
    p = path.resolve()
    if not p.stat().st_mode & 0o004:
        return False
    folders = [p, *p.parents] if p.is_dir() else list(p.parents)
    return all(d.stat().st_mode & 0o001 for d in folders)


def code_needs_read_search() -> bool:
    """True when the checkout (or its venv) sits where ``UNPRIVILEGED`` cannot read it, e.g. in
    root's 0700 home: the unprivileged programs then get ``CAP_DAC_READ_SEARCH`` so they can
    load their code. They stay non-root, so ``SO_PEERCRED`` still refuses them on every
    management socket, and socket files are not writable by them (connect needs write)."""
    venv = Path(sys.prefix)
    return not (_traversable_by_others(PROJECT_ROOT / "hosts" / "workload.py")
                and _traversable_by_others(venv))


def closed_parent(folder: Path) -> Path | None:
    """The first folder on the way to ``folder`` that others may not enter, or None."""
    for p in reversed([folder.resolve(), *folder.resolve().parents]):
        if not p.stat().st_mode & 0o001:
            return p
    return None


def require_enterable(folder: Path, who: str) -> None:
    """``RuntimeError`` saying what to do when ``who`` (a program run as ``UNPRIVILEGED``) could
    not reach ``folder``: a folder on the way others may not enter, and no
    ``CAP_DAC_READ_SEARCH`` granted (``code_needs_read_search``)."""
    shut = closed_parent(folder)
    if shut is not None and not code_needs_read_search():
        raise RuntimeError(f"{who} run as {UNPRIVILEGED} and cannot enter {shut} (mode "
                           f"{shut.stat().st_mode & 0o777:o}): put the run folder where others "
                           "may enter (e.g. results/)")


# One testbed at a time per machine: switch-side interface names (e1-eth1, ...) live in the root
# network namespace, so two networks would collide. The container test takes the same lock.
LOCK_PATH = "/run/lock/stealth-mtd-testbed.lock"


class TestbedError(RuntimeError):
    """The testbed could not start; the message says what to do."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError("Mininet needs root: run with sudo (e.g. `sudo make test`)")


def free_port(start: int = 6653) -> int:
    """The first TCP port from ``start`` on that nobody listens on."""
    for port in range(start, start + 200):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise TestbedError(f"no free TCP port in {start}..{start + 199}")


def wait_listening(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TestbedError(f"controller exited with code {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TestbedError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def acquire_lock(timeout: float = 1800.0) -> int:
    """Take the machine-wide testbed lock (waiting for another run); returns its fd. Closing
    the fd releases it."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not warned:
                log.warning("another stealth-mtd network runs on this machine; waiting "
                            "(lock %s)", LOCK_PATH)
                warned = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise TestbedError(f"another stealth-mtd run holds {LOCK_PATH}; if none "
                                   "runs, `sudo stealth-mtd clean`") from None
            time.sleep(0.5)


class Terminated(Exception):
    """SIGTERM arrived while a testbed was up: raised in the main thread so that every ``with``
    block unwinds and tears its network down; the runner and the demo report it in one line."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


class Testbed:
    """Controller + Mininet network for ``topo``; use as ``with Testbed(topo) as tb: ...``."""

    __test__ = False  # not a pytest class

    def __init__(self, topo: Any, run_dir: str | Path | None = None, seed: int | None = None,
                 controller_log_level: str = "info", test_faults: bool = False) -> None:
        require_root()
        from mininet.log import setLogLevel

        setLogLevel("info" if controller_log_level == "debug" else "warning")
        self.topo = topo
        self.seed = seed
        # a folder we made ourselves is temporary: removed on stop unless STEALTH_MTD_KEEP=1
        self.own_dir = run_dir is None and not os.environ.get("STEALTH_MTD_KEEP")
        if run_dir is None:
            RUN_ROOT.mkdir(parents=True, exist_ok=True)
            if RUN_ROOT.is_symlink():
                raise TestbedError(f"{RUN_ROOT} is a symlink; refusing to use it")
            self.run_dir = Path(tempfile.mkdtemp(dir=RUN_ROOT, prefix="run-"))  # 0700, unique
        else:
            self.run_dir = Path(run_dir).absolute()  # the controller runs from the repository
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.description = describe(topo)
        self.test_faults = test_faults
        self.private = auth.unique_private_dir(PRIVATE_ROOT, "run-")
        secret = auth.new_secret()
        self.secret_file = self.private / "secret"
        auth.write_private(self.secret_file, secret)
        self.cred = auth.Credential.from_secret(secret, auth.RUNNER)
        self.test_cred = auth.Credential.from_secret(secret, auth.TEST)
        self._secret = secret
        self.mgmt_path = str(self.private / "mgmt.sock")
        self.controller: subprocess.Popen | None = None
        self.net: Any = None
        self.procs: list[subprocess.Popen] = []
        self.verbose = controller_log_level == "debug"
        self.timings: dict[str, float] = {}
        self.cover: CoverSettings | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        self._old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _lock(self) -> None:
        self._lock_fd = acquire_lock()

    def start(self) -> None:
        from topologies.net import start_network
        from topologies.ovs import ensure

        self._lock()
        # the folder may have gone while we waited for the lock (a `stealth-mtd clean` elsewhere)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        auth.private_dir(self.private)
        ensure()
        t0 = time.monotonic()
        topo_file = self.run_dir / "topology.json"
        topo_file.write_text(json.dumps(self.description, indent=1))
        port = free_port()
        cmd = [sys.executable, "-m", "controllers", "--topology", str(topo_file),
               "--mgmt", self.mgmt_path, "--secret-file", str(self.secret_file),
               "--port", str(port),
               "--log", str(self.run_dir / "controller.log")]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.verbose:
            cmd.append("-v")
        self.controller = subprocess.Popen(cmd, cwd=str(Path(__file__).resolve().parent.parent),
                                           env=self.env(), stdout=subprocess.DEVNULL,
                                           stderr=open(self.run_dir / "controller.err", "w"),
                                           start_new_session=True)
        wait_listening(port, 20, self.controller)
        self.timings["controller_s"] = time.monotonic() - t0
        self.net = start_network(self.topo, controller_port=port,
                                 attacker_private_dirs=[str(PRIVATE_ROOT)])
        self.timings["network_s"] = time.monotonic() - t0
        self.check_hidden()
        self.wait_ready()
        self.timings["ready_s"] = time.monotonic() - t0
        log.info("testbed ready in %.1f s (%s)", self.timings["ready_s"], self.run_dir)

    def check_hidden(self) -> None:
        """Fail unless the private folder is invisible from inside every attacker host."""
        for h in self.description["hosts"]:
            if h["attacker"]:
                seen = self.host(h["name"]).cmd(f"ls -A {PRIVATE_ROOT}").split()
                if seen:
                    raise TestbedError(f"attacker host {h['name']} sees {PRIVATE_ROOT}: {seen}")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.controller and self.controller.poll() is not None:
                raise TestbedError(f"controller died: see {self.run_dir}/controller.err")
            try:
                st = self.mgmt({"op": "status"}, timeout=5)
                if st["ready"]:
                    return st
            except MgmtError:
                pass
            time.sleep(0.1)
        raise TestbedError(f"controller not ready after {timeout:.0f} s: {st}")

    def stop(self) -> None:
        if self.cover is not None and self.controller is not None:
            try:
                self.stop_cover()
            except (MgmtError, OSError) as exc:  # keep tearing down
                log.warning("cover_stop failed: %s", exc)
        for p in self.procs:
            terminate(p)
        self.procs.clear()
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as exc:  # keep tearing down
                log.warning("net.stop failed: %s (run `sudo stealth-mtd clean`)", exc)
            self.net = None
        if self.controller is not None:
            terminate(self.controller)
            self.controller = None
        if getattr(self, "private", None) is not None:
            shutil.rmtree(self.private, ignore_errors=True)  # sockets, secret, keys, work
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self.own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if hasattr(self, "_old_term"):
            signal.signal(signal.SIGTERM, self._old_term)

    # -- cover traffic ---------------------------------------------------------------------------
    def start_cover(self, settings: CoverSettings) -> None:
        """Every registered agent runs its cover mux with ``settings`` (the controller derives
        each one's seed and peers); returns once all have started."""
        self.mgmt({"op": ops.COVER_START, "settings": settings.to_dict()}, timeout=90.0)
        self.cover = settings

    def stop_cover(self) -> dict[str, Any]:
        """Stop every agent's cover mux; the controller's reply (stopped hosts, last stats)."""
        reply = self.mgmt({"op": ops.COVER_STOP}, timeout=90.0)
        self.cover = None
        return reply

    def cover_stats(self) -> dict[str, dict[str, Any]]:
        """Each registered agent's cover mux stats, by host (a host whose mux is stopped: {})."""
        out = {}
        for host in self.mgmt({"op": "status"})["agents"]:
            out[host] = self.agent_call(host, {"op": "status"}).get("cover") or {}
        return out

    # -- helpers --------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment of the controller and the agents: the runner's, with the test-only
        switch set exactly when this testbed was built with ``test_faults``."""
        env = {k: v for k, v in os.environ.items() if k != auth.TEST_FAULTS_ENV}
        if self.test_faults:
            env[auth.TEST_FAULTS_ENV] = "1"
        return env

    def mgmt(self, msg: dict[str, Any], timeout: float = 30.0,
             as_test: bool = False) -> dict[str, Any]:
        """A request to the controller, as ``runner`` (or as ``test``)."""
        return call(self.mgmt_path, msg, self.test_cred if as_test else self.cred,
                    timeout=timeout)

    def agent_call(self, host: str, msg: dict[str, Any], timeout: float = 10.0,
                   check: bool = True) -> dict[str, Any]:
        """A request to ``host``'s agent, as ``runner`` (``status``, ``reset_peak``,
        ``shutdown``)."""
        return call(self.agent_sock(host), msg, self.cred, server=auth.agent_id(host),
                    timeout=timeout, check=check)

    def agent_sock(self, host: str) -> str:
        return str(self.private / "agents" / f"{host}.sock")

    def write_keys(self, ring: auth.KeyRing) -> Path:
        """Write one agent's or monitor's key file into the private folder; returns its path."""
        folder = auth.private_dir(self.private / "keys")
        path = folder / f"{ring.identity.replace(':', '-')}.json"
        ring.save(path)
        return path

    def agent_keys(self, host: str) -> Path:
        return self.write_keys(auth.KeyRing.for_agent(self._secret, host))

    def monitor_keys(self, host: str) -> Path:
        return self.write_keys(auth.KeyRing.for_monitor(self._secret, host))

    def work_dir(self, host: str) -> Path:
        """``host``'s agent work folder's path (the agent makes it 0700)."""
        return auth.private_dir(self.private / "work") / host

    def host(self, name: str) -> Any:
        return self.net.get(name)

    def ip(self, name: str) -> str:
        return next(h["ip"] for h in self.description["hosts"] if h["name"] == name)

    def popen(self, host: str, cmd: list[str], log_name: str | None = None,
              unprivileged: bool = False, raw_sockets: bool = False,
              **kw: Any) -> subprocess.Popen:
        """Start a process inside a Mininet host; it is stopped with the testbed. With
        ``unprivileged`` it runs as ``UNPRIVILEGED`` (no groups, no capabilities but
        ``CAP_NET_RAW`` when ``raw_sockets``): tenant workloads and attacker programs."""
        out = open(self.run_dir / (log_name or f"{host}-{Path(cmd[0]).name}.log"), "ab")
        if unprivileged:
            cmd = unprivileged_cmd(cmd, raw_sockets)
        p = self.host(host).popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def iperf(self, client: str, server: str, port: int = 5201, seconds: float = 2.0,
              dst_ip: str | None = None) -> dict[str, Any]:
        """One iperf3 run from host ``client`` to ``server`` (at ``dst_ip``, default its own
        address); returns iperf3's ``end`` summary (``sum_received.bits_per_second``, ...)."""
        srv = self.host(server).popen(["iperf3", "-s", "-1", "-p", str(port)])
        try:
            time.sleep(0.5)
            out = self.host(client).cmd(
                f"iperf3 -c {dst_ip or self.ip(server)} -p {port} -t {seconds} -J")
        finally:
            srv.kill()
            srv.wait()
        try:
            return json.loads(out)["end"]
        except (json.JSONDecodeError, KeyError):
            raise TestbedError(f"iperf3 {client} -> {server}:{port} failed: {out[-500:]}") from None

    def dump_flows(self, switch: str, cookie: int | None = None) -> list[str]:
        """The switch's flow table as OVS reports it (``ovs-ofctl dump-flows``)."""
        args = ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch]
        if cookie is not None:
            args.append(f"cookie={cookie:#x}/-1")
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        return [line.strip() for line in out.splitlines() if "cookie=" in line]


def unprivileged_cmd(cmd: list[str], raw_sockets: bool = False) -> list[str]:
    """``cmd`` run as ``UNPRIVILEGED`` through ``setpriv`` (util-linux): its uid and gid, no
    supplementary groups, every capability dropped but ``CAP_NET_RAW`` if asked (inheritable
    and ambient, so the program's own raw sockets work)."""
    import pwd

    pw = pwd.getpwnam(UNPRIVILEGED)
    caps = (["net_raw"] if raw_sockets else []) + (
        ["dac_read_search"] if code_needs_read_search() else [])
    plus = "".join(f",+{c}" for c in caps)
    wrap = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
            "--bounding-set=-all" + plus, "--no-new-privs"]
    if caps:
        wrap += [f"--inh-caps=-all{plus}", f"--ambient-caps=-all{plus}"]
    else:
        wrap += ["--inh-caps=-all"]
    return [*wrap, "--", *cmd]


def terminate(p: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop ``p``: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(2)
    except ProcessLookupError:
        pass
