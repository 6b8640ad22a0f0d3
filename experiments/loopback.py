"""A loopback testbed: one agent process per 127.0.0.x address and a stand-in controller.

No root, no Mininet: the loopback tests and ``experiments.bench_protocol`` start real agents
(``python -m hosts.agent``) on their own 127.0.0.x addresses, a real ``MgmtServer`` as the
controller (it records ``register`` messages and forwards reports to a ``ReportRouter``), and
run migrations with ``controllers.orchestration``.

The bed is the run's trust root as a testbed is: it draws the run secret, writes each agent's key
file (``hosts.protocol.auth.KeyRing``) into its private folder ``root`` (0700), drives the roles
as ``controller`` and asks ``status``/``reset_peak``/``shutdown`` as ``runner``. Fault injection
needs ``test_faults=True`` (the agents then start with the test-only switch).

``start_cover(settings)`` does what the controller's ``cover_start`` does (the same configs,
``controllers.cover.cover_configs``) for the registered agents; ``cover_stats()`` reads each
agent's mux stats; ``close`` stops the cover first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from controllers.cover import cover_configs
from controllers.orchestration import MigrationResult, ReportRouter, run_migration
from hosts.protocol import auth, ops
from hosts.protocol.cover import CoverSettings
from hosts.protocol.mgmt import MgmtError, MgmtServer, call
from hosts.protocol.plan import Endpoint, MigrationPlan


class LoopbackBed:
    """Agents on 127.0.0.x plus a stand-in controller, all under ``root``."""

    def __init__(self, root: str, test_faults: bool = False) -> None:
        self.root = root
        os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
        auth.private_dir(root)
        self.test_faults = test_faults
        self.secret = auth.new_secret()
        self.cred = auth.Credential.from_secret(self.secret, auth.CONTROLLER)
        self.runner = auth.Credential.from_secret(self.secret, auth.RUNNER)
        self.router = ReportRouter()
        self.registered: dict[str, dict[str, Any]] = {}
        self.reports: list[dict[str, Any]] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._unregistered: dict[str, tuple[str, str]] = {}
        self._cv = threading.Condition()
        self.cover: CoverSettings | None = None
        self.ctl_sock = os.path.join(root, "controller.sock")
        self.ctl = MgmtServer(self.ctl_sock, self._handle,
                              auth.Verifier.from_secret(auth.CONTROLLER, self.secret))
        self.ctl.start()

    def call_agent(self, path: str, msg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """The orchestration's call to an agent, as ``controller``."""
        host = next(h for h, r in self.registered.items() if r["agent"] == path)
        return call(path, msg, self.cred, server=auth.agent_id(host), **kw)

    def agent_call(self, host: str, msg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """A call to ``host``'s agent as ``runner`` (status, reset_peak, shutdown)."""
        return call(self.registered[host]["agent"], msg, self.runner,
                    server=auth.agent_id(host), **kw)

    def _handle(self, msg: dict[str, Any], caller: str) -> dict[str, Any]:
        if msg["op"] == "register":
            with self._cv:
                self.registered[str(msg["host"])] = msg
                self._cv.notify_all()
            return {}
        if msg["op"] in ("migration_done", "migration_failed"):
            self.reports.append(msg)
            self.router.on_report(msg)
            return {}
        return {"ok": False, "error": f"unknown op {msg['op']!r}"}

    def add_agent(
        self,
        host: str,
        ip: str,
        vm: str | None = None,
        vm_mib: int = 4,
        dirty_pages_per_s: float = 100.0,
        vm_port: int = 7000,
        seed: int = 0,
        timeout: float = 60.0,
        wait: bool = True,
        controller: bool = True,
        vm_kind: str = "model",
    ) -> dict[str, Any]:
        """Start one agent process and (unless ``wait`` is false) wait for it to register.

        With ``controller=False`` the agent gets no ``--mgmt``: it registers with nobody and
        reports to nobody; its key is read with the ``status`` command instead.
        """
        sock = os.path.join(self.root, f"{host}.sock")
        keys = os.path.join(self.root, f"{host}.keys")
        auth.KeyRing.for_agent(self.secret, host).save(keys)
        cmd = [
            sys.executable,
            "-m",
            "hosts.agent",
            "--host",
            host,
            "--ip",
            ip,
            "--sock",
            sock,
            "--keys",
            keys,
            "--workdir",
            os.path.join(self.root, host),
            "--vm-port",
            str(vm_port),
        ]
        if controller:
            cmd += ["--mgmt", self.ctl_sock]
        else:
            self._unregistered[host] = (ip, sock)
        if vm:
            cmd += [
                "--vm",
                vm,
                "--vm-mib",
                str(vm_mib),
                "--dirty-pages-per-s",
                str(dirty_pages_per_s),
                "--seed",
                str(seed),
                "--vm-kind",
                vm_kind,
            ]
        logf = open(os.path.join(self.root, f"{host}.log"), "ab")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k != auth.TEST_FAULTS_ENV}
        if self.test_faults:
            env[auth.TEST_FAULTS_ENV] = "1"
        self.procs[host] = subprocess.Popen(
            cmd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        logf.close()
        if not wait:
            return {}
        self.wait_registered([host], timeout)
        return self.registered[host]

    def wait_registered(self, hosts: list[str], timeout: float = 60.0) -> None:
        """Wait until every agent in ``hosts`` has registered."""
        deadline = time.monotonic() + timeout
        for host in hosts:
            if host in self._unregistered:
                self._poll_status(host, deadline)
        with self._cv:
            for host in hosts:
                while host not in self.registered:
                    if self.procs[host].poll() is not None:
                        raise RuntimeError(f"agent {host} exited: see {self.root}/{host}.log")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"agent {host} did not register in {timeout}s")
                    self._cv.wait(0.2)

    def _poll_status(self, host: str, deadline: float) -> None:
        ip, sock = self._unregistered[host]
        while True:
            try:
                st = call(sock, {"op": "status"}, self.runner, server=auth.agent_id(host),
                          timeout=2.0)
                break
            except MgmtError:
                if self.procs[host].poll() is not None:
                    raise RuntimeError(f"agent {host} exited: see {self.root}/{host}.log") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"agent {host} did not answer") from None
                time.sleep(0.1)
        with self._cv:
            self.registered[host] = {"host": host, "ip": ip, "agent": sock, "pubkey": st["pubkey"]}

    def endpoint(self, host: str, port: int = 0) -> Endpoint:
        r = self.registered[host]
        return Endpoint(host, str(r["ip"]), str(r["agent"]), port, str(r["pubkey"]))

    def plan(
        self,
        migration: str,
        mode: str,
        source: str,
        destination: str,
        intermediates: list[str] | None = None,
        leader: str | None = None,
        k: int = 2,
        **kw: Any,
    ) -> MigrationPlan:
        inter = [self.endpoint(h) for h in intermediates or []]
        return MigrationPlan(
            migration=migration,
            mode=mode,
            source=self.endpoint(source),
            destination=self.endpoint(destination),
            intermediates=inter if mode == "stealth" else [],
            leader=self.endpoint(leader) if leader and mode == "stealth" else None,
            n=len(inter) if mode == "stealth" else 0,
            k=k if mode == "stealth" else 0,
            **kw,
        )

    def migrate(self, plan: MigrationPlan, timeout_s: float = 120.0) -> MigrationResult:
        return run_migration(plan, router=self.router, timeout_s=timeout_s,
                             caller=self.call_agent)

    def start_cover(self, settings: CoverSettings, hosts: list[str] | None = None) -> None:
        """Start the cover mux of every registered agent (or of ``hosts``), peers = the others."""
        agents = {h: self.registered[h] for h in (hosts or sorted(self.registered))}
        for host, cfg in cover_configs(agents, settings).items():
            self.call_agent(str(agents[host]["agent"]),
                            {"op": ops.COVER_START, "config": cfg.to_dict()}, timeout=30.0)
        self.cover = settings

    def stop_cover(self) -> None:
        for host, r in self.registered.items():
            if self.alive(host):
                try:
                    self.call_agent(str(r["agent"]), {"op": ops.COVER_STOP}, timeout=10.0)
                except MgmtError:
                    pass
        self.cover = None

    def cover_stats(self) -> dict[str, dict[str, Any]]:
        """Each live agent's cover mux stats, by host (stopped: {})."""
        return {h: self.status(h).get("cover") or {} for h in sorted(self.registered)
                if self.alive(h)}

    def status(self, host: str, **kw: Any) -> dict[str, Any]:
        return self.agent_call(host, {"op": "status", **kw})

    def kill(self, host: str) -> None:
        p = self.procs.get(host)
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(5)

    def alive(self, host: str) -> bool:
        p = self.procs.get(host)
        return bool(p and p.poll() is None)

    def close(self) -> None:
        if self.cover is not None:
            self.stop_cover()
        for host, p in self.procs.items():
            if p.poll() is None:
                try:
                    self.agent_call(host, {"op": "shutdown"}, timeout=2.0)
                except (MgmtError, KeyError):
                    pass
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.ctl.close()
