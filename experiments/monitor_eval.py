"""``stealth-mtd monitor-eval SCENARIO``: how well the monitor (Alg 1) detects, in the real testbed.

Each trial is one bring-up (``experiments.trial.Trial``: a testbed with a role agent in every
tenant host, the VM on ``vm.host``, the normal workload; no captures) and a monitor
(``hosts.monitor``) in every tenant host, each trained on its own host's normal behaviour for
``monitor.train_s``. Then:

1. ``clean_s`` of normal load: every alarm is a false positive (``false_positive_rate``);
2. a scheduled MTD move of the clean VM (a stealth migration the eval asks for): every alarm of
   a host playing a role in it is a false positive during migration;
3. for each anomaly kind (in a seeded order): the kind is started as a real process in the host
   that runs the VM now (``hosts.anomalies``); the monitor there must report it, the controller
   then migrates the VM with no human step (Alg 1 → 2 … 6). ``detection_delay_s`` is from the
   start of the anomaly process to the monitor's report; the anomaly process is stopped once the
   VM left (the VM is what misbehaved). Alarms of the migration's other roles are false
   positives during migration.

Every monitor judges every interval both with and without migration-awareness (see
``hosts.monitor``) and logs both; the deployed one (which reports) is the aware one. So one run
gives both false-positive rates on identical traffic. ``evaluate(path)`` returns the ``monitor``
section of ``metrics.json`` (and writes ``metrics.json``, ``ground_truth.json`` — the runner's
shape, ``experiments.trial.write_ground_truth`` — and the logs into the run folder);
``score_run(run_dir)`` scores such a folder again; ``main(argv)`` is the command line.
The runner's ``trigger = "monitor:KIND"`` trials use ``start_monitors`` and ``anomaly_cmd``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from experiments.fleet import tenants, wait_migration
from experiments.scenario import Scenario, ScenarioError
from experiments.scenario import load as scenario_load
from experiments.trial import Trial, read_ground_truth, trial_seed, write_ground_truth
from hosts.anomalies import KINDS, VERDICTS

log = logging.getLogger("stealth_mtd.monitor_eval")

C2_PORT = 4444


@dataclass
class MonitorSettings:
    """The ``[monitor]`` table of a monitor scenario."""

    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    interval_s: float = 1.0
    train_s: float = 30.0
    clean_s: float = 20.0
    grace_s: float = 8.0  # after a migration ends, its hosts are still "in migration"
    detect_timeout_s: float = 45.0
    settle_s: float = 8.0  # between phases
    scheduled_migration: bool = True
    scan_ports: str = "1-300"
    exfil_bytes: int = 200_000_000
    beacon_period_s: float = 2.0
    miner_s: float = 120.0


def load(path: str | Path) -> tuple[Scenario, MonitorSettings]:
    """A scenario file and its ``[monitor]`` table (``experiments.scenario.load`` finds the
    file and checks the rest)."""
    sc = scenario_load(path)
    known = {f.name for f in fields(MonitorSettings)}
    if set(sc.monitor) - known:
        raise ScenarioError(f"[monitor]: unknown field(s) {sorted(set(sc.monitor) - known)}; "
                            f"known: {sorted(known)}")
    ms = MonitorSettings(**sc.monitor)
    bad = [k for k in ms.kinds if k not in KINDS]
    if bad:
        raise ScenarioError(f"[monitor] kinds {bad}: choose from {list(KINDS)}")
    return sc, ms


# ============================================================================ in the testbed
def start_monitors(tb: Any, hosts: list[dict[str, Any]], ms: MonitorSettings, seed: int,
                   report: str = "aware", rearm_s: float = 20.0) -> dict[str, Path]:
    """A monitor in every given host; returns host → its JSON-lines log."""
    out = {}
    (tb.run_dir / "monitor").mkdir(exist_ok=True)
    for i, h in enumerate(hosts):
        path = tb.run_dir / "monitor" / f"{h['name']}.jsonl"
        tb.popen(h["name"], [sys.executable, "-m", "hosts.monitor", "--host", h["name"],
                             "--ip", h["ip"], "--mgmt", tb.mgmt_path,
                             "--keys", str(tb.monitor_keys(h["name"])),
                             "--interval", str(ms.interval_s), "--train-s", str(ms.train_s),
                             "--grace-s", str(ms.grace_s), "--report", report,
                             "--rearm-s", str(rearm_s),
                             "--seed", str(seed * 100 + i), "--log-json", str(path)],
                 log_name=f"monitor-{h['name']}.log")
        out[h["name"]] = path
    return out


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed monitor
            continue
    return rows


def anomaly_cmd(kind: str, ip: str, others: list[str], c2: str, ms: MonitorSettings,
                name: str) -> list[str]:
    base = [sys.executable, "-m", "hosts.anomalies", kind, "--ip", ip, "--name", name]
    if kind == "scan":
        return base + ["--target", ",".join(others[:2]), "--ports", ms.scan_ports]
    if kind == "exfil":
        return base + ["--target", c2, "--port", str(C2_PORT), "--bytes", str(ms.exfil_bytes),
                       "--duration", "60"]
    if kind == "miner":
        return base + ["--duration", str(ms.miner_s)]
    return base + ["--target", c2, "--port", str(C2_PORT), "--period", str(ms.beacon_period_s)]


def vm_host(tb: Any) -> str:
    vms = tb.mgmt({"op": "status"})["vms"]
    return next(iter(vms.values()))


def wait_trained(logs: dict[str, Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(any("trained" in r for r in read_log(p)) for p in logs.values()):
            return
        time.sleep(1.0)
    missing = [h for h, p in logs.items() if not any("trained" in r for r in read_log(p))]
    raise RuntimeError(f"monitors not trained after {timeout:.0f} s: {missing}")


def run_trial(sc: Scenario, ms: MonitorSettings, trial: int, run_dir: Path) -> dict[str, Any]:
    """One testbed: clean period, a scheduled move, then each anomaly kind; returns the
    ground truth of the trial (phases, migrations, anomalies) with the monitors' logs read."""
    seed = trial_seed(sc, trial)
    rng = random.Random(seed)
    logs_dir = run_dir / "logs" / f"trial-{trial}"
    truth: dict[str, Any] = {"trial": trial, "seed": seed, "migrations": [], "anomalies": []}
    with Trial(sc, trial, logs_dir) as t:
        tb = t.tb
        hosts = tenants(tb)
        ips = {h["name"]: h["ip"] for h in hosts}
        tb.mgmt({"op": "defaults", "mode": "stealth", "n": sc.stealth.n, "k": sc.stealth.k,
                 "hide_destination": sc.stealth.hide_destination,
                 "chunk_policy": sc.chunk_policy("stealth"), "timeout_s": sc.timeout_s})
        logs = start_monitors(tb, hosts, ms, seed)
        wait_trained(logs, ms.train_s + 60)
        truth["clean"] = [time.time(), time.time() + ms.clean_s]
        log.info("trial %d: monitors trained; %.0f s clean", trial, ms.clean_s)
        time.sleep(ms.clean_s)

        def migrate_record(mid: str, why: str) -> dict[str, Any]:
            rec = wait_migration(tb, mid, timeout=sc.timeout_s + 30)
            res = rec.get("result") or {}
            m = {"migration": mid, "why": why, "state": rec["state"], "hosts": rec["hosts"],
                 "source": rec["hosts"][0], "roles": rec["roles"],
                 "start": res.get("start_time"), "end": res.get("end_time") or time.time(),
                 "reason": res.get("reason", "")}
            truth["migrations"].append(m)
            return m

        if ms.scheduled_migration:
            src = vm_host(tb)
            r = tb.mgmt({"op": "migrate", "source": src, "seed": seed})
            migrate_record(r["migration"], "scheduled")
            time.sleep(ms.settle_s)
        kinds = list(ms.kinds)
        rng.shuffle(kinds)
        for kind in kinds:
            src = vm_host(tb)
            others = [h for h in ips if h != src]
            c2 = rng.choice(others)
            sink = None
            if kind in ("exfil", "beacon"):
                sink = tb.popen(c2, [sys.executable, "-m", "hosts.anomalies", "serve", "--ip",
                                     ips[c2], "--port", str(C2_PORT)],
                                log_name=f"sink-{kind}-{c2}.log", unprivileged=True)
                time.sleep(0.5)
            targets = [ips[h] for h in rng.sample(others, len(others))]
            t_inj = time.time()
            proc = tb.popen(src, anomaly_cmd(kind, ips[src], targets, ips[c2], ms, src),
                            log_name=f"anomaly-{kind}-{src}.log", unprivileged=True)
            a: dict[str, Any] = {"kind": kind, "host": src, "c2": c2, "start": t_inj,
                                 "migration": None}
            truth["anomalies"].append(a)
            log.info("trial %d: %s started in %s", trial, kind, src)
            deadline = time.monotonic() + ms.detect_timeout_s
            mid = None
            while time.monotonic() < deadline and mid is None:
                for m in tb.mgmt({"op": "migrations_active"})["migrations"]:
                    if m["hosts"] and m["hosts"][0] == src:
                        mid = m["migration"]
                time.sleep(0.25)
            if mid is not None:
                rec = tb.mgmt({"op": "migration_status", "migration": mid})
                a["trigger"] = rec.get("trigger")
                a["migration"] = mid
                m = migrate_record(mid, kind)
                a["migration_state"] = m["state"]
            for p in (proc, sink):
                if p is not None and p.poll() is None:
                    p.terminate()
            a["end"] = time.time()
            time.sleep(ms.settle_s)
        truth["end"] = time.time()
        truth["ips"] = ips
    return truth


