"""``sudo stealth-mtd run SCENARIO``: trials × modes in the real network, then the attackers.

For every arm (``modes``: direct, profile, fixed, cover, stealth; ``experiments.scenario``) and
trial: the trial's bring-up (``experiments.trial.Trial``: a fresh testbed, a role agent in every
tenant host with the VM on the source, in the cover arm's trials the cover schedule on every agent,
the normal-traffic workload, captures at every vantage point; torn down also on Ctrl-C or an
error), a warm-up, the
migration (an ``anomaly`` to the controller, or with ``trigger = "monitor:KIND"`` a real
anomaly that the source's monitor reports), a cool-down. Then the attackers analyse the pcaps
(``attacks.pipeline`` through ``experiments.report.analyze``; they see the ground truth only
when scoring) and the run folder gets ``ground_truth.json``, ``pcaps/``, ``logs/``,
``metrics.json``, ``metrics.csv``, plots and ``report.md`` (see ``experiments.report``). The demo
runs its trials through ``run_trial`` with its own ``Hooks``.

With the scenario's ``reuse_testbed = true`` (or ``--reuse-testbed``) one testbed serves the
consecutive trials of a point, reset and checked reset between them
(``experiments.reuse.SharedTestbed``; a trial whose reset finds anything left fails loudly); the
trials' seeds drive the same workload, VM, cover and roles as on fresh testbeds.

At the end the runner prints where each trial's time went (``experiments.timings``: bring-up,
warm-up, migration, cool-down, teardown, its share of the analysis; also ``timings.csv``) and the
trials per hour (``timings.json``). ``--shard I/N`` runs one slice of the run's trial list
(``experiments.shard``) into a folder without analysis; ``stealth-mtd merge`` combines the
shards and analyses them once (``experiments.merge``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from experiments import probers, shard, timings
from experiments.fleet import wait_migration
from experiments.monitor_eval import (
    C2_PORT,
    MonitorSettings,
    anomaly_cmd,
    start_monitors,
    wait_trained,
)
from experiments.scenario import Scenario, ScenarioError, expand, load
from experiments.shard import Job, Shard, ShardError
from experiments.testbed import Terminated
from experiments.trial import Hooks, Trial, arms_meta, trial_seed, warmup_s, write_ground_truth
from hosts.protocol.mgmt import MgmtError

console = Console()
log = logging.getLogger("stealth_mtd.runner")


def run_trial(sc: Scenario, mode: str, trial: int, trial_id: int, run_dir: Path,
              hooks: Hooks | None = None,
              timings: dict[str, float] | None = None, shared: Any = None) -> dict[str, Any]:
    """One migration with background traffic and captures; returns its ground-truth record.
    ``timings`` (if given) gets the seconds of each phase (``experiments.timings.PHASES``) and
    ``reused`` (1 when the testbed was kept from the last trial). ``shared``: an
    ``experiments.reuse.SharedTestbed`` to take the testbed from (None: a fresh one)."""
    logs = run_dir / "logs" / f"{mode}-{trial}"
    # the scenario's active probers run in every trial, whoever runs it (runner, demo, tests)
    hooks = probers.hooks_for(sc, run_dir, mode, trial, hooks or Hooks())
    try:
        return _trial(sc, mode, trial, trial_id, run_dir, logs, hooks,
                      {} if timings is None else timings, shared)
    finally:
        hooks.down()


def _trial(sc: Scenario, mode: str, trial: int, trial_id: int, run_dir: Path, logs: Path,
           hooks: Hooks, took: dict[str, float], shared: Any = None) -> dict[str, Any]:
    say = hooks.phase
    cover = sc.cover_settings(trial_seed(sc, trial)) if sc.uses_cover(mode) else None
    with Trial(sc, trial, logs, sc.attackers.vantage, run_dir / "pcaps", tag=f"-{mode}-{trial}",
               say=say, cover=cover, shared=shared) as t:
        took["bringup_s"], took["lock_wait_s"] = t.timings["bringup_s"], t.timings["lock_wait_s"]
        took["settle_s"] = t.timings["settle_s"]
        took["reused"] = float(t.reused)
        mark = time.monotonic()
        tb, seed, bg = t.tb, t.seed, sc.background
        monitor_logs = {}
        if sc.trigger != "controller":
            ms = MonitorSettings(train_s=bg.warmup_s - 5)
            src = next(h for h in tb.description["hosts"] if h["name"] == sc.vm.host)
            monitor_logs = start_monitors(tb, [src], ms, seed)
        hooks.up(tb)
        t_end = time.monotonic() + warmup_s(sc, trial)  # warm-up + the trial's seeded jitter
        while time.monotonic() < t_end:
            say(f"normal traffic only (warm-up, {t_end - time.monotonic():.0f} s left)")
            time.sleep(0.5)
        took["warmup_s"], mark = time.monotonic() - mark, time.monotonic()
        tb.mgmt(defaults_msg(sc, mode))
        if sc.trigger == "controller":
            say("anomaly reported: controller starts the migration")
            r = tb.mgmt({"op": "anomaly", "host": sc.vm.host, "kind": "scenario",
                         "seed": seed})
        else:
            r = {"migration": monitor_trigger(tb, sc, seed, monitor_logs, say)}
        rec = wait_migration(tb, r["migration"], timeout=sc.timeout_s + 30,
                             on_tick=lambda m: (say(f"{mode} migration {m['state']}"),
                                                hooks.migrating(tb, m)))
        took["migration_s"], mark = time.monotonic() - mark, time.monotonic()
        t_end = time.monotonic() + bg.cooldown_s
        while time.monotonic() < t_end:
            say(f"cool-down ({t_end - time.monotonic():.0f} s left)")
            time.sleep(0.5)
        hooks.observed(tb)
        hosts = {h["name"]: h["ip"] for h in tb.description["hosts"] if not h["attacker"]}
        attackers = {h["name"]: h["ip"] for h in tb.description["hosts"] if h["attacker"]}
        if cover is not None:  # what each agent's cover mux counted (records, relay bytes)
            try:
                stats: dict[str, Any] = tb.cover_stats()
            except (MgmtError, OSError) as exc:  # diagnostics only: the trial stands
                stats = {"error": f"{type(exc).__name__}: {exc}"}
            (logs / "cover_stats.json").write_text(json.dumps(stats, indent=1, default=str))
        took["cooldown_s"], mark = time.monotonic() - mark, time.monotonic()
    vps, drops = t.captures, t.capture_stats
    took["teardown_s"] = time.monotonic() - mark
    res = rec["result"] or {}
    roles = rec["roles"]
    # the transfer phase: the source's first to last migration packet, by its own clock
    src_stats = (res.get("role_stats") or {}).get(f"source:{sc.vm.host}", {})

    def who(h: str | None) -> dict[str, str] | None:
        return {"host": h, "ip": hosts[h]} if h else None

    return {
        "trial": trial_id, "mode": mode, "trial_in_mode": trial, "seed": seed,
        "migration": rec["migration"], "status": rec["state"], "reason": res.get("reason", ""),
        "migration_start": res.get("start_time"), "migration_end": res.get("end_time"),
        "transfer_start": src_stats.get("transfer_started_at"),
        "transfer_end": src_stats.get("sent_at"),
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


def defaults_msg(sc: Scenario, mode: str) -> dict[str, Any]:
    """The controller's ``defaults`` op for a trial of arm ``mode``: every arm but direct is a
    stealth migration (n, k, the hidden destination), each with its own chunk policy."""
    proto = sc.protocol_mode(mode)
    return {"op": "defaults", "mode": proto, "n": sc.stealth.n, "k": sc.stealth.k,
            "hide_destination": sc.stealth.hide_destination and proto == "stealth",
            "chunk_policy": sc.chunk_policy(mode), "timeout_s": sc.timeout_s}


def run(sc: Scenario, out: Path, label: str = "", only: list[Job] | None = None,
        rows: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """All trials of all modes (of sweep point ``label``), then the analysis; returns the
    metrics. A shard passes ``only``, its jobs of this point: it runs just those and leaves the
    analysis to the merge (returns None). ``rows`` gets each trial's ``timings.row``."""

    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.json").write_text(json.dumps(_asdict(sc), indent=1))
    truths: list[dict[str, Any]] = []
    rows_here: list[dict[str, Any]] = []
    jobs = [j for j in shard.jobs([(label, sc)]) if only is None or j in only]
    from experiments.reuse import SharedTestbed

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("{task.fields[step]}"), console=console) as prog, \
            SharedTestbed() as shared:  # taken down before the analysis (frees the lock)
        task = prog.add_task(sc.name, total=len(jobs), step="")
        for j in jobs:
            prog.update(task, description=f"{sc.name}: {j.mode} trial {j.trial + 1}/{sc.trials}")
            took: dict[str, float] = {}
            reusing = {"shared": shared} if sc.reuse_testbed else {}
            gt = run_trial(sc, j.mode, j.trial, j.trial_id, out, timings=took,
                           hooks=_ProgressHooks(prog, task), **reusing)
            console.log(f"trial {j.trial + 1}: {record_trial(out, truths, gt, arms_meta(sc))}")
            rows_here.append(timings.row(label, j.trial_id, j.mode, j.trial, took))
            timings.write_csv(out, rows_here)
            prog.advance(task)
    if rows is not None:
        rows += rows_here  # the same dicts: the analysis' share lands in both
    if only is not None:
        return None
    return analyse(out, sc, rows_here)


