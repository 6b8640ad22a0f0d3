"""A testbed reused across consecutive trials (the scenario's ``reuse_testbed = true``).

``SharedTestbed`` keeps one ``Testbed`` (controller, Mininet, an agent in every tenant host) up
for the trials of one topology and VM; ``experiments.trial.Trial(..., shared=...)`` takes it.
At the end of a trial (``end_trial``) the trial's own processes (workload, monitors, anomalies,
sinks: every ``tb.popen`` after the agents) and the cover muxes stop; a trial that failed takes
the testbed down with it, so the next starts fresh. At the start of the next trial (``reset``):
every agent drops its finished roles and its VM, the source starts a fresh VM with the trial's
seed (agent op ``vm_reset``), the controller's book and the VM-address route point at the
source again and its migration and relay counters start over (``reset_trial``), the switches'
port mirrors go (and the datapath's cached flows that copied to them), and every host's ARP
cache and TCP metrics cache are flushed (as on a fresh network: a host's kernel remembers each
peer's congestion window and RTT from the connections of earlier trials, and starts new
connections from them). Then it is checked: no migration active, no relay in the controller
and no relay rule (``controllers.rules.RELAY_COOKIE_TAG``) on any switch, no role and no cover
mux on any agent, the VM only at the source and running, no mirror, no cached TCP metrics, no
trial process or capture left. Anything
left is a ``ResetError`` naming it: the trial fails loudly rather than run on a dirty testbed.
``reset_problems`` is that check's pure part.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments import vantage
from experiments.fleet import tenants
from experiments.scenario import Scenario
from experiments.trial import bring_up, quiet, vm_spec
from hosts.protocol import ops
from hosts.protocol.mgmt import MgmtError
from topologies.base import mac_for

RELAY_TAG = 0x53 << 56  # controllers.rules.RELAY_COOKIE_TAG (importing it loads os_ken)
TAG_MASK = 0xFF << 56


class ResetError(RuntimeError):
    """Something of the last trial is still there; the message lists what."""


def relay_rules(lines: list[str]) -> list[str]:
    """The lines of an ``ovs-ofctl dump-flows`` that belong to a migration's relay."""
    out = []
    for line in lines:
        for part in line.replace(",", " ").split():
            if part.startswith("cookie="):
                try:
                    cookie = int(part.removeprefix("cookie="), 0)
                except ValueError:
                    continue
                if cookie & TAG_MASK == RELAY_TAG:
                    out.append(line)
    return out


def reset_problems(controller: dict[str, Any], active: list[dict[str, Any]],
                   agents: dict[str, dict[str, Any]], flows: dict[str, list[str]],
                   mirrors: dict[str, str], leftovers: list[str],
                   tcp_metrics: dict[str, str], vm: str, source: str) -> list[str]:
    """What a reset testbed still holds of the last trial (empty: clean). ``controller``: its
    ``status`` reply; ``active``: ``migrations_active``; ``agents``: each tenant agent's
    ``status``; ``flows``: each switch's flow lines; ``mirrors``: each bridge's ``mirrors``
    column as ``ovs-vsctl get`` prints it; ``leftovers``: trial processes still alive;
    ``tcp_metrics``: each host's ``ip tcp_metrics show``."""
    out = []
    if active:
        out.append(f"migrations still active: {[m.get('migration') for m in active]}")
    if controller.get("relays"):
        out.append(f"controller still has relays: {controller['relays']}")
    if controller.get("cover") is not None:
        out.append("controller still runs cover traffic")
    if controller.get("vms") != {vm: source}:
        out.append(f"controller's book: VMs at {controller.get('vms')}, want {{{vm!r}: "
                   f"{source!r}}}")
    for sw, lines in sorted(flows.items()):
        left = relay_rules(lines)
        if left:
            out.append(f"switch {sw}: {len(left)} relay rule(s) left: {left[0][:120]}")
    for sw, m in sorted(mirrors.items()):
        if m.strip() not in ("[]", ""):
            out.append(f"switch {sw}: port mirror(s) left: {m.strip()}")
    for host, st in sorted(agents.items()):
        if st.get("roles"):
            out.append(f"agent {host}: roles left: {st['roles']}")
        if st.get("cover") is not None:
            out.append(f"agent {host}: cover mux still runs")
        v = st.get("vm")
        if host == source:
            if not v or v.get("name") != vm or not v.get("running") or v.get("paused"):
                out.append(f"agent {host}: the VM {vm} should run here, it has {v}")
        elif v is not None:
            out.append(f"agent {host}: still holds a VM ({v.get('name')})")
    for host, shown in sorted(tcp_metrics.items()):
        cached = [line for line in shown.splitlines() if line.strip()]
        if cached:
            out.append(f"host {host}: TCP metrics of {len(cached)} peer(s) cached: "
                       f"{cached[0][:80]}")
    out += [f"trial process still running: {p}" for p in leftovers]
    return out


def _key(sc: Scenario) -> str:
    """What must match for a testbed to serve another trial: topology and the VM's spec."""
    vm = asdict(sc.vm)
    return json.dumps([asdict(sc.topology), vm], sort_keys=True, default=str)


