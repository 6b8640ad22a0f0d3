"""The trade-off frontier of a sweep: what hiding buys (detection AUC, destination top-1) against
what it costs (migration time over direct's, bandwidth overhead), one point per arm per sweep
point, with the published references beside it.

    stealth-mtd frontier RUN... [--out DIR]

Each RUN is a run folder of a sweep (``sweep.json`` and one folder per point) or of a single
run; every point folder's ``metrics.json`` (the attackers) and ``arms.json`` (the arms' costs from
packets, ``experiments.arms``) are read. Written to ``--out`` (default: the first RUN):
``frontier.png`` (two panels: the best attacker's detection AUC and destination top-1 against the
migration time over direct's, log scale, each point labelled with its bandwidth overhead; the
direct arm at 1; the issue's targets dashed), ``frontier.md`` (one table, every attacker's AUC,
the targets each point misses, the references) and ``frontier.json``. A sweep run writes them
itself (``experiments.tables.write_sweep``: the runner and ``stealth-mtd merge``).

The best attacker of a point is the one with the highest mean (an adversary picks its best);
the references are website-fingerprinting defences, accuracy against bandwidth overhead:
WTF-PAD (Juarez et al., ESORICS 2016) and FRONT (Gong and Wang, USENIX Security 2020).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REFERENCES = [
    "WTF-PAD (Juarez et al., ESORICS 2016): website-fingerprinting accuracy 91% → 20% at "
    "< 60% bandwidth overhead, no added latency.",
    "FRONT (Gong and Wang, USENIX Security 2020): similar protection at 33% bandwidth overhead.",
]
# the targets at some operating point, for every attacker
TARGET_AUC, TARGET_TOP1_OVER_CHANCE, TARGET_RECALL = 0.6, 0.1, 0.3
TARGET_FLOOR_RATIO, TARGET_DOWNTIME_S = 1.25, 1.0
FILES = ("frontier.png", "frontier.md", "frontier.json")


class FrontierError(ValueError):
    """A folder that holds no analysed run (the message says which)."""


@dataclass
class Point:
    """One arm at one sweep point."""

    series: str  # the scenario (a sweep's name)
    label: str  # the sweep point ('' for a single run)
    arm: str
    cover_rate_bytes_per_s: float | None = None
    bandwidth_overhead: float | None = None
    time_vs_direct: float | None = None
    downtime_vs_direct: float | None = None
    floor_ratio: float | None = None
    goodput_over_cover: float | None = None
    migration_time_s: float | None = None
    downtime_s: float | None = None
    n_trials: int = 0
    auc: dict[str, float | None] = field(default_factory=dict)  # attacker → mean AUC
    top1: dict[str, float | None] = field(default_factory=dict)
    recall: dict[str, float | None] = field(default_factory=dict)
    chance: float | None = None
    best_auc: tuple[str, float, float | None, float | None] | None = None  # who, mean, lo, hi
    best_top1: tuple[str, float, float | None, float | None] | None = None
    best_recall: tuple[str, float] | None = None

    def misses(self) -> list[str]:
        """The issue's targets this point does not meet (unknown values count as missed)."""
        out = []
        if self.best_auc is None or self.best_auc[1] > TARGET_AUC:
            out.append(f"AUC <= {TARGET_AUC}")
        if self.best_top1 is None or self.chance is None or \
                self.best_top1[1] > self.chance + TARGET_TOP1_OVER_CHANCE:
            out.append(f"top-1 <= chance + {TARGET_TOP1_OVER_CHANCE}")
        if self.best_recall is None or self.best_recall[1] > TARGET_RECALL:
            out.append(f"path recall <= {TARGET_RECALL}")
        if self.arm != "direct" and self.cover_rate_bytes_per_s:
            if self.floor_ratio is None or self.floor_ratio > TARGET_FLOOR_RATIO:
                out.append(f"time <= {TARGET_FLOOR_RATIO}x floor")
        if self.downtime_s is None or self.downtime_s >= TARGET_DOWNTIME_S:
            out.append(f"downtime < {TARGET_DOWNTIME_S:g} s")
        return out


def _best(per: dict[str, dict[str, Any]], key: str) -> tuple[str, float, Any, Any] | None:
    vals = [(a, e.get(key), (e.get("intervals") or {}).get(key) or {}) for a, e in per.items()]
    vals = [(a, float(v), iv.get("lo"), iv.get("hi")) for a, v, iv in vals if v is not None]
    return max(vals, key=lambda x: x[1]) if vals else None


