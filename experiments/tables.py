"""A run's numbers as tables: metrics.csv, costs.csv, the rich tables the console prints,
report.md, and a sweep's summary.

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

from attacks.truth import RunTruth
from experiments.analysis import COST_FIELDS, Analysis
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


def comparison_rows(metrics: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(mode, attacker, values) rows of the direct-vs-stealth table."""
    rows = []
    for mode, entry in metrics["modes"].items():
        for attacker, a in sorted(entry["attackers"].items()):
            rows.append((mode, attacker, [_fmt(a.get(k)) for k, _ in SHOWN]))
    return rows


def _mb(v: float | None) -> float | None:
    return None if v is None else v / 1e6


def cost_rows(metrics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for mode, e in metrics["modes"].items():
        out.append((mode, [str(e["n_trials"]), str(e["failed"]), _fmt(e["migration_time_s"]),
                           _fmt(e["downtime_s"]), _fmt(_mb(e["bytes_on_wire"])),
                           _fmt(_mb(e["vm_bytes"]))]))
    return out


COST_HEAD = ["trials", "failed", "migration time (s)", "downtime (s)", "bytes on wire (MB)",
             "VM (MB)"]


def comparison_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="direct vs stealth: what the attackers achieved (means over trials)")
    for c in ["mode", "attacker"] + [h for _, h in SHOWN]:
        t.add_column(c, justify="right")
    for mode, attacker, vals in comparison_rows(metrics):
        t.add_row(mode, attacker, *vals)
    return t


def cost_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="what the migration cost (means over trials)")
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
            res = t.result
            w.writerow([t.mode, t.trial_in_mode, t.status,
                        res.get("migration_time_s"), res.get("downtime_s"),
                        an.bytes_on_wire.get(t.trial), res.get("vm_bytes")])


def report_md(sc: Scenario, truth: RunTruth, metrics: dict[str, Any], plots: list[str]) -> str:
    """report.md: the scenario, the attackers' and the costs' tables, the trials, the plots."""
    truths = truth.trials
    lines = [f"# Run report: {sc.name}", "",
             f"Scenario `{sc.source_file}`, seed {sc.seed}, {sc.trials} trial(s) per mode, "
             f"topology {sc.topology.kind} {sc.topology.args}, VM {sc.vm.mib} MiB, stealth "
             f"n={sc.stealth.n} k={sc.stealth.k} policy={sc.stealth.policy}, background "
             f"{sc.background.cdf} {sc.background.flows_per_s} flows/s/host, vantage points "
             f"{', '.join(sc.attackers.vantage)}.", "",
             "## Attackers (means over trials)", "",
             "| mode | attacker | " + " | ".join(h for _, h in SHOWN) + " |",
             "|" + "---|" * (len(SHOWN) + 2)]
    for mode, attacker, vals in comparison_rows(metrics):
        lines.append(f"| {mode} | {attacker} | " + " | ".join(vals) + " |")
    lines += ["", "## Costs (means over trials)", "",
              "| mode | " + " | ".join(COST_HEAD) + " |", "|" + "---|" * (len(COST_HEAD) + 1)]
    for mode, vals in cost_rows(metrics):
        lines.append(f"| {mode} | " + " | ".join(vals) + " |")
    lines += ["", "## Trials", "", "| mode | trial | status | destination | relay | "
              "time (s) | downtime (s) |", "|---|---|---|---|---|---|---|"]
    for t in truths:
        res = t.result
        relay = " → ".join([t.source.host] + (
            ["{" + ",".join(e.host for e in t.intermediates) + "}", t.leader.host]
            if t.leader else []) + [t.destination.host])
        lines.append(f"| {t.mode} | {t.trial_in_mode + 1} | {t.status} "
                     f"{t.reason if t.status != 'done' else ''} | "
                     f"{t.destination.host} | {relay} | "
                     f"{_fmt(res.get('migration_time_s'))} | {_fmt(res.get('downtime_s'))} |")
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
                rows.append([label, mode, att, _fmt(a.get("detection_auc")),
                             _fmt(a.get("destination_top1")), _fmt(a.get("destination_chance")),
                             _fmt(a.get("path_recall")), _fmt(e["migration_time_s"]),
                             _fmt(_mb(e["bytes_on_wire"]))])
    lines = ["# Sweep summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(json.dumps({label: m for label, m in done}, indent=1,
                                               default=float))
