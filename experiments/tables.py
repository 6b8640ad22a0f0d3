"""A run's numbers as tables: metrics.csv, costs.csv, the rich tables the console prints,
report.md, and a sweep's summary.

Every mean is shown with its 95 % interval and trial count as ``metrics.json`` holds them
(``attacks.stats.format_interval``: ``0.81 [0.70, 0.90] n=10``; bootstrap over trials, Wilson for
the top-1/top-3 proportions), and report.md says which span of the migration labels the
detection figures (``metrics.json["label_span"]``).

``comparison_rows``/``cost_rows`` are the direct-vs-stealth and the costs tables as text rows;
``write_csvs`` saves the per-trial CSVs; ``report_md`` builds report.md; ``write_sweep`` one table
over a sweep's variants. Callers: ``experiments.report.write``, the runner and the demo (the rich
tables).
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


def comparison_rows(metrics: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(mode, attacker, values) rows of the direct-vs-stealth table; the chance rate is a
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
    t = Table(title="direct vs stealth: what the attackers achieved (means over trials, 95 % "
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
    """metrics.csv (one row per attacker per trial) and costs.csv (one row per trial)."""
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


def report_md(sc: Scenario, truth: RunTruth, metrics: dict[str, Any], plots: list[str]) -> str:
    """report.md: the scenario, the attackers' and the costs' tables, the trials, the plots."""
    truths = truth.trials
    lines = [f"# Run report: {sc.name}", "",
             f"Scenario `{sc.source_file}`, seed {sc.seed}, {sc.trials} trial(s) per mode, "
             f"topology {sc.topology.kind} {sc.topology.args}, VM {sc.vm.mib} MiB, stealth "
             f"n={sc.stealth.n} k={sc.stealth.k} policy={sc.stealth.policy}, background "
             f"{sc.background.cdf} {sc.background.flows_per_s} flows/s/host, vantage points "
             f"{', '.join(sc.attackers.vantage)}.", "",
             "## Attackers (means over trials)", "", interval_line(metrics), "",
             label_line(metrics), "",
             "| mode | attacker | " + " | ".join(h for _, h in SHOWN) + " |",
             "|" + "---|" * (len(SHOWN) + 2)]
    for mode, attacker, vals in comparison_rows(metrics):
        lines.append(f"| {mode} | {attacker} | " + " | ".join(vals) + " |")
    lines += ["", "## Costs (means over trials)", "",
              "| mode | " + " | ".join(COST_HEAD) + " |", "|" + "---|" * (len(COST_HEAD) + 1)]
    for mode, vals in cost_rows(metrics):
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    lines += ["", "The whole span runs from the controller's start to the VM running at the "
              "destination (set-up included); the transfer phase from the source's first to its "
              "last migration packet.",
              "", "## Trials", "", "| mode | trial | status | destination | relay | "
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
    lines += ["", "Definitions of every metric: `attacks/scoring.py`. Files: `ground_truth.json`, "
              "`pcaps/`, `logs/`, `metrics.json`, `metrics.csv`, `costs.csv`.", ""]
    return "\n".join(lines)


def write_sweep(out: Path, done: list[tuple[str, dict[str, Any]]]) -> None:
    """One table over a sweep's variants: each mode's global-attacker scores and costs."""
    head = ["variant", "mode", "attacker", "detection AUC", "dest top-1", "chance",
            "path recall", "migration time (s)", "bytes on wire (MB)"]
    rows = []
    for label, m in done:
        for mode, e in m["modes"].items():
            for att, a in sorted(e["attackers"].items()):
                rows.append([label, mode, att, _iv(a, "detection_auc"),
                             _iv(a, "destination_top1"), _fmt(a.get("destination_chance")),
                             _iv(a, "path_recall"), _iv(e, "migration_time_s"),
                             _iv(e, "bytes_on_wire", 1e6)])
    lines = ["# Sweep summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(json.dumps({label: m for label, m in done}, indent=1,
                                               default=float))