def point_of(series: str, label: str, mode: str, metrics: dict[str, Any],
             arms: dict[str, Any]) -> Point:
    """The frontier point of arm ``mode`` from a point folder's metrics and arms."""
    m = metrics["modes"][mode]
    a = (arms.get("arms") or {}).get(mode, {})
    att = m.get("attackers", {})
    p = Point(series, label, mode, a.get("cover_rate_bytes_per_s"),
              a.get("bandwidth_overhead"), a.get("time_vs_direct"), a.get("downtime_vs_direct"),
              a.get("floor_ratio"), a.get("goodput_over_cover"), m.get("migration_time_s"),
              m.get("downtime_s"), int(m.get("n_trials", 0)))
    p.auc = {k: e.get("detection_auc") for k, e in sorted(att.items())}
    p.top1 = {k: e.get("destination_top1") for k, e in sorted(att.items())}
    p.recall = {k: e.get("path_recall") for k, e in sorted(att.items())}
    chances = [e.get("destination_chance") for e in att.values()
               if e.get("destination_chance") is not None]
    p.chance = max(chances) if chances else None
    p.best_auc = _best(att, "detection_auc")
    p.best_top1 = _best(att, "destination_top1")
    r = _best(att, "path_recall")
    p.best_recall = (r[0], r[1]) if r else None
    return p


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise FrontierError(f"{path}: cannot read it ({exc})") from None


def points_of(run: Path) -> list[Point]:
    """Every arm of every point of the run folder ``run`` (a sweep's or a single run's)."""
    run = Path(run)
    sweep = _read(run / "sweep.json")
    labels = list(sweep) if sweep else [""]
    out: list[Point] = []
    for label in labels:
        folder = run / label if label else run
        metrics = _read(folder / "metrics.json")
        if not metrics.get("modes"):
            if sweep:
                continue  # a point that ran no trial (an empty shard's)
            raise FrontierError(f"{run} holds no analysed run (no metrics.json with modes, and "
                                "no sweep.json): give a run folder of `stealth-mtd run`")
        arms = _read(folder / "arms.json")
        name = str(metrics.get("scenario") or run.name)
        series = name[: -len(label) - 1] if label and name.endswith(f"-{label}") else name
        out += [point_of(series, label, mode, metrics, arms) for mode in metrics["modes"]]
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _best_text(b: tuple[str, float, Any, Any] | None) -> str:
    if b is None:
        return "–"
    iv = f" [{b[2]:.2f}, {b[3]:.2f}]" if b[2] is not None and b[3] is not None else ""
    return f"{b[1]:.2f}{iv} ({b[0]})"


HEAD = ["scenario", "point", "arm", "trials", "cover (Mbit/s per VM)", "bandwidth overhead",
        "time / direct's", "downtime / direct's", "time / floor", "goodput / cover",
        "best detection AUC", "best dest top-1", "chance", "best path recall", "downtime (s)",
        "targets missed"]


