"""The active probers of a run: programs in an attacker host, started by the runner's ``Hooks``.

``[attackers] active = ["service-scan", "latency"]`` starts, when a trial's network is up
(before the warm-up, so they probe before, during and after the migration), one process per
prober in the first attacker host that is not a mirror port (``prober_host``), as
``UNPRIVILEGED`` with no capability (plain sockets: they need no root), each appending its
rounds to ``logs/<mode>-<trial>/probers/<name>.jsonl`` (``attacks.probing`` reads and scores
them; its docstring has the line formats). They stop with the testbed. Their packets cross the
network like anyone's, so the captures hold them too.

- ``service-scan``: every ``--every`` seconds ``attacks.active.service_scan`` of the tenants'
  addresses and the plan's first VM addresses (the design is public: ``topologies.base.vm_ip``).
- ``latency``: every ``--every`` seconds one TCP connect time (``attacks.active.tcp_rtt``) to each
  target: the VM's address and every tenant (a closed port answers with a reset).

Cost (quick, 16 tenants): the scan is 19 connects a second, the latency prober about 85; a few
per cent of one core in the attacker host and well under 0.1 Mbit/s on the wire.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attacks.active import service_scan, tcp_rtt
from attacks.probing import PROBES_DIR
from experiments.scenario import Scenario
from experiments.testbed import UNPRIVILEGED, require_enterable, terminate
from experiments.trial import Hooks
from experiments.vantage import attacker_for
from topologies.base import vm_ip

SCAN_EVERY_S = 1.0
LATENCY_EVERY_S = 0.2
VM_ADDRESSES = 3  # the first VM addresses of the plan the scan tries


class ProberHooks(Hooks):
    """``inner``'s hooks, plus the scenario's active probers started when the network is up."""

    def __init__(self, sc: Scenario, run_dir: Path, mode: str, trial: int, inner: Hooks) -> None:
        self.sc, self.inner = sc, inner
        self.folder = Path(run_dir) / "logs" / f"{mode}-{trial}" / PROBES_DIR
        self.procs: list[subprocess.Popen] = []

    def phase(self, text: str) -> None:
        self.inner.phase(text)

    def up(self, tb: Any) -> None:
        hosts = tb.description["hosts"]
        x = prober_host(tb.description, self.sc.attackers.vantage)
        tenants = [h["ip"] for h in hosts if not h["attacker"]]
        pw = pwd.getpwnam(UNPRIVILEGED)
        self.folder.mkdir(parents=True, exist_ok=True)
        require_enterable(self.folder, "the probers")
        os.chown(self.folder, pw.pw_uid, pw.pw_gid)  # the probers may write only here
        for name in self.sc.attackers.active:
            targets, every = prober_targets(name, tenants)
            cmd = [sys.executable, "-m", "experiments.probers", name, "--targets",
                   ",".join(targets), "--every", str(every),
                   "--out", str(self.folder / f"{name}.jsonl")]
            self.procs.append(tb.popen(x, cmd, log_name=f"prober-{name}.log", unprivileged=True))
        self.inner.up(tb)

    def migrating(self, tb: Any, rec: dict[str, Any]) -> None:
        self.inner.migrating(tb, rec)

    def observed(self, tb: Any) -> None:
        # the probers' window is the trial's: stopped before the testbed stops the VMs (else
        # their last rounds see the teardown and a scan's last round finds no VM)
        for p in self.procs:
            terminate(p)
        self.inner.observed(tb)

    def down(self) -> None:
        self.inner.down()


def prober_host(description: dict[str, Any], vantage: list[str]) -> str:
    """The first attacker host that is no switch vantage's mirror port: OVS forwards nothing
    but mirrored frames to a mirror's output port and drops what it sends, so a prober there
    would never get an answer (``experiments.vantage.attacker_for`` picks the mirror's host)."""
    mirrors = {attacker_for(description, v[7:]) for v in vantage if v.startswith("switch:")}
    free = [h["name"] for h in description["hosts"] if h["attacker"] and h["name"] not in mirrors]
    if not free:
        raise RuntimeError("the active probers need an attacker host that is not a switch "
                           "vantage's mirror port: add one more switch to topology.attackers")
    return free[0]


def prober_targets(name: str, tenants: list[str]) -> tuple[list[str], float]:
    """What prober ``name`` probes and how often (seconds)."""
    if name == "service-scan":
        return tenants + [vm_ip(i) for i in range(1, VM_ADDRESSES + 1)], SCAN_EVERY_S
    if name == "latency":
        return [vm_ip(1), *tenants], LATENCY_EVERY_S
    raise ValueError(f"unknown prober {name!r}")


def hooks_for(sc: Scenario, run_dir: Path, mode: str, trial: int, inner: Hooks) -> Hooks:
    """The hooks a trial runs with: ``inner`` alone when the scenario has no active prober."""
    return ProberHooks(sc, run_dir, mode, trial, inner) if sc.attackers.active else inner


def run_prober(name: str, targets: list[str], every: float, out: Path,
               stop: threading.Event, port: int = 7000) -> int:
    """Probe until ``stop``; one JSON line per round (scan) or per connect (latency)."""
    rounds = 0
    with open(out, "a", buffering=1) as f:
        while not stop.is_set():
            t0 = time.time()
            if name == "service-scan":
                probes = service_scan(targets, port=port, timeout=0.5)
                f.write(json.dumps({"time": t0, "probes": [asdict(p) for p in probes]}) + "\n")
            elif name == "latency":
                for ip in targets:
                    t = time.time()
                    f.write(json.dumps({"time": t, "ip": ip,
                                        "rtt_s": tcp_rtt(ip, port, timeout=1.0)}) + "\n")
            else:
                raise ValueError(f"unknown prober {name!r}")
            rounds += 1
            stop.wait(max(every - (time.time() - t0), 0.0))
    return rounds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.probers", description=__doc__)
    ap.add_argument("prober", choices=["service-scan", "latency"])
    ap.add_argument("--targets", required=True, help="comma-separated addresses")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between rounds")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    if args.every <= 0:
        ap.error(f"--every {args.every}: must be > 0")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_prober(args.prober, [t for t in args.targets.split(",") if t], args.every, args.out,
               stop, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
