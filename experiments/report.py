"""Results of a run: attack analysis per mode, metrics.json/CSV, plots and report.md.

``analyze`` hands each mode's pcaps to the attackers (``attacks.pipeline.analyze_run``: they
see packets; the ground truth only enters their scoring) and adds the defender's costs per
mode: migration time, downtime, bytes on the wire (migration packets in the global capture,
each counted once) and VM bytes. ``write`` saves ``metrics.json``, ``metrics.csv``, three plots
(traffic over time with normal and migration traffic told apart, ROC curves, bytes per host) and
``report.md`` with the direct-vs-stealth table. Called by the runner.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from attacks.capture import Capture, dedupe_packets, ip_to_int
from attacks.detection import label_windows
from attacks.pcapfast import read_pcap_fast as read_pcap
from experiments.scenario import Scenario

COST_FIELDS = ["migration_time_s", "downtime_s", "bytes_on_wire", "vm_bytes"]
SHOWN = [("detection_auc", "detection AUC"), ("tpr_at_1pct_fpr", "TPR@1%FPR"),
         ("time_to_detect_s", "time to detect (s)"), ("destination_top1", "dest top-1"),
         ("destination_top3", "dest top-3"), ("destination_chance", "chance"),
         ("source_top1", "source top-1"), ("path_precision", "path precision"),
         ("path_recall", "path recall")]


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


def vantage_key(name: str) -> str:
    """'switch-e1' → 'e1' (the attacker 'switch:e1'); 'global' stays."""
    return name[len("switch-"):] if name.startswith("switch-") else name


def migration_mask(packets: np.ndarray, truth: dict[str, Any]) -> np.ndarray:
    """Packets of the migration's TCP hops (both directions), by addresses and port."""
    ip = {h["host"]: ip_to_int(h["ip"]) for h in truth["hosts"]}
    mask = np.zeros(len(packets), dtype=bool)
    for p in truth["paths"]:
        a = np.array([ip[p["from"]]], dtype="u4")
        b = [ip[p["to"]]] + ([ip_to_int(p["virtual_ip"])] if p.get("virtual_ip") else [])
        b = np.array(b, dtype="u4")
        fwd = np.isin(packets["src"], a) & np.isin(packets["dst"], b) & \
            (packets["dport"] == p["port"])
        rev = np.isin(packets["src"], b) & np.isin(packets["dst"], a) & \
            (packets["sport"] == p["port"])
        mask |= fwd | rev
    return mask


def load_captures(out: Path, trials: list[dict[str, Any]]) -> dict[int, dict[str, Capture]]:
    caps: dict[int, dict[str, Capture]] = {}
    for t in trials:
        caps[t["trial"]] = {vantage_key(name): read_pcap(out / rel, vantage=vantage_key(name))
                            for name, rel in t["pcaps"].items()}
    return caps


@dataclass
class Analysis:
    """What ``analyze`` found: the metrics (saved as metrics.json), plus what the plots need."""

    metrics: dict[str, Any]
    roc: dict[str, dict[str, tuple[list[float], list[bool]]]] = field(default_factory=dict)
    global_packets: dict[int, np.ndarray] = field(default_factory=dict)  # trial → deduplicated
    bytes_on_wire: dict[int, int | None] = field(default_factory=dict)  # trial → bytes


