"""``sudo stealth-mtd run SCENARIO``: trials × modes in the real network, then the attackers.

For every mode and trial: the trial's bring-up (``experiments.trial.Trial``: a fresh testbed,
a role agent in every tenant host with the VM on the source, the normal-traffic workload,
captures at every vantage point; torn down also on Ctrl-C or an error), a warm-up, the
migration (an ``anomaly`` to the controller, or with ``trigger = "monitor:KIND"`` a real
anomaly that the source's monitor reports), a cool-down. Then the attackers analyse the pcaps
(``attacks.pipeline`` through ``experiments.report.analyze``; they see the ground truth only
when scoring) and the run folder gets ``ground_truth.json``, ``pcaps/``, ``logs/``,
``metrics.json``, ``metrics.csv``, plots and ``report.md`` (see ``experiments.report``). The demo
runs its trials through ``run_trial`` with its own ``Hooks``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.fleet import wait_migration
from experiments.monitor_eval import (
    C2_PORT,
    MonitorSettings,
    anomaly_cmd,
    start_monitors,
    wait_trained,
)
from experiments.scenario import Scenario, ScenarioError, expand, load
from experiments.trial import Trial, write_ground_truth

console = Console()
log = logging.getLogger("stealth_mtd.runner")


class Hooks:
    """What a caller (the runner's progress bar, the demo's live view) sees of a trial."""

    def phase(self, text: str) -> None:
        """A short line saying what happens now."""

    def up(self, tb: Any) -> None:
        """The network, agents, workload and captures run; migration not yet triggered."""

    def migrating(self, tb: Any, rec: dict[str, Any]) -> None:
        """Called about four times a second while the migration runs."""

    def down(self) -> None:
        """The trial is over (also on errors)."""


def run_trial(sc: Scenario, mode: str, trial: int, trial_id: int, run_dir: Path,
              hooks: Hooks | None = None) -> dict[str, Any]:
    """One migration with background traffic and captures; returns its ground-truth record."""
    logs = run_dir / "logs" / f"{mode}-{trial}"
    hooks = hooks or Hooks()
    try:
        return _trial(sc, mode, trial, trial_id, run_dir, logs, hooks)
    finally:
        hooks.down()


def _trial(sc: Scenario, mode: str, trial: int, trial_id: int, run_dir: Path, logs: Path,
           hooks: Hooks) -> dict[str, Any]:
    say = hooks.phase
    with Trial(sc, trial, logs, sc.attackers.vantage, run_dir / "pcaps", tag=f"-{mode}-{trial}",
               say=say) as t:
        tb, seed, bg = t.tb, t.seed, sc.background
        monitor_logs = {}
        if sc.trigger != "controller":
            ms = MonitorSettings(train_s=bg.warmup_s - 5)
            src = next(h for h in tb.description["hosts"] if h["name"] == sc.vm.host)
            monitor_logs = start_monitors(tb, [src], ms, seed)
        hooks.up(tb)
        t_end = time.monotonic() + bg.warmup_s
        while time.monotonic() < t_end:
            say(f"normal traffic only (warm-up, {t_end - time.monotonic():.0f} s left)")
            time.sleep(0.5)
        tb.mgmt({"op": "defaults", "mode": mode, "n": sc.stealth.n, "k": sc.stealth.k,
                 "hide_destination": sc.stealth.hide_destination and mode == "stealth",
                 "chunk_policy": sc.chunk_policy(mode), "timeout_s": sc.timeout_s})
        if sc.trigger == "controller":
            say("anomaly reported: controller starts the migration")
            r = tb.mgmt({"op": "anomaly", "host": sc.vm.host, "kind": "scenario",
                         "seed": seed})
        else:
            r = {"migration": monitor_trigger(tb, sc, seed, monitor_logs, say)}
        rec = wait_migration(tb, r["migration"], timeout=sc.timeout_s + 30,
                             on_tick=lambda m: (say(f"{mode} migration {m['state']}"),
                                                hooks.migrating(tb, m)))
        t_end = time.monotonic() + bg.cooldown_s
        while time.monotonic() < t_end:
            say(f"cool-down ({t_end - time.monotonic():.0f} s left)")
            time.sleep(0.5)
        hosts = {h["name"]: h["ip"] for h in tb.description["hosts"] if not h["attacker"]}
        attackers = {h["name"]: h["ip"] for h in tb.description["hosts"] if h["attacker"]}
    vps, drops = t.captures, t.capture_stats
    shutil.rmtree(logs / "work", ignore_errors=True)  # the VMs' memory images
    for sock in logs.glob("**/*.sock"):
        sock.unlink(missing_ok=True)
    res = rec["result"] or {}
    roles = rec["roles"]

    def who(h: str | None) -> dict[str, str] | None:
        return {"host": h, "ip": hosts[h]} if h else None

    return {
        "trial": trial_id, "mode": mode, "trial_in_mode": trial, "seed": seed,
        "migration": rec["migration"], "status": rec["state"], "reason": res.get("reason", ""),
        "migration_start": res.get("start_time"), "migration_end": res.get("end_time"),
        "source": who(sc.vm.host), "intermediates": [who(h) for h in roles["intermediates"]],
        "leader": who(roles["leader"]), "destination": who(roles["destination"]),
        "virtual_ip": rec.get("virtual_ip"),
        "paths": [{"from": p["from"], "to": p["to"], "port": p["port"],
                   "switches": p["switches"], "virtual_ip": p["virtual_ip"]}
                  for p in rec["paths"]],
        "hosts": [{"host": h, "ip": ip} for h, ip in hosts.items()],  # the candidates
        "attackers": [{"host": h, "ip": ip} for h, ip in attackers.items()],
        "pcaps": {v.name: str(v.pcap.relative_to(run_dir)) for v in vps if v.pcap},
        "capture_stats": drops,
        "result": res,
    }


def run(sc: Scenario, out: Path) -> dict[str, Any]:
    """All trials of all modes, then the analysis; returns the metrics."""
    from experiments import analysis, report

    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.json").write_text(json.dumps(_asdict(sc), indent=1))
    truths: list[dict[str, Any]] = []
    jobs = [(m, t) for m in sc.modes for t in range(sc.trials)]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[step]}"), console=console) as prog:
        task = prog.add_task(sc.name, total=len(jobs), step="")
        for i, (mode, trial) in enumerate(jobs):
            prog.update(task, description=f"{sc.name}: {mode} trial {trial + 1}/{sc.trials}")
            gt = run_trial(sc, mode, trial, i, out, hooks=_ProgressHooks(prog, task))
            console.log(f"trial {trial + 1}: {record_trial(out, truths, gt)}")
            prog.advance(task)
    with console.status("attackers analysing the captures"):
        an = analysis.analyze(out, sc)
    with console.status("writing plots and report"):
        report.write(out, sc, an)
    return an.metrics


def record_trial(out: Path, truths: list[dict[str, Any]], gt: dict[str, Any]) -> str:
    """Add a finished trial to the run's ground_truth.json; return a one-line summary."""
    truths.append(gt)
    write_ground_truth(out / "ground_truth.json", truths)
    r = gt["result"]
    return (f"{gt['mode']} {gt['status']} in {r.get('migration_time_s', 0):.1f} s, "
            f"{gt['source']['host']} → {gt['destination']['host']}"
            + (f" ({gt['reason']})" if gt["status"] != "done" else ""))


