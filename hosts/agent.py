"""The per-host agent daemon: runs the host's VM (if any) and plays migration roles on command.

One long-lived process per Mininet host (or per 127.0.0.x address on loopback)::

    python -m hosts.agent --host NAME --ip IP --sock AGENT_SOCK --keys KEYFILE --workdir DIR
        [--mgmt CONTROLLER_SOCK] [--vm VMNAME --vm-mib N --dirty-pages-per-s R --vm-port 7000
        --seed S [--vm-ip VMIP --vm-mac VMMAC] [--vm-kind qemu --vm-dirty-kib K]]

``KEYFILE`` is this agent's ``hosts.protocol.auth.KeyRing`` (0600, written by the runner): its
own key for the calls to the controller, and the keys of the callers it accepts (the controller
and the runner). Every command is checked by ``hosts.protocol.mgmt`` (peer uid, size, MAC) and
the policy table (``hosts.protocol.policy.AGENT_OPS``: role commands only from the controller,
``status`` also from the runner, ``reset_peak``/``shutdown`` only from the runner). ``DIR`` is
made 0700 (or must already be a 0700 folder of ours, not a symlink). A view that asks for fault
injection is refused unless the agent was started with ``STEALTH_MTD_TEST_FAULTS=1`` (the
test-only switch, ``hosts.protocol.auth.TEST_FAULTS_ENV``; the runner never sets it).

On start it makes an X25519 key pair, starts its VM (with ``--vm-kind qemu`` a real QEMU
guest, ``hosts.qemu``, booted before it registers), serves the commands below on ``AGENT_SOCK``
(newline-delimited JSON, ``hosts.protocol.mgmt``) and, with ``--mgmt``, registers with the
controller: ``{"op": "register", "host", "ip", "agent", "pubkey", "vm", "vm_bytes"}`` (the image
size the controller vouches to a destination as its limit), and with ``--vm-ip`` the VM's own
address ``vm_ip``/``vm_mac`` (``hosts.vnic``: the VM answers there, not at ``IP``; the
controller routes it to the host that runs the VM). Roles report to the
controller socket (``migration_done`` / ``migration_failed``); without ``--mgmt`` the reports are
only logged and ``status`` tells the same.

Commands (every reply has ``ok``; an error is ``{"ok": false, "error": ...}`` and never kills
the agent):

- ``{"op": "status"[, "migration": ID]}`` → host, ip, pubkey, vm (name, running, paused,
  counter, service), rss_kib / peak_rss_kib, cover (the cover mux's stats, or null), and the
  state of every role (or of one migration's role: role, state, reason, stats).
- ``{"op": "prepare", "view": {...}}`` → take the role in ``view["role"]`` for
  ``view["migration"]`` (a view is ``MigrationPlan.view_for(...).to_dict()``, checked by
  ``hosts.protocol.plan.view_from_dict``: a missing or mistyped field is an error reply that
  names it); receivers listen before the reply, which carries the bound ``port`` (port 0 in
  the view: any free port).
- ``{"op": "start", "migration": ID}`` → the source starts sending (asynchronous).
- ``{"op": "release", "migration": ID}`` → the migration is over: the source drops its VM copy
  (refused unless its stream was fully sent), other roles free what they hold.
- ``{"op": "abort", "migration": ID, "reason": R}`` → stop the role; a source resumes its VM.
- ``{"op": "forget", "migration": ID}`` → drop a finished role's record.
- ``{"op": "cover_start", "config": CoverConfig.to_dict()}`` → start this host's cover mux
  (``hosts.cover.CoverMux``, with the agent's static key); the same config again is a no-op, a
  new one restarts the mux with it. Replies with the mux's ``stats()``.
- ``{"op": "cover_stop"}`` → stop the cover mux (if one runs).
- ``{"op": "vm_reset", "vm": {name, mib, dirty_pages_per_s, seed[, ip, mac]} | null}`` (the
  runner, between the trials of a reused testbed) → refused while a role is still active; else
  drop the finished roles and the VM this host holds (image deleted, NIC detached) and, with a
  ``vm``, start a fresh VM from that spec (the controller's book: ``reset_trial``). Replies with
  the new VM's info (or null).
- ``{"op": "reset_peak"}`` → reset the peak RSS (/proc/self/clear_refs) before a measurement.
- ``{"op": "shutdown"}`` → stop the VM and exit.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import public_hex
from hosts.cover import CoverMux
from hosts.protocol import ops
from hosts.protocol.auth import TEST_FAULTS_ENV, KeyRing, private_dir
from hosts.protocol.cover import CoverConfig, CoverError
from hosts.protocol.mgmt import MgmtServer, call
from hosts.protocol.plan import PlanError, view_from_dict
from hosts.qemu import QemuError, QemuVM
from hosts.qemu_guest import GuestError
from hosts.roles import ROLES
from hosts.roles.base import AgentContext, Role, RoleError
from hosts.vm import VM, VMError, VMNameError, check_name
from hosts.vnic import NicError, VmNic

log = logging.getLogger("hosts.agent")
FINISHED = ("done", "released", "closed", "failed", "aborted")  # a role's states once over


def memory_kib() -> dict[str, int]:
    """Current and peak resident set size of this process, KiB."""
    out = {"rss_kib": 0, "peak_rss_kib": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    out["peak_rss_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


class Agent:
    """The state of one host: its key, its VM, its roles by migration id."""

    def __init__(
        self,
        host: str,
        ip: str,
        sock: str,
        workdir: str,
        mgmt: str | None = None,
        vm_port: int = 7000,
        keys: KeyRing | None = None,
        test_faults: bool = False,
    ) -> None:
        self.host = host
        self.keys = keys
        self.cred = keys.credential() if keys is not None else None
        self.test_faults = test_faults
        self.ip = ip
        self.sock = sock
        self.workdir = workdir
        self.mgmt = mgmt
        self.static = X25519PrivateKey.generate()
        self.pubkey = public_hex(self.static)
        self.vm: VM | None = None
        self.roles: dict[str, Role] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.cover: Any = None  # the running hosts.cover.CoverMux, if any
        self.cover_config: CoverConfig | None = None
        self.cover_lock = threading.Lock()
        self.ctx = AgentContext(
            host=host,
            ip=ip,
            static=self.static,
            workdir=workdir,
            vm_port=vm_port,
            report=self.report,
            get_vm=lambda: self.vm,
            set_vm=self._set_vm,
            get_cover=lambda: self.cover,
        )
        private_dir(workdir)

    def _set_vm(self, vm: VM | None) -> None:
        self.vm = vm

    def report(self, msg: dict[str, Any]) -> None:
        log.info(
            "host=%s event=report op=%s migration=%s",
            self.host,
            msg.get("op"),
            msg.get("migration"),
        )
        if self.mgmt:
            call(self.mgmt, msg, self.cred, timeout=10.0, check=False)

    def register(self) -> None:
        if self.mgmt:
            call(
                self.mgmt,
                {
                    "op": "register",
                    "host": self.host,
                    "ip": self.ip,
                    "agent": self.sock,
                    "pubkey": self.pubkey,
                    "vm": self.vm.name if self.vm else None,
                    "vm_bytes": self.vm.size if self.vm else None,
                    **({f"vm_{k}": v for k, v in self.vm.address().items()} if self.vm else {}),
                },
                self.cred,
            )

    # --- cover traffic -------------------------------------------------------------------
    def cover_start(self, raw: Any) -> dict[str, Any]:
        """Start (or restart with a new config) this host's cover mux; the config must be
        this host's own."""
        cfg = CoverConfig.from_dict(raw)
        if (cfg.host, cfg.ip) != (self.host, self.ip):
            raise CoverError(f"cover config for {cfg.host} ({cfg.ip}), this agent is "
                             f"{self.host} ({self.ip})")
        with self.cover_lock:
            if self.cover is not None and cfg == self.cover_config:
                return {"started": False, "stats": self.cover.stats()}
            self._cover_stop_locked()
            mux = CoverMux(cfg, self.static, log=lambda m: log.info(
                "host=%s event=cover %s", self.host, m))
            mux.start()
            self.cover, self.cover_config = mux, cfg
        log.info("host=%s event=cover_started peers=%d rate_bytes_per_s=%s seed=%s", self.host,
                 len(cfg.peers), cfg.settings.rate_bytes_per_s, cfg.settings.seed)
        return {"started": True, "stats": mux.stats()}

    def cover_stop(self) -> dict[str, Any]:
        with self.cover_lock:
            stats = self._cover_stop_locked()
        return {"stopped": stats is not None, "stats": stats}

    def _cover_stop_locked(self) -> dict[str, Any] | None:
        mux, self.cover, self.cover_config = self.cover, None, None
        if mux is None:
            return None
        stats = mux.stats()
        mux.stop()
        log.info("host=%s event=cover_stopped", self.host)
        return stats

    def cover_stats(self) -> dict[str, Any] | None:
        mux = self.cover
        return mux.stats() if mux is not None else None

    # --- a reused testbed ----------------------------------------------------------------
    def vm_reset(self, spec: Any) -> dict[str, Any]:
        """Between two trials: no role may be active; finished roles and this host's VM go,
        and with ``spec`` a fresh VM starts here (its own address if ``ip``/``mac`` given)."""
        if spec is not None and not isinstance(spec, dict):
            raise ValueError("vm_reset: 'vm' must be a VM spec (an object) or null")
        with self.lock:
            busy = {m: r.state for m, r in self.roles.items() if r.state not in FINISHED}
            if busy:
                raise RoleError(f"vm_reset: roles still active on {self.host}: {busy}")
            self.roles.clear()
        if self.vm is not None:
            self.vm.destroy()
            self.vm = None
        if spec is not None:
            ip, mac = spec.get("ip"), spec.get("mac")
            nic = VmNic(str(ip), str(mac or ""), self.ip) if ip else None
            self.vm = model_vm(self.workdir, self.host, self.ip, self.ctx.vm_port,
                               check_name(str(spec["name"])), int(spec["mib"]),
                               float(spec["dirty_pages_per_s"]), int(spec["seed"]), nic)
        log.info("host=%s event=vm_reset vm=%s", self.host, self.vm.name if self.vm else None)
        return {"vm": self.vm.info() if self.vm else None}

    def _role(self, msg: dict[str, Any]) -> Role:
        mig = msg.get("migration")
        with self.lock:
            role = self.roles.get(str(mig))
        if role is None:
            raise RoleError(f"no role for migration {mig!r} on {self.host}")
        return role

    def handle(self, msg: dict[str, Any], caller: str = "") -> dict[str, Any]:
        """Answer one command (already authenticated and allowed for ``caller`` by the
        management server); expected errors become ``ok: false`` replies."""
        try:
            return self._handle(msg)
        except (RoleError, VMError, NicError, ValueError, KeyError, TypeError, OSError) as exc:
            log.warning(
                "host=%s event=command_refused op=%s why=%r",
                self.host,
                msg.get("op"),
                f"{type(exc).__name__}: {exc}",
            )
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg["op"]
        if op == ops.STATUS:
            if msg.get("migration") is not None:
                return self._role(msg).status()
            with self.lock:
                roles = {m: {"role": r.name, "state": r.state} for m, r in self.roles.items()}
            return {
                "host": self.host,
                "ip": self.ip,
                "pubkey": self.pubkey,
                "vm": self.vm.info() if self.vm else None,
                "roles": roles,
                "cover": self.cover_stats(),
                **memory_kib(),
            }
        if op == "prepare":
            if "view" not in msg:
                raise PlanError("prepare needs a view (MigrationPlan.view_for(...).to_dict())")
            view = view_from_dict(msg["view"])
            if view.fault and not self.test_faults:
                raise RoleError(f"fault injection is test-only: this agent was started without "
                                f"{TEST_FAULTS_ENV}=1; refused {sorted(view.fault)}")
            mig = view.migration
            with self.lock:
                if mig in self.roles:
                    raise RoleError(f"{self.host} already plays {self.roles[mig].name} in {mig}")
                role = ROLES[view.role](self.ctx, view)
                self.roles[mig] = role
            try:
                reply = role.prepare()
            except Exception:
                with self.lock:
                    self.roles.pop(mig, None)
                raise
            role.log("prepared", **{k: v for k, v in reply.items()})
            return reply
        if op == "start":
            self._role(msg).start()
            return {}
        if op == "release":
            self._role(msg).release()
            return {}
        if op == "abort":
            self._role(msg).abort(str(msg.get("reason", "aborted by the controller")))
            return {}
        if op == "forget":
            with self.lock:
                self.roles.pop(str(msg.get("migration")), None)
            return {}
        if op == ops.COVER_START:
            if "config" not in msg:
                raise CoverError("cover_start needs a config (CoverConfig.to_dict())")
            return self.cover_start(msg["config"])
        if op == ops.COVER_STOP:
            return self.cover_stop()
        if op == ops.VM_RESET:
            return self.vm_reset(msg.get("vm"))
        if op == "reset_peak":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return memory_kib()
        if op == "shutdown":
            threading.Timer(0.1, self.stopped.set).start()
            return {}
        raise RoleError(f"unknown op {op!r}")