def analyze(out: Path, sc: Scenario, truths: list[dict[str, Any]]) -> Analysis:
    from attacks.pipeline import analyze_run

    metrics: dict[str, Any] = {"schema": "stealth-mtd/run-metrics/1", "scenario": sc.name,
                               "window_s": sc.attackers.window_s, "modes": {}, "records": []}
    # the candidate hosts an attacker ranks: the tenants' addresses, which an ARP or ping sweep
    # finds from the wire (tests/mininet/test_active_attacks.py); attackers' own hosts excluded
    tenant_ips = {ip_to_int(h["ip"]) for t in truths for h in t["hosts"]}
    done = [t for t in truths if t["status"] == "done"]
    by_id = {t["trial"]: t for t in done}
    caps = load_captures(out, done)
    an = Analysis(metrics)
    for t in done:
        if "global" in caps[t["trial"]]:
            pk = dedupe_packets(caps[t["trial"]]["global"].packets)
            an.global_packets[t["trial"]] = pk
            an.bytes_on_wire[t["trial"]] = int(pk["length"][migration_mask(pk, t)].sum())
    results, records, m = [], [], {"modes": {}}
    if done:
        # one analysis over every trial of every mode: the classifier of each trial is trained
        # on all the other trials (an attacker who rehearsed on both kinds of migration)
        results, records, m = analyze_run(caps, by_id, sc.attackers.window_s,
                                          candidates=tenant_ips, seed=sc.seed)
    metrics["records"] = records
    for r in results:
        t = by_id[r.trial]
        y = label_windows(r.detection.window_starts, r.detection.window_s,
                          t["migration_start"], t["migration_end"])
        s, yy = an.roc.setdefault(t["mode"], {}).setdefault(r.attacker, ([], []))
        s += [float(x) for x in r.detection.scores]
        yy += [bool(x) for x in y]
    for mode in sc.modes:
        mine = [t for t in done if t["mode"] == mode]
        entry: dict[str, Any] = {
            "n_trials": len(mine),
            "failed": len([t for t in truths if t["mode"] == mode]) - len(mine),
            "attackers": m["modes"].get(mode, {}),
            "per_trial": {f: [] for f in COST_FIELDS}}
        for t in mine:
            res = t["result"]
            entry["per_trial"]["migration_time_s"].append(res.get("migration_time_s"))
            entry["per_trial"]["downtime_s"].append(res.get("downtime_s"))
            entry["per_trial"]["vm_bytes"].append(res.get("vm_bytes"))
            entry["per_trial"]["bytes_on_wire"].append(an.bytes_on_wire.get(t["trial"]))
        for f in COST_FIELDS:
            entry[f] = _mean(entry["per_trial"][f])
        metrics["modes"][mode] = entry
    return an


# -- output -------------------------------------------------------------------------------
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


