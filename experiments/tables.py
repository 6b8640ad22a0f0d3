"""A run's numbers as tables: metrics.csv, costs.csv, arms.csv, the rich tables the console
prints, report.md, and a sweep's summary (with the frontier, ``experiments.frontier``).

Every mean is shown with its 95 % interval and trial count as ``metrics.json`` holds them
(``attacks.stats.format_interval``: ``0.81 [0.70, 0.90] n=10``; bootstrap over trials, Wilson for
the top-1/top-3 proportions), and report.md says which span of the migration labels the
detection figures (``metrics.json["label_span"]``).

``comparison_rows``/``cost_rows``/``arm_rows`` are the arms' attackers, costs and costs from
packets (``arms.json``, ``experiments.arms``) tables as text rows; ``write_csvs`` saves the
per-trial CSVs (and active.csv, the active attackers' records); ``active_rows`` the active
attackers' and curious intermediate's figures; ``report_md`` builds report.md; ``write_sweep``
one table over a sweep's variants. Callers: ``experiments.report.write``, the runner and the
demo (the rich tables).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from attacks.scoring import COST_FIELDS, cost_record
from attacks.stats import format_interval
from attacks.truth import RunTruth
from experiments.analysis import Analysis
from experiments.arms import FIELDS as ARM_FIELDS
from experiments.scenario import Scenario

SHOWN = [("detection_auc", "detection AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR"),
         ("time_to_detect_s", "time to detect (s)"), ("destination_top1", "dest top-1"),
         ("destination_top3", "dest top-3"), ("destination_chance", "chance"),
         ("source_top1", "source top-1"), ("path_precision", "path precision"),
         ("path_recall", "path recall")]


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _iv(entry: dict[str, Any], key: str, scale: float = 1.0) -> str:
    """A mean with its interval and trial count, or the bare value of an older metrics.json."""
    iv = entry.get("intervals", {}).get(key)
    if iv is None:
        v = entry.get(key)
        return _fmt(v / scale if isinstance(v, float | int) and scale != 1.0 else v)
    return format_interval(iv, scale=scale)


# the active attackers' figures (``attacks.probing``): name → (field, heading)
ACTIVE_SHOWN = {
    "service-scan": [("found_vm", "found the VM"), ("same_address", "same address after"),
                     ("found_new_host", "found the VM's new host")],
    "latency": [("detection_auc", "detection AUC"), ("alarm_detected", "alarm in the span"),
                ("alarm_fpr", "false-alarm rate")],
    "curious-intermediate": [("key_recovered", "key recovered"),
                             ("destination_recovered", "destination recovered"),
                             ("consistent_values_per_key_byte", "key values per byte left")],
}
ACTIVE_NOTE = (
    "The service scan and the latency prober ran in an attacker host during every trial "
    "(`experiments.probers`); the latency prober's alarm threshold is chosen on the other "
    "workload seeds' trials. The curious intermediate is re-enacted from what the design grants "
    "it (one share of the run's k-of-n split, the relayed chunk frames): no vantage of a run "
    "holds an intermediate's share, so its figures are the analytic bound, demonstrated "
    "(`attacks/probing.py`).")


def active_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(mode, attacker, figures) rows of the active attackers (``metrics.json["active"]``)."""
    rows = []
    for mode, by_name in (metrics.get("active") or {}).get("modes", {}).items():
        for name, shown in ACTIVE_SHOWN.items():
            entry = by_name.get(name)
            if entry is not None:
                rows.append((mode, name, "; ".join(
                    f"{head} {format_interval(entry.get(f))}" for f, head in shown)))
    return rows