def analyse(out: Path, sc: Scenario, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The attackers on the run folder ``out``'s captures, then its metrics, plots and report;
    the time it took is shared by the trials' ``rows`` (rewritten to timings.csv)."""
    from experiments import analysis, report

    t0 = time.monotonic()
    with console.status("attackers analysing the captures"):
        an = analysis.analyze(out, sc)
    with console.status("writing plots and report"):
        report.write(out, sc, an)
    if rows:
        timings.share_analysis(rows, time.monotonic() - t0)
        timings.write_csv(out, rows)
    return an.metrics


def record_trial(out: Path, truths: list[dict[str, Any]], gt: dict[str, Any],
                 meta: dict[str, Any] | None = None) -> str:
    """Add a finished trial to the run's ground_truth.json (``meta``: the run's arms,
    ``experiments.trial.arms_meta``); return a one-line summary."""
    truths.append(gt)
    write_ground_truth(out / "ground_truth.json", truths, meta)
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
        wait_listening_in(tb, c2, C2_PORT)  # not a fixed sleep: until the sink listens
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


def wait_listening_in(tb: Any, host: str, port: int, timeout: float = 10.0) -> None:
    """Return once a TCP socket listens on ``port`` inside Mininet host ``host`` (``ss``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tb.host(host).cmd(f"ss -Hltn 'sport = :{port}'").strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {host} after {timeout:.0f} s: see "
                       f"{tb.run_dir}/sink-*.log")


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
    ap.add_argument("--reuse-testbed", action=argparse.BooleanOptionalAction, default=None,
                    help="keep one testbed up across the trials of a point, reset and checked "
                         "between them (default: the scenario's reuse_testbed, false)")
    ap.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N",
                    help="run only shard I of N (from 0) of the run's trials, round-robin over "
                         "its (point, mode, trial) list; no analysis: `stealth-mtd merge` "
                         "combines the shard folders and analyses them once")
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
    if args.reuse_testbed is not None:
        sc.reuse_testbed = args.reuse_testbed
    out = Path(args.out or f"results/{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    from experiments.tables import (
        arms_table,
        comparison_table,
        cost_table,
        read_arms,
        write_sweep,
    )

    started = time.monotonic()
    variants = expand(sc)
    part: list[Job] | None = None
    if args.shard is not None:
        everything = shard.jobs(variants)
        part = shard.select(everything, args.shard)
        shard.write_record(out, sc, args.shard)
        console.print(f"shard {args.shard}: {len(part)} of the run's {len(everything)} trials")
    done: list[tuple[str, dict[str, Any]]] = []
    rows: list[dict[str, Any]] = []
    try:
        for i, (label, variant) in enumerate(variants):
            only = None if part is None else [j for j in part if j.label == label]
            if only == []:
                continue  # this shard has no trial of this point
            if label:
                console.rule(f"sweep {i + 1}/{len(variants)}: {label}")
            metrics = run(variant, out / label if label else out, label, only, rows)
            if metrics is not None:
                done.append((label, metrics))
                console.print(comparison_table(metrics))
                console.print(cost_table(metrics))
                console.print(arms_table(read_arms(out / label if label else out)))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: network torn down; partial results in {out}")
        return 130
    except Terminated:
        console.print(f"[yellow]terminated[/] (SIGTERM): testbed torn down; partial results in "
                      f"{out}")
        return 143
    report_timings(out, rows, time.monotonic() - started)
    if part is not None:
        console.print(f"shard folder: [bold]{out}[/] (ground_truth.json, pcaps/, logs/, "
                      f"{shard.RECORD}); combine the shards with `stealth-mtd merge`")
        return 0
    if len(variants) > 1:
        write_sweep(out, done)
        console.print(f"sweep summary: [bold]{out / 'sweep.md'}[/]")
        if (out / "frontier.md").exists():
            console.print(f"the frontier: [bold]{out / 'frontier.md'}[/]"
                          + (f", {out / 'frontier.png'}" if (out / "frontier.png").exists()
                             else ""))
    console.print(f"run folder: [bold]{out}[/] (report.md, metrics.json, plots/, pcaps/)")
    return 0


def report_timings(out: Path, rows: list[dict[str, Any]], wall_s: float) -> None:
    """Print where each trial's time went and the trials per hour; write them to ``out``
    (timings.csv with every trial, timings.json with the run's wall time). The figure without
    the time spent waiting for another network's testbed lock is printed next to it."""
    out.mkdir(parents=True, exist_ok=True)
    timings.write_csv(out, rows)
    waited = sum(r["lock_wait_s"] for r in rows)
    per_hour = timings.trials_per_hour(len(rows), wall_s)
    own = timings.trials_per_hour(len(rows), wall_s - waited)
    (out / "timings.json").write_text(json.dumps(
        {"trials": len(rows), "wall_s": round(wall_s, 3), "lock_wait_s": round(waited, 3),
         "trials_per_hour": round(per_hour, 2),
         "trials_per_hour_without_lock_wait": round(own, 2)}, indent=1))
    console.print(timings.table(rows))
    console.print(f"{len(rows)} trials in {wall_s:.0f} s (wall, with analysis): "
                  f"[bold]{per_hour:.1f} trials per hour[/]"
                  + (f" ({own:.1f} without the {waited:.0f} s spent waiting for the testbed "
                     "lock)" if waited else ""))


def _shard_arg(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