def write(out: Path, sc: Scenario, truths: list[dict[str, Any]], an: Analysis) -> None:
    metrics = an.metrics
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "attacker", "trial"] + [k for k, _ in SHOWN])
        for r in metrics["records"]:
            w.writerow([r["mode"], r["attacker"], r["trial"]] + [r.get(k) for k, _ in SHOWN])
    with open(out / "costs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "trial", "status"] + COST_FIELDS)
        for t in truths:
            res = t["result"]
            w.writerow([t["mode"], t["trial_in_mode"], t["status"],
                        res.get("migration_time_s"), res.get("downtime_s"),
                        an.bytes_on_wire.get(t["trial"]), res.get("vm_bytes")])
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    made = plot_all(plots, truths, an)
    (out / "report.md").write_text(report_md(sc, truths, metrics, made))


def plot_all(plots: Path, truths: list[dict[str, Any]], an: Analysis) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    made = []
    firsts = [next((t for t in truths if t["mode"] == m and t["status"] == "done"), None)
              for m in dict.fromkeys(t["mode"] for t in truths)]
    firsts = [t for t in firsts if t and t["trial"] in an.global_packets]
    if firsts:
        fig, axes = plt.subplots(len(firsts), 1, figsize=(10, 3.2 * len(firsts)), squeeze=False)
        fig2, axes2 = plt.subplots(len(firsts), 1, figsize=(10, 3.2 * len(firsts)),
                                   squeeze=False)
        for ax, ax2, t in zip(axes[:, 0], axes2[:, 0], firsts, strict=True):
            pk = an.global_packets[t["trial"]]
            mig = migration_mask(pk, t)
            t0 = float(pk["ts"].min())
            bins = np.arange(0, float(pk["ts"].max()) - t0 + 0.5, 0.5)
            ts = pk["ts"] - t0
            normal, _ = np.histogram(ts[~mig], bins, weights=pk["length"][~mig])
            migr, _ = np.histogram(ts[mig], bins, weights=pk["length"][mig])
            x = bins[:-1]
            ax.stackplot(x, normal * 8 / 0.5 / 1e6, migr * 8 / 0.5 / 1e6,
                         labels=["normal traffic", "migration traffic"],
                         colors=["#7f9fbf", "#d62728"])
            ax.axvspan(t["migration_start"] - t0, t["migration_end"] - t0, color="k", alpha=0.08,
                       label="migration (ground truth)")
            ax.set_title(f"{t['mode']} migration, trial {t['trial_in_mode'] + 1}: "
                         "all switch ports (global capture)")
            ax.set_ylabel("Mbit/s")
            ax.legend(loc="upper right", fontsize=8)
            # bytes per host during the migration
            span = (pk["ts"] >= t["migration_start"]) & (pk["ts"] <= t["migration_end"])
            hosts = [h["host"] for h in t["hosts"]]
            tx = {h["host"]: int(pk["length"][span & (pk["src"] == ip_to_int(h["ip"]))].sum())
                  for h in t["hosts"]}
            role = {t["source"]["host"]: "source", t["destination"]["host"]: "destination"}
            if t.get("leader"):
                role[t["leader"]["host"]] = "leader"
            for e in t["intermediates"]:
                role[e["host"]] = "intermediate"
            colors = {"source": "#d62728", "destination": "#2ca02c", "leader": "#9467bd",
                      "intermediate": "#ff7f0e"}
            ax2.bar(hosts, [tx[h] / 1e6 for h in hosts],
                    color=[colors.get(role.get(h, ""), "#7f9fbf") for h in hosts])
            ax2.set_title(f"{t['mode']}: bytes sent per host during the migration "
                          "(red source, green destination, purple leader, orange intermediates)",
                          fontsize=9)
            ax2.set_ylabel("MB")
        axes[-1, 0].set_xlabel("seconds")
        fig.tight_layout()
        fig.savefig(plots / "traffic.png", dpi=110)
        fig2.tight_layout()
        fig2.savefig(plots / "bytes_per_host.png", dpi=110)
        plt.close(fig)
        plt.close(fig2)
        made += ["plots/traffic.png", "plots/bytes_per_host.png"]
    roc = an.roc
    if roc:
        fig, axes = plt.subplots(1, len(roc), figsize=(5 * len(roc), 4.5), squeeze=False)
        for ax, (mode, by_att) in zip(axes[0], roc.items(), strict=True):
            for att, (scores, labels) in sorted(by_att.items()):
                if len(set(labels)) < 2:
                    continue
                fpr, tpr, _ = roc_curve(labels, scores)
                ax.plot(fpr, tpr, label=att)
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set_title(f"{mode}: detection ROC (windows pooled over trials)")
            ax.set_xlabel("false-positive rate")
            ax.set_ylabel("true-positive rate")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / "roc.png", dpi=110)
        plt.close(fig)
        made.append("plots/roc.png")
    return made


def report_md(sc: Scenario, truths: list[dict[str, Any]], metrics: dict[str, Any],
              plots: list[str]) -> str:
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
        res = t["result"]
        relay = " → ".join([t["source"]["host"]] + (
            ["{" + ",".join(e["host"] for e in t["intermediates"]) + "}", t["leader"]["host"]]
            if t.get("leader") else []) + [t["destination"]["host"]])
        lines.append(f"| {t['mode']} | {t['trial_in_mode'] + 1} | {t['status']} "
                     f"{t['reason'] if t['status'] != 'done' else ''} | "
                     f"{t['destination']['host']} | {relay} | "
                     f"{_fmt(res.get('migration_time_s'))} | {_fmt(res.get('downtime_s'))} |")
    drops = {f"{t['mode']}-{t['trial_in_mode']}/{v}": s.get("dropped_by_kernel", 0)
             for t in truths for v, s in t["capture_stats"].items()}
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