# ============================================================================ scoring (pure)
def _in(t: float, span: tuple[float, float]) -> bool:
    return span[0] <= t <= span[1]


def score_trials(trials: list[dict[str, Any]], grace_s: float = 8.0,
                 linger_s: float = 10.0) -> dict[str, Any]:
    """The ``monitor`` section of metrics.json from the trials' ground truth and monitor logs.

    Per interval of every host after training: an *anomalous* interval is one of the host whose
    VM runs an injected anomaly (from its start until the VM left); a *migration* interval is
    one of a host playing a role in a migration (from its start to ``grace_s`` after its end),
    not anomalous; every other interval is *clean*. FPR = alert intervals / intervals, over
    the clean ones and over the migration ones, with and without awareness. Detection: the
    anomaly's host reported (its monitor's ``reported`` record) before the VM left.
    """
    per_kind: dict[str, dict[str, Any]] = {}
    counts = {(cls, mode): [0, 0] for cls in ("clean", "migration") for mode in
              ("aware", "unaware")}
    kind_mig = {}
    for tr in trials:
        anomalous: dict[str, list[tuple[float, float]]] = {}
        for a in tr["anomalies"]:
            # the judge's memory (a beacon's window) outlives the process by a few intervals
            anomalous.setdefault(a["host"], []).append((a["start"], a["end"] + linger_s))
        mig_spans: dict[str, list[tuple[float, float, str]]] = {}
        for m in tr["migrations"]:
            if m.get("start") is None:
                continue
            for h in m["hosts"]:
                mig_spans.setdefault(h, []).append((m["start"], m["end"] + grace_s, m["why"]))
        for host, rows in tr["monitor_logs"].items():
            for r in rows:
                if r.get("training") or "aware" not in r:
                    continue
                t = r["t"]
                if any(_in(t, s) for s in anomalous.get(host, [])):
                    continue
                spans = [s for s in mig_spans.get(host, []) if _in(t, s[:2])]
                cls = "migration" if spans else "clean"
                for mode in ("aware", "unaware"):
                    c = counts[(cls, mode)]
                    c[0] += 1
                    c[1] += bool(r[mode]["alert"])
                    if spans:
                        k = kind_mig.setdefault((spans[0][2], mode), [0, 0])
                        k[0] += 1
                        k[1] += bool(r[mode]["alert"])
        for a in tr["anomalies"]:
            pk = per_kind.setdefault(a["kind"], {"injected": 0, "detected": 0, "delays": [],
                                                 "kind_correct": 0, "migrations_done": 0})
            pk["injected"] += 1
            reps = [r for r in tr["monitor_logs"].get(a["host"], [])
                    if r.get("reported") and a["start"] <= r["t"] <= a["end"]]
            if reps:
                rep = reps[0]
                pk["detected"] += 1
                pk["delays"].append(rep["reported"].get("detected_at", rep["t"]) - a["start"])
                pk["kind_correct"] += rep["aware"]["kind"] == VERDICTS[a["kind"]]
            if a.get("migration_state") == "done":
                pk["migrations_done"] += 1

    def rate(c: list[int]) -> float | None:
        return c[1] / c[0] if c[0] else None

    out_kinds = {}
    all_delays: list[float] = []
    inj = det = 0
    for kind, pk in sorted(per_kind.items()):
        inj += pk["injected"]
        det += pk["detected"]
        all_delays += pk["delays"]
        out_kinds[kind] = {
            "injected": pk["injected"], "detected": pk["detected"],
            "true_positive_rate": pk["detected"] / pk["injected"],
            "detection_delay_s": statistics.mean(pk["delays"]) if pk["delays"] else None,
            "detection_delays_s": [round(d, 3) for d in pk["delays"]],
            "kind_correct": pk["kind_correct"], "migrations_done": pk["migrations_done"],
            "false_positive_rate_during_migration": {
                mode: rate(kind_mig.get((kind, mode), [0, 0])) for mode in ("aware", "unaware")},
        }
    return {
        "trials": len(trials),
        "detection_delay_s": statistics.mean(all_delays) if all_delays else None,
        "detection_delay_s_median": statistics.median(all_delays) if all_delays else None,
        "true_positive_rate": det / inj if inj else None,
        "false_positive_rate": rate(counts[("clean", "aware")]),
        "false_positive_rate_unaware": rate(counts[("clean", "unaware")]),
        "false_positive_rate_during_migration": {
            "aware": rate(counts[("migration", "aware")]),
            "unaware": rate(counts[("migration", "unaware")])},
        "intervals": {f"{cls}_{mode}": c[0] for (cls, mode), c in counts.items()},
        "alert_intervals": {f"{cls}_{mode}": c[1] for (cls, mode), c in counts.items()},
        "scheduled_migration_fpr": {mode: rate(kind_mig.get(("scheduled", mode), [0, 0]))
                                    for mode in ("aware", "unaware")},
        "per_kind": out_kinds,
    }


