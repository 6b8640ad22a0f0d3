"""The VMs' side of a running testbed: a role agent in every tenant host, the VM on the source,
and the normal-traffic workload. Thin glue over ``hosts.agent`` and ``hosts.workload`` used by
``experiments.trial``, the network benchmark and the root tests; the processes live inside the
Mininet hosts and are stopped with the testbed. Agents run as root with their key file and work
folder in the testbed's private folder; the workload runs unprivileged
(``experiments.testbed.UNPRIVILEGED``), as a tenant's own programs would.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from hosts.protocol.auth import private_dir
from hosts.protocol.mgmt import MgmtError
from topologies.base import mac_for, vm_ip

SERVICE_PORT = 8080  # the tenants' request/response service


@dataclass
class VMSpec:
    """The VM that starts on ``host``, answering at ``ip`` (its own address, which moves with
    it: the tenant plan's first VM address by default); ``ip=None``: at its host's address."""

    host: str
    name: str = "vm1"
    mib: int = 32
    dirty_pages_per_s: float = 200.0
    port: int = 7000
    seed: int = 0
    ip: str | None = vm_ip(1)
    kind: str = "model"  # "qemu": a real guest booted by the agent (hosts.qemu)

    @property
    def dirty_kib(self) -> int:
        """A QEMU guest's dirtying loop (KiB per 0.1 s) for ``dirty_pages_per_s``."""
        return round(self.dirty_pages_per_s * 4 / 10)


def tenants(tb: Any) -> list[dict[str, Any]]:
    """The testbed's hosts that are not attackers (their description entries)."""
    return [h for h in tb.description["hosts"] if not h["attacker"]]


def start_agents(tb: Any, vm: VMSpec | None, timeout: float = 60.0) -> dict[str, str]:
    """An agent in every tenant host (the VM on ``vm.host``); wait until all registered.
    Returns host → its agent's socket path."""
    socks = {}
    private_dir(tb.private / "agents")
    for h in tenants(tb):
        name = h["name"]
        sock = tb.agent_sock(name)
        cmd = [sys.executable, "-m", "hosts.agent", "--host", name, "--ip", h["ip"],
               "--sock", sock, "--mgmt", tb.mgmt_path, "--keys", str(tb.agent_keys(name)),
               "--workdir", str(tb.work_dir(name))]
        if vm is not None and vm.host == name:
            cmd += ["--vm", vm.name, "--vm-mib", str(vm.mib), "--dirty-pages-per-s",
                    str(vm.dirty_pages_per_s), "--vm-port", str(vm.port), "--seed", str(vm.seed)]
            if vm.ip is not None:
                cmd += ["--vm-ip", vm.ip, "--vm-mac", mac_for(vm.ip)]
            if vm.kind == "qemu":
                cmd += ["--vm-kind", "qemu", "--vm-dirty-kib", str(vm.dirty_kib)]
                timeout = max(timeout, 240.0)  # the guest boots first (TCG: tens of seconds)
        tb.popen(name, cmd, log_name=f"agent-{name}.log", env=tb.env())
        socks[name] = sock
    deadline = time.monotonic() + timeout
    want = set(socks)
    while time.monotonic() < deadline:
        try:
            got = set(tb.mgmt({"op": "status"})["agents"])
        except MgmtError:
            got = set()
        if want <= got:
            return socks
        time.sleep(0.2)
    raise RuntimeError(f"agents not registered after {timeout:.0f} s: missing "
                       f"{sorted(want - got)}; see {tb.run_dir}/agent-*.log")


def start_workload(tb: Any, seed: int, flows_per_s: float, cdf: str = "websearch",
                   cap_bytes: int = 2 << 20, bulk_per_min: float = 0.5,
                   duration: float = 3600, bulk_max_bytes: int = 8 << 20) -> None:
    """The normal-traffic service and client in every tenant host."""
    hosts = tenants(tb)
    ips = ",".join(h["ip"] for h in hosts)
    for i, h in enumerate(hosts):  # one process per host: the service and the client
        tb.popen(h["name"], [sys.executable, "-m", "hosts.workload", "client", "--serve",
                             "--ip", h["ip"],
                             "--peers", ips, "--port", str(SERVICE_PORT),
                             "--seed", str(seed * 1000 + i), "--flows-per-s", str(flows_per_s),
                             "--cdf", cdf, "--cap-bytes", str(cap_bytes),
                             "--bulk-per-min", str(bulk_per_min),
                             "--bulk-max-bytes", str(bulk_max_bytes),
                             "--duration", str(duration)],
                 log_name=f"workload-{h['name']}.log", unprivileged=True)


def wait_migration(tb: Any, mid: str, timeout: float = 600.0,
                   on_tick: Any = None) -> dict[str, Any]:
    """Poll the controller until the migration ends; returns its record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = tb.mgmt({"op": "migration_status", "migration": mid})
        if on_tick:
            on_tick(rec)
        if rec["state"] not in ("running", "installing"):
            return rec
        time.sleep(0.25)
    raise TimeoutError(f"migration {mid} still running after {timeout:.0f} s")
