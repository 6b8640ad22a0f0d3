"""A run's plots (matplotlib, written headless): traffic over time with normal and migration
traffic told apart, bytes sent per host during the migration, and the detectors' ROC curves.

Caller: ``experiments.report.write``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.capture import ip_to_int
from experiments.analysis import Analysis, migration_mask


def plot_all(plots: Path, an: Analysis) -> list[str]:
    """traffic.png and bytes_per_host.png (the first done trial of each mode, from the global
    capture) and roc.png; returns the files made, relative to the run folder."""
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
                       label="migration (ground truth)")
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