def monitor_trigger(tb: Any, sc: Scenario, seed: int, logs: dict[str, Path],
                    say: Callable[[str], None]) -> str:
    """Alg 1 for real: start the anomaly in the VM's host and wait until its monitor's report
    has made the controller start a migration; returns the migration's id."""
    ms = MonitorSettings()
    kind = sc.trigger.partition(":")[2]
    wait_trained(logs, 60)
    ips = {h["name"]: h["ip"] for h in tb.description["hosts"] if not h["attacker"]}
    others = [h for h in ips if h != sc.vm.host]
    c2 = others[seed % len(others)]
    if kind in ("exfil", "beacon"):
        tb.popen(c2, [sys.executable, "-m", "hosts.anomalies", "serve", "--ip", ips[c2],
                      "--port", str(C2_PORT)], log_name=f"sink-{kind}.log", unprivileged=True)
        time.sleep(0.5)
    say(f"anomaly '{kind}' runs in {sc.vm.host}; its monitor is watching")
    tb.popen(sc.vm.host, anomaly_cmd(kind, ips[sc.vm.host], [ips[h] for h in others], ips[c2],
                                     ms, sc.vm.host), log_name=f"anomaly-{kind}.log",
             unprivileged=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for m in tb.mgmt({"op": "migrations_active"})["migrations"]:
            if m["hosts"] and m["hosts"][0] == sc.vm.host:
                say("the monitor reported it: controller starts the migration")
                return str(m["migration"])
        time.sleep(0.2)
    raise RuntimeError(f"the monitor did not report the '{kind}' anomaly within 90 s: see "
                       f"{tb.run_dir}/monitor-{sc.vm.host}.log")


class _ProgressHooks(Hooks):
    def __init__(self, prog: Progress, task: Any) -> None:
        self.prog, self.task = prog, task

    def phase(self, text: str) -> None:
        self.prog.update(self.task, step=text)


def _asdict(sc: Scenario) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(sc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd run", description=__doc__)
    ap.add_argument("scenario", help="a scenario TOML (or the name of a shipped one)")
    ap.add_argument("--out", default=None, help="run folder (default results/<name>-<time>)")
    ap.add_argument("--trials", type=int, default=None, help="override the scenario's trials")
    ap.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    args = ap.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        ap.error(f"--trials {args.trials}: must be >= 1")
    if args.seed is not None and args.seed < 0:
        ap.error(f"--seed {args.seed}: must be >= 0")
    logging.basicConfig(level=logging.WARNING)
    try:
        sc = load(args.scenario)
    except ScenarioError as exc:
        console.print(f"[red]scenario error:[/] {exc}")
        return 2
    if args.trials is not None:
        sc.trials = args.trials
    if args.seed is not None:
        sc.seed = args.seed
    out = Path(args.out or f"results/{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    from experiments.tables import comparison_table, cost_table, write_sweep

    variants = expand(sc)
    done: list[tuple[str, dict[str, Any]]] = []
    try:
        for i, (label, variant) in enumerate(variants):
            if label:
                console.rule(f"sweep {i + 1}/{len(variants)}: {label}")
            metrics = run(variant, out / label if label else out)
            done.append((label, metrics))
            console.print(comparison_table(metrics))
            console.print(cost_table(metrics))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: network torn down; partial results in {out}")
        return 130
    if len(variants) > 1:
        write_sweep(out, done)
        console.print(f"sweep summary: [bold]{out / 'sweep.md'}[/]")
    console.print(f"run folder: [bold]{out}[/] (report.md, metrics.json, plots/, pcaps/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