def model_vm(workdir: str, host: str, ip: str, port: int, name: str, mib: int,
             dirty_pages_per_s: float, seed: int, nic: VmNic | None) -> VM:
    """The model VM ``name`` started in ``workdir`` (at start-up and at a reused testbed's
    ``vm_reset``)."""
    vm = VM(name, os.path.join(workdir, f"{name}.mem"), mib, host=host, ip=ip, port=port,
            dirty_pages_per_s=dirty_pages_per_s, seed=seed, nic=nic)
    vm.start()
    return vm


def _vm_name(name: str) -> str:
    try:
        return check_name(name)
    except VMNameError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def start_qemu(a: argparse.Namespace, workdir: str, nic: VmNic | None) -> Any:
    """The host's VM as a booted QEMU guest (``--vm-kind qemu``)."""
    vm = QemuVM(a.vm, workdir, a.vm_mib, host=a.host, ip=a.ip, port=a.vm_port, nic=nic,
                dirty_kib=a.vm_dirty_kib)
    try:
        vm.start(timeout=180.0)  # TCG on a busy 2-core machine: tens of seconds
    except BaseException:
        vm.destroy()
        raise
    return vm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hosts.agent", description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--sock", required=True, help="this agent's management socket")
    p.add_argument("--mgmt", help="the controller's management socket")
    p.add_argument("--keys", required=True, help="this agent's key file (0600)")
    p.add_argument("--workdir", required=True, help="a 0700 folder of its own")
    p.add_argument("--vm", type=_vm_name, help="the VM's name (letters, digits, '.', '_', '-')")
    p.add_argument("--vm-mib", type=int, default=64)
    p.add_argument("--dirty-pages-per-s", type=float, default=100.0)
    p.add_argument("--vm-port", type=int, default=7000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vm-ip", help="the VM's own address (default: it answers at --ip)")
    p.add_argument("--vm-mac", help="the VM's own MAC (with --vm-ip)")
    p.add_argument("--vm-kind", choices=("model", "qemu"), default="model",
                   help="model: hosts.vm's model VM; qemu: a real guest (hosts.qemu)")
    p.add_argument("--vm-dirty-kib", type=int, default=256,
                   help="qemu: KiB the guest dirties ten times a second")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    workdir = a.workdir
    private_dir(workdir)
    keys = KeyRing.load(a.keys)
    if keys.identity != f"agent:{a.host}":
        print(f"agent: {a.keys} holds the keys of {keys.identity}, not agent:{a.host}",
              file=sys.stderr)
        return 2
    test_faults = os.environ.get(TEST_FAULTS_ENV) == "1"
    logging.basicConfig(
        level=a.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=[
            logging.StreamHandler(sys.stderr),
            logging.FileHandler(os.path.join(workdir, "agent.log")),
        ],
    )
    agent = Agent(a.host, a.ip, a.sock, workdir, a.mgmt, a.vm_port, keys, test_faults)
    try:
        nic = VmNic(a.vm_ip, a.vm_mac or "", a.ip) if a.vm and a.vm_ip else None
    except NicError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    if a.vm and a.vm_kind == "qemu":
        try:
            agent.vm = start_qemu(a, workdir, nic)
        except (QemuError, GuestError, VMError, NicError) as exc:
            print(f"agent: the QEMU guest did not start: {exc}", file=sys.stderr)
            return 2
    elif a.vm:
        agent.vm = model_vm(workdir, a.host, a.ip, a.vm_port, a.vm, a.vm_mib,
                            a.dirty_pages_per_s, a.seed, nic)
    server = MgmtServer(a.sock, agent.handle, keys.verifier())
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: agent.stopped.set())
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` dumps every thread's stack
    log.info(
        "host=%s event=agent_up ip=%s sock=%s pubkey=%s vm=%s test_faults=%s",
        a.host,
        a.ip,
        a.sock,
        agent.pubkey[:16],
        a.vm,
        test_faults,
    )
    try:
        agent.register()
    except Exception as exc:
        log.warning("host=%s event=register_failed why=%s", a.host, exc)
    try:
        while not agent.stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        with agent.lock:
            for role in agent.roles.values():
                if role.state not in FINISHED:
                    role.abort("agent shutting down")
        agent.cover_stop()
        if agent.vm is not None:
            agent.vm.stop()  # a QEMU guest's QEMU quits
        server.close()
        log.info("host=%s event=agent_down", a.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