class SharedTestbed:
    """One testbed for consecutive trials; ``with SharedTestbed() as shared:`` and pass
    ``shared`` to each ``Trial``. ``get`` returns the testbed and whether it was reused."""

    def __init__(self) -> None:
        self.tb: Any = None
        self.key = ""
        self.base = 0  # tb.procs[:base] are the agents: they stay
        self.trials = 0
        self.lock_wait_s = 0.0  # the last get's wait for the testbed lock (0 when reused)
        self._stack = ExitStack()
        self.extra: list[Path] = []  # folders whose capture processes must be gone (pcaps)

    def __enter__(self) -> SharedTestbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        self._stack = ExitStack()
        self.tb, self.key, self.base, self.trials = None, "", 0, 0

    def get(self, sc: Scenario, logs: Path, seed: int,
            say: Callable[[str], None] = quiet) -> tuple[Any, bool]:
        """The testbed for a trial of ``sc`` with ``seed`` (its logs in ``logs``): the kept one,
        reset and checked, if it has the same topology and VM; else a fresh one."""
        key = _key(sc)
        if self.tb is not None and key == self.key:
            say("resetting the reused testbed")
            logs.mkdir(parents=True, exist_ok=True)
            self.tb.run_dir = logs  # this trial's processes log here
            try:
                self.reset(sc, seed)
            except BaseException:
                self.close()
                raise
            self.trials += 1
            self.lock_wait_s = 0.0
            return self.tb, True
        self.close()
        try:
            self.tb, self.lock_wait_s = bring_up(self._stack, sc, logs, seed, say)
        except BaseException:
            self.close()
            raise
        self.key, self.base, self.trials = key, len(self.tb.procs), 1
        return self.tb, False

    def end_trial(self, failed: bool) -> None:
        """The trial is over: its processes and the cover stop; a failed trial's testbed goes."""
        tb = self.tb
        if tb is None:
            return
        if failed:
            self.close()
            return
        from experiments.testbed import terminate

        try:
            for p in tb.procs[self.base:]:
                terminate(p)
            del tb.procs[self.base:]
            if tb.cover is not None:
                tb.stop_cover()
        except BaseException:
            self.close()
            raise

    def reset(self, sc: Scenario, seed: int) -> None:
        """Put the VM back at the source, fresh with ``seed``; clear what a fresh network would
        not have; check every piece (``ResetError`` if anything is left)."""
        tb, spec = self.tb, vm_spec(sc, seed)
        want = {"name": spec.name, "mib": spec.mib, "dirty_pages_per_s": spec.dirty_pages_per_s,
                "seed": seed, "ip": spec.ip, "mac": mac_for(spec.ip) if spec.ip else None}
        for h in tenants(tb):
            name = h["name"]
            tb.agent_call(name, {"op": ops.VM_RESET, "vm": want if name == spec.host else None},
                          timeout=30.0)
            tb.agent_call(name, {"op": ops.RESET_PEAK})
        tb.mgmt({"op": ops.RESET_TRIAL, "vm": spec.name, "host": spec.host})
        vantage.clear_mirrors(sorted(tb.description["switches"]))
        for h in tb.description["hosts"]:
            tb.host(h["name"]).cmd("ip neigh flush all; ip tcp_metrics flush all")
        problems = reset_problems(*self.observe(), vm=spec.name, source=spec.host)
        if problems:
            raise ResetError("the reused testbed is not clean after the reset:\n  "
                             + "\n  ".join(problems))

    def observe(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[str, Any]],
                               dict[str, list[str]], dict[str, str], list[str], dict[str, str]]:
        """What ``reset_problems`` checks, read from the running testbed."""
        tb = self.tb
        ctl = tb.mgmt({"op": ops.STATUS})
        active = tb.mgmt({"op": ops.MIGRATIONS_ACTIVE})["migrations"]
        agents = {}
        for h in tenants(tb):
            try:
                agents[h["name"]] = tb.agent_call(h["name"], {"op": ops.STATUS})
            except (MgmtError, OSError) as exc:
                agents[h["name"]] = {"vm": None, "roles": {"?": f"no answer: {exc}"}}
        switches = sorted(tb.description["switches"])
        flows = {sw: tb.dump_flows(sw) for sw in switches}
        mirrors = {sw: subprocess.run(["ovs-vsctl", "get", "Bridge", sw, "mirrors"],
                                      capture_output=True, text=True, check=True).stdout
                   for sw in switches}
        left = [" ".join(map(str, p.args))[:100] for p in tb.procs[self.base:]
                if p.poll() is None]
        left += captures_running(self.extra)
        metrics = {h["name"]: tb.host(h["name"]).cmd("ip tcp_metrics show")
                   for h in tb.description["hosts"]}
        return ctl, active, agents, flows, mirrors, left, metrics


def captures_running(folders: list[Path]) -> list[str]:
    """Processes (tcpdump) whose command line writes into one of ``folders``."""
    marks = [str(f) for f in folders]
    out = []
    if not marks:
        return out
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "tcpdump" in cmd and any(m in cmd for m in marks):
            out.append(f"pid {pid}: {cmd[:100]}")
    return out