def score_run(run_dir: str | Path, grace_s: float = 8.0) -> dict[str, Any]:
    """Score a run folder: its ``ground_truth.json`` and each trial's monitor logs."""
    run_dir = Path(run_dir)
    trials = read_ground_truth(run_dir / "ground_truth.json")
    for tr in trials:
        mon = run_dir / "logs" / f"trial-{tr['trial']}" / "monitor"
        tr["monitor_logs"] = {p.stem: read_log(p) for p in sorted(mon.glob("*.jsonl"))}
    return score_trials(trials, grace_s)


def evaluate(path: str | Path, trials: int | None = None, out: str | Path | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """Run the monitor experiment of scenario ``path``; returns the ``monitor`` section (and
    writes ``metrics.json`` with it, ``ground_truth.json`` and the logs to the run folder)."""
    sc, ms = load(path)
    if seed is not None:
        sc.seed = seed
    n = trials or sc.trials
    run_dir = Path(out) if out else Path("results") / f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    got = []
    for t in range(n):
        got.append(run_trial(sc, ms, t, run_dir))
        write_ground_truth(run_dir / "ground_truth.json", got)
    section = score_run(run_dir, ms.grace_s)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics["monitor"] = section
    metrics_path.write_text(json.dumps(metrics, indent=1))
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stealth-mtd monitor-eval",
                                description=__doc__.split("\n")[0])
    p.add_argument("scenario", nargs="?", default="monitor")
    p.add_argument("--trials", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out")
    p.add_argument("--score", metavar="RUN_DIR", help="only score an earlier run folder")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if a.score:
            section = score_run(a.score, load(a.scenario)[1].grace_s)
        else:
            section = evaluate(a.scenario, a.trials, a.out, a.seed)
    except ScenarioError as exc:
        print(f"scenario: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(section, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
