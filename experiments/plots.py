"""A run's plots (matplotlib, written headless): traffic over time with normal and migration
traffic told apart, bytes sent per host during the migration, the detectors' ROC curves, and the
means over trials with their 95 % intervals as error bars (``summary.png``: detection AUC and
destination top-1/top-3 per attacker, with the chance rate; migration time, whole span and
transfer phase per mode). Every detection figure's title names the span that labels it.

Caller: ``experiments.report.write``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.capture import ip_to_int
from attacks.scoring import migration_mask
from experiments.analysis import Analysis


def plot_all(plots: Path, an: Analysis) -> list[str]:
    """traffic.png and bytes_per_host.png (the first done trial of each mode, from the global
    capture), roc.png and summary.png; returns the files made, relative to the run folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    truths = an.truth.trials
    made = []
    firsts = [next((t for t in truths if t.mode == m and t.status == "done"), None)
              for m in dict.fromkeys(t.mode for t in truths)]
    firsts = [t for t in firsts if t and t.trial in an.global_packets]
    if firsts:
        fig, axes = plt.subplots(len(firsts), 1, figsize=(10, 3.2 * len(firsts)), squeeze=False)
        fig2, axes2 = plt.subplots(len(firsts), 1, figsize=(10, 3.2 * len(firsts)),
                                   squeeze=False)
        for ax, ax2, t in zip(axes[:, 0], axes2[:, 0], firsts, strict=True):
            pk = an.global_packets[t.trial]
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
            ax.axvspan(t.migration_start - t0, t.migration_end - t0, color="k", alpha=0.08,
                       label="whole migration span (ground truth)")
            if t.transfer_start is not None and t.transfer_end is not None:
                ax.axvspan(t.transfer_start - t0, t.transfer_end - t0, color="k", alpha=0.12,
                           label="transfer phase (source's timestamps)")
            ax.set_title(f"{t.mode} migration, trial {t.trial_in_mode + 1}: "
                         "all switch ports (global capture)")
            ax.set_ylabel("Mbit/s")
            ax.legend(loc="upper right", fontsize=8)
            # bytes per host during the migration
            span = (pk["ts"] >= t.migration_start) & (pk["ts"] <= t.migration_end)
            hosts = [h.host for h in t.hosts]
            tx = {h.host: int(pk["length"][span & (pk["src"] == ip_to_int(h.ip))].sum())
                  for h in t.hosts}
            role = {t.source.host: "source", t.destination.host: "destination"}
            if t.leader:
                role[t.leader.host] = "leader"
            for e in t.intermediates:
                role[e.host] = "intermediate"
            colors = {"source": "#d62728", "destination": "#2ca02c", "leader": "#9467bd",
                      "intermediate": "#ff7f0e"}
            ax2.bar(hosts, [tx[h] / 1e6 for h in hosts],
                    color=[colors.get(role.get(h, ""), "#7f9fbf") for h in hosts])
            ax2.set_title(f"{t.mode}: bytes sent per host during the migration "
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
    span = an.settings.span
    if roc:
        fig, axes = plt.subplots(1, len(roc), figsize=(5 * len(roc), 4.5), squeeze=False)
        for ax, (mode, by_att) in zip(axes[0], roc.items(), strict=True):
            for att, (scores, labels) in sorted(by_att.items()):
                if len(set(labels)) < 2:
                    continue
                fpr, tpr, _ = roc_curve(labels, scores)
                ax.plot(fpr, tpr, label=att)
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set_title(f"{mode}: detection ROC (windows pooled over trials)\n"
                         f"labels: windows overlapping the {span} span", fontsize=9)
            ax.set_xlabel("false-positive rate")
            ax.set_ylabel("true-positive rate")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            else:  # every window of this mode had one label: no curve to draw
                ax.text(0.5, 0.5, "no ROC: one label class only", ha="center", fontsize=8)
        fig.tight_layout()
        fig.savefig(plots / "roc.png", dpi=110)
        plt.close(fig)
        made.append("plots/roc.png")
    if summary_plot(plots / "summary.png", an.metrics):
        made.append("plots/summary.png")
    return made


def _err(ivs: list[dict | None]) -> tuple[list[float], np.ndarray]:
    """Bar heights and matplotlib's (2, n) error-bar lengths from intervals (0 where none)."""
    means = [float(iv["mean"]) if iv and iv.get("mean") is not None else np.nan for iv in ivs]
    lo = [m - iv["lo"] if iv and iv.get("lo") is not None else 0.0 for m, iv in zip(means, ivs,
                                                                                   strict=True)]
    hi = [iv["hi"] - m if iv and iv.get("hi") is not None else 0.0 for m, iv in zip(means, ivs,
                                                                                   strict=True)]
    return means, np.array([lo, hi])


def summary_plot(path: Path, metrics: dict) -> bool:
    """Means with their 95 % intervals as error bars: per attacker and mode the detection AUC and
    destination top-1/top-3 (the chance rate dotted), and per mode the migration's costs in time.
    False when there is nothing to plot."""
    import matplotlib.pyplot as plt

    modes = list(metrics.get("modes", {}))
    attackers = sorted({a for e in metrics["modes"].values() for a in e["attackers"]})
    if not modes or not attackers:
        return False
    span = (metrics.get("label_span") or {}).get("span", "migration")
    panels = [("detection_auc", f"detection AUC (labels: {span} span)"),
              ("destination_top1", "destination top-1 (Wilson)"),
              ("destination_top3", "destination top-3 (Wilson)")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5 * (len(panels) + 1), 4.5),
                             squeeze=False)
    width = 0.8 / len(modes)
    x = np.arange(len(attackers))
    for ax, (key, title) in zip(axes[0], panels, strict=False):
        for i, mode in enumerate(modes):
            att = metrics["modes"][mode]["attackers"]
            ivs = [(att.get(a) or {}).get("intervals", {}).get(key) for a in attackers]
            h, err = _err(ivs)
            ax.bar(x + i * width, h, width, yerr=err, capsize=3, label=mode)
            if key != "detection_auc":
                chance = [(att.get(a) or {}).get(
                    "destination_chance" if key == "destination_top1" else
                    "destination_top3_chance") for a in attackers]
                ax.plot(x + i * width, [np.nan if c is None else c for c in chance], "k_",
                        markersize=12)
        ax.set_xticks(x + width * (len(modes) - 1) / 2, attackers, rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    costs = [("migration_time_s", "migration time"), ("migration_span_s", "whole span"),
             ("transfer_span_s", "transfer phase")]
    xc = np.arange(len(costs))
    for i, mode in enumerate(modes):
        ivs = [metrics["modes"][mode].get("intervals", {}).get(k) for k, _ in costs]
        h, err = _err(ivs)
        ax.bar(xc + i * width, h, width, yerr=err, capsize=3, label=mode)
    ax.set_xticks(xc + width * (len(modes) - 1) / 2, [c for _, c in costs], fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title("what the migration took", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle("means over trials, 95 % intervals (bootstrap over trials; Wilson for top-k; "
                 "chance: black marks)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