def table_md(points: list[Point]) -> str:
    """frontier.md: the one table, every attacker's AUC, the references."""
    lines = ["# The trade-off frontier", "",
             "One row per arm per sweep point, means over trials (95 % intervals for the best "
             "attacker, the one with the highest mean). Bandwidth overhead: cover bytes over "
             "normal bytes on the wire; time and downtime: over the direct trial of the same "
             "seed; floor: (VM bytes + dirty pages re-sent) / cover rate (`experiments/arms.py`)."
             f" Targets (issue 14): AUC <= {TARGET_AUC} and top-1 <= chance + "
             f"{TARGET_TOP1_OVER_CHANCE} and path recall <= {TARGET_RECALL} for every attacker, "
             f"time <= {TARGET_FLOOR_RATIO}x floor, downtime < {TARGET_DOWNTIME_S:g} s.", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for p in points:
        rate = p.cover_rate_bytes_per_s
        lines.append("| " + " | ".join([
            p.series, p.label or "–", p.arm, str(p.n_trials),
            "–" if not rate else f"{rate * 8 / 1e6:.2f}", _pct(p.bandwidth_overhead),
            _num(p.time_vs_direct), _num(p.downtime_vs_direct), _num(p.floor_ratio),
            _num(p.goodput_over_cover), _best_text(p.best_auc), _best_text(p.best_top1),
            _num(p.chance, 3), _num(p.best_recall[1]) if p.best_recall else "–",
            _num(p.downtime_s), ", ".join(p.misses()) or "none"]) + " |")
    attackers = sorted({a for p in points for a in p.auc})
    lines += ["", "## Detection AUC of every attacker", "",
              "| scenario | point | arm | " + " | ".join(attackers) + " |",
              "|" + "---|" * (len(attackers) + 3)]
    for p in points:
        lines.append(f"| {p.series} | {p.label or '–'} | {p.arm} | "
                     + " | ".join(_num(p.auc.get(a)) for a in attackers) + " |")
    lines += ["", "## References (website fingerprinting, accuracy against bandwidth overhead)",
              ""] + [f"- {r}" for r in REFERENCES] + [""]
    return "\n".join(lines)


def plot(points: list[Point], path: Path) -> bool:
    """frontier.png; False when no point has a time over direct's to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [p for p in points if p.arm == "direct" or p.time_vs_direct is not None]
    if not any(p.arm != "direct" for p in shown):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    panels = [("best_auc", "detection AUC, best attacker", TARGET_AUC),
              ("best_top1", "destination top-1, best attacker", None)]
    series = list(dict.fromkeys(p.series for p in shown))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title, target) in zip(axes, panels, strict=True):
        for si, s in enumerate(series):
            mine = [p for p in shown if p.series == s]
            direct = [p for p in mine if p.arm == "direct" and getattr(p, key)]
            others = sorted((p for p in mine if p.arm != "direct" and getattr(p, key)),
                            key=lambda p: p.time_vs_direct or 0)
            c = colors[si % len(colors)]
            if direct:
                ys = [getattr(p, key)[1] for p in direct]
                ax.scatter([1.0] * len(ys), ys, marker="s", color=c, alpha=0.5,
                           label=f"{s}: direct")
            for arm in dict.fromkeys(p.arm for p in others):
                pts = [p for p in others if p.arm == arm]
                xs = [p.time_vs_direct for p in pts]
                ys = [getattr(p, key)[1] for p in pts]
                lo = [y - (getattr(p, key)[2] if getattr(p, key)[2] is not None else y)
                      for p, y in zip(pts, ys, strict=True)]
                hi = [(getattr(p, key)[3] if getattr(p, key)[3] is not None else y) - y
                      for p, y in zip(pts, ys, strict=True)]
                marker = "o" if arm == "cover" else "^"
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=marker + "-", color=c, capsize=3,
                            alpha=0.9, label=f"{s}: {arm}")
                for p, x, y in zip(pts, xs, ys, strict=True):
                    bw = p.bandwidth_overhead
                    ax.annotate("bw " + ("?" if bw is None else f"+{bw:.0%}"), (x, y),
                                textcoords="offset points", xytext=(4, 6), fontsize=7)
            chance = [p.chance for p in mine if p.chance is not None]
            if key == "best_top1" and chance:
                ax.axhline(max(chance), color=c, ls=":", lw=1, label=f"{s}: chance")
                ax.axhline(max(chance) + TARGET_TOP1_OVER_CHANCE, color=c, ls="--", lw=0.8,
                           label=f"{s}: target (chance + {TARGET_TOP1_OVER_CHANCE})")
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target ({target})")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("migration time / direct's (log)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.text(0.5, 0.01, "References (website fingerprinting): " + " ".join(REFERENCES),
             ha="center", fontsize=7, wrap=True)
    fig.suptitle("the trade-off frontier: what hiding buys against what it costs (means over "
                 "trials, 95 % intervals; labels: bandwidth overhead, cover / normal bytes)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, runs: list[Path]) -> list[str]:
    """The frontier of ``runs`` into ``out``; returns the files written (names)."""
    points = [p for r in runs for p in points_of(r)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.md").write_text(table_md(points))
    (out / "frontier.json").write_text(json.dumps(
        {"schema": "stealth-mtd/frontier/1", "references": REFERENCES,
         "points": [{**asdict(p), "misses": p.misses()} for p in points]}, indent=1))
    made = ["frontier.md", "frontier.json"]
    if plot(points, out / "frontier.png"):
        made.insert(0, "frontier.png")
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd frontier", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                    help="run folders of sweeps (or single runs); one series each")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: first RUN)")
    args = ap.parse_args(argv)
    out = args.out or args.runs[0]
    try:
        made = write(out, args.runs)
    except FrontierError as exc:
        print(f"frontier: {exc}", file=sys.stderr)
        return 2
    print((out / "frontier.md").read_text())
    print("written: " + ", ".join(str(out / f) for f in made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