def comparison_rows(metrics: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(mode, attacker, values) rows of the arms' attackers table; the chance rate is a
    constant of the topology, shown bare."""
    rows = []
    for mode, entry in metrics["modes"].items():
        for attacker, a in sorted(entry["attackers"].items()):
            rows.append((mode, attacker, [_fmt(a.get(k)) if k == "destination_chance"
                                          else _iv(a, k) for k, _ in SHOWN]))
    return rows


# (field, heading, scale) of the costs table
COSTS_SHOWN = [("migration_time_s", "migration time (s)", 1.0), ("downtime_s", "downtime (s)", 1.0),
               ("bytes_on_wire", "bytes on wire (MB)", 1e6), ("vm_bytes", "VM (MB)", 1e6),
               ("migration_span_s", "whole span (s)", 1.0),
               ("transfer_span_s", "transfer phase (s)", 1.0)]


def cost_rows(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for mode, e in metrics["modes"].items():
        out.append((mode, [str(e["n_trials"]), str(e["failed"])]
                    + [_iv(e, k, scale) for k, _, scale in COSTS_SHOWN]))
    return out


COST_HEAD = ["trials", "failed"] + [h for _, h, _ in COSTS_SHOWN]

MBIT = 1e6 / 8  # bytes/s per Mbit/s
# (field, heading, scale) of the arms' table (arms.json): costs measured from packets
ARMS_SHOWN = [("bandwidth_overhead", "bandwidth overhead (cover / normal)", 1.0),
              ("cover_measured_bytes_per_s", "cover measured (Mbit/s per VM)", MBIT),
              ("relay_goodput_bytes_per_s", "relay goodput (Mbit/s)", MBIT),
              ("goodput_over_cover", "goodput / cover rate", 1.0),
              ("time_vs_direct", "time / direct's", 1.0),
              ("downtime_vs_direct", "downtime / direct's", 1.0),
              ("floor_s", "floor (s)", 1.0), ("floor_ratio", "time / floor", 1.0),
              ("decision_to_first_byte_s", "decision to first byte (s)", 1.0)]
ARMS_HEAD = ["cover rate (Mbit/s per VM)"] + [h for _, h, _ in ARMS_SHOWN]


def arm_rows(arms: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(arm, values) rows of the arms' costs from packets (``arms.json``)."""
    out = []
    for mode, e in (arms.get("arms") or {}).items():
        rate = e.get("cover_rate_bytes_per_s")
        out.append((mode, [_fmt(rate / MBIT) if rate else "–"]
                    + [_iv(e, k, scale) for k, _, scale in ARMS_SHOWN]))
    return out


def read_arms(folder: Path) -> dict[str, Any]:
    """A run folder's ``arms.json`` ({} when it has none or it is unreadable: no arms table)."""
    try:
        return json.loads((Path(folder) / "arms.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def arms_table(arms: dict[str, Any]) -> Table:
    t = Table(title="the arms' costs from packets (global capture; means over trials, 95 % "
                    "intervals)")
    for c in ["arm"] + ARMS_HEAD:
        t.add_column(c, justify="right")
    for mode, vals in arm_rows(arms):
        t.add_row(mode, *vals)
    return t


ARMS_DEFINITIONS = (
    "Bandwidth overhead: cover bytes (TCP port 8443, both directions) over normal bytes (the "
    "tenants' port 8080: flows and bulk), whole global capture; the cover arm's relay bytes ride "
    "inside its cover records. Cover measured: cover bytes per tenant VM per second of capture. "
    "Relay goodput: VM bytes over the migration time. Floor: VM bytes plus the dirty pages "
    "re-sent, over the cover rate the source was given. Time and downtime over direct's: per "
    "trial, against the direct trial of the same seed. Decision to first byte: the source's "
    "first migration byte after the controller's decision.")


def label_line(metrics: dict[str, Any]) -> str:
    """Which span of the migration labels the detection figures, in words."""
    ls = metrics.get("label_span") or {"span": "migration", "definition": "the whole migration"}
    return (f"Detection figures (AUC, TPR, time to detect, ROC) label a window positive when it "
            f"overlaps the **{ls['span']}** span: {ls['definition']}.")


def interval_line(metrics: dict[str, Any]) -> str:
    iv = metrics.get("intervals")
    if not iv:
        return "Means over trials (no intervals in this metrics.json)."
    return (f"Means over trials as `mean [low, high] n=trials`, {iv['confidence']:.0%} intervals: "
            f"{iv['means']}; {iv['proportions']}.")


def comparison_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="the arms: what the attackers achieved (means over trials, 95 % "
                    "intervals, trial counts)")
    for c in ["mode", "attacker"] + [h for _, h in SHOWN]:
        t.add_column(c, justify="right")
    for mode, attacker, vals in comparison_rows(metrics):
        t.add_row(mode, attacker, *vals)
    return t


def cost_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="what the migration cost (means over trials, 95 % intervals)")
    for c in ["mode"] + COST_HEAD:
        t.add_column(c, justify="right")
    for mode, vals in cost_rows(metrics):
        t.add_row(mode, *vals)
    return t


def write_csvs(out: Path, an: Analysis) -> None:
    """metrics.csv (one row per attacker per trial), costs.csv and arms.csv (one row per
    trial; arms.csv: its finished trials' costs from packets, ``experiments.arms``)."""
    metrics = an.metrics
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "attacker", "trial"] + [k for k, _ in SHOWN])
        for r in metrics["records"]:
            w.writerow([r["mode"], r["attacker"], r["trial"]] + [r.get(k) for k, _ in SHOWN])
    with open(out / "costs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "trial", "status"] + COST_FIELDS)
        for t in an.truth.trials:
            c = cost_record(t, an.bytes_on_wire.get(t.trial))
            w.writerow([t.mode, t.trial_in_mode, t.status] + [c[k] for k in COST_FIELDS])
    active = (metrics.get("active") or {}).get("records", [])
    if active:
        cols = sorted({k for r in active for k, v in r.items()
                       if not isinstance(v, dict | list)} - {"mode", "attacker", "trial"})
        with open(out / "active.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["mode", "attacker", "trial", *cols])
            for r in active:
                w.writerow([r["mode"], r["attacker"], r["trial"]] + [r.get(k) for k in cols])
    by_id = an.truth.by_trial()
    with open(out / "arms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "trial"] + ARM_FIELDS)
        for mode, e in (an.arms.get("arms") or {}).items():
            for i, tid in enumerate(e.get("trials", [])):
                w.writerow([mode, by_id[tid].trial_in_mode]
                           + [e["per_trial"][k][i] for k in ARM_FIELDS])


def _arms_line(sc: Scenario) -> str:
    parts = []
    for m in sc.modes:
        pol = sc.policy_of(m)
        what = "one unshaped stream" if pol is None else f"stealth, chunk policy {pol}"
        if sc.uses_cover(m):
            rate = sc.cover_rate_bytes_per_s()
            how = (f"{sc.cover.rate_x_normal}x the normal traffic per host"
                   if sc.cover.rate_x_normal > 0 else "absolute")
            what += (f", cover {rate / MBIT:.2f} Mbit/s per VM ({how}), records "
                     f"{sc.cover.record_min}-{sc.cover.record_max} B")
        parts.append(f"`{m}` ({what})")
    return "Arms: " + "; ".join(parts) + "."


def report_md(sc: Scenario, truth: RunTruth, metrics: dict[str, Any], plots: list[str],
              arms: dict[str, Any] | None = None) -> str:
    """report.md: the scenario, the attackers', the costs' and the arms' tables, the trials,
    the plots."""
    truths = truth.trials
    lines = [f"# Run report: {sc.name}", "",
             f"Scenario `{sc.source_file}`, seed {sc.seed}, {sc.trials} trial(s) per mode, "
             f"topology {sc.topology.kind} {sc.topology.args}, VM {sc.vm.mib} MiB, stealth "
             f"n={sc.stealth.n} k={sc.stealth.k} policy={sc.stealth.policy}, background "
             f"{sc.background.cdf} {sc.background.flows_per_s} flows/s/host, vantage points "
             f"{', '.join(sc.attackers.vantage)}.", "", _arms_line(sc), "",
             "## Attackers (means over trials)", "", interval_line(metrics), "",
             label_line(metrics), "",
             "| mode | attacker | " + " | ".join(h for _, h in SHOWN) + " |",
             "|" + "---|" * (len(SHOWN) + 2)]
    for mode, attacker, vals in comparison_rows(metrics):
        lines.append(f"| {mode} | {attacker} | " + " | ".join(vals) + " |")
    if active_rows(metrics):
        lines += ["", "## Active attackers and the curious intermediate (over trials)", "",
                  ACTIVE_NOTE, "", "| mode | attacker | figures |", "|---|---|---|"]
        lines += [f"| {m} | {a} | {v} |" for m, a, v in active_rows(metrics)]
    lines += ["", "## Costs (means over trials)", "",
              "| mode | " + " | ".join(COST_HEAD) + " |", "|" + "---|" * (len(COST_HEAD) + 1)]
    for mode, vals in cost_rows(metrics):
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    lines += ["", "The whole span runs from the controller's start to the VM running at the "
              "destination (set-up included); the transfer phase from the source's first to its "
              "last migration packet."]
    if arms and arms.get("arms"):
        lines += ["", "## The arms' costs from packets (means over trials)", "",
                  ARMS_DEFINITIONS, "",
                  "| arm | " + " | ".join(ARMS_HEAD) + " |", "|" + "---|" * (len(ARMS_HEAD) + 1)]
        for mode, vals in arm_rows(arms):
            lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    lines += ["", "## Trials", "", "| mode | trial | status | destination | relay | "
              "time (s) | downtime (s) | whole span (s) | transfer phase (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in truths:
        res = t.result
        c = cost_record(t, None)
        relay = " → ".join([t.source.host] + (
            ["{" + ",".join(e.host for e in t.intermediates) + "}", t.leader.host]
            if t.leader else []) + [t.destination.host])
        lines.append(f"| {t.mode} | {t.trial_in_mode + 1} | {t.status} "
                     f"{t.reason if t.status != 'done' else ''} | "
                     f"{t.destination.host} | {relay} | "
                     f"{_fmt(res.get('migration_time_s'))} | {_fmt(res.get('downtime_s'))} | "
                     f"{_fmt(c['migration_span_s'])} | {_fmt(c['transfer_span_s'])} |")
    drops = {f"{t.mode}-{t.trial_in_mode}/{v}": s.get("dropped_by_kernel", 0)
             for t in truths for v, s in t.capture_stats.items()}
    lost = {k: v for k, v in drops.items() if v}
    lines += ["", "Captures: " + ("no packet dropped by the kernel." if not lost else
                                 f"packets dropped by the kernel: {lost}")]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "Definitions of every metric: `attacks/scoring.py`, the arms' costs "
              "`experiments/arms.py`. Files: `ground_truth.json`, `pcaps/`, `logs/`, "
              "`metrics.json`, `metrics.csv`, `costs.csv`, `arms.json`, `arms.csv`.", ""]
    return "\n".join(lines)


def write_sweep(out: Path, done: list[tuple[str, dict[str, Any]]]) -> None:
    """One table over a sweep's variants: each mode's attackers' scores and costs, with the
    arms' bandwidth and time overheads (each point folder's ``arms.json``); then the frontier
    (``experiments.frontier``: frontier.png, frontier.md, frontier.json) when an arm other than
    direct ran."""
    head = ["variant", "mode", "attacker", "detection AUC", "dest top-1", "chance",
            "path recall", "migration time (s)", "bytes on wire (MB)", "bandwidth overhead",
            "time / direct's"]
    rows = []
    stealthy = False
    for label, m in done:
        arms = _read_json(out / label / "arms.json").get("arms", {})
        for mode, e in m["modes"].items():
            a_e = arms.get(mode, {})
            stealthy |= mode != "direct" and bool(e.get("n_trials"))
            for att, a in sorted(e["attackers"].items()):
                rows.append([label, mode, att, _iv(a, "detection_auc"),
                             _iv(a, "destination_top1"), _fmt(a.get("destination_chance")),
                             _iv(a, "path_recall"), _iv(e, "migration_time_s"),
                             _iv(e, "bytes_on_wire", 1e6), _iv(a_e, "bandwidth_overhead"),
                             _iv(a_e, "time_vs_direct")])
    lines = ["# Sweep summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (out / "sweep.json").write_text(json.dumps({label: m for label, m in done}, indent=1,
                                               default=float))
    if stealthy:
        from experiments import frontier

        made = frontier.write(out, [out])
        lines += ["", "The trade-off frontier: " + ", ".join(f"[{f}]({f})" for f in made) + "."]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
