"""Two run folders side by side: ``stealth-mtd compare A B``.

Made for the question a reused testbed raises (``reuse_testbed``: does it change the results?),
and for any two runs of one scenario and seeds (two code versions, two machines): trials per
hour and the mean seconds of each phase, whether every trial got the same roles and status, and
every figure with an interval in both ``metrics.json`` — each arm's attackers, its costs and its
active probers — with the two intervals and whether they overlap. ``--check`` exits 1 when a pair
of intervals does not overlap or a trial's roles differ.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiments import timings

PHASES = (*timings.PHASES, "total_s")
RATES = ("trials", "wall_s", "lock_wait_s", "trials_per_hour", "trials_per_hour_without_lock_wait")

Key = tuple[str, str, str]  # (arm, attacker / "costs" / "active:<prober>", figure)


def _load(run: Path, name: str) -> Any:
    path = Path(run) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not there (is {run} a finished run folder?)")
    return json.loads(path.read_text())


def intervals(metrics: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    """Every figure of ``metrics.json`` that has an interval, by (arm, who, figure)."""
    out: dict[Key, dict[str, Any]] = {}
    for arm, d in metrics.get("modes", {}).items():
        for who, a in d.get("attackers", {}).items():
            for fig, i in a.get("intervals", {}).items():
                out[(arm, who, fig)] = i
        for fig, i in d.get("intervals", {}).items():
            out[(arm, "costs", fig)] = i
    for arm, probers in metrics.get("active", {}).get("modes", {}).items():
        for name, figs in probers.items():
            for fig, i in figs.items():
                if isinstance(i, dict) and "mean" in i and "lo" in i:
                    out[(arm, f"active:{name}", fig)] = i
    return out


def overlap(i: dict[str, Any] | None, j: dict[str, Any] | None) -> bool | None:
    """Whether two intervals overlap; None when either has none (no trial, or one trial)."""
    if not i or not j or None in (i.get("lo"), i.get("hi"), j.get("lo"), j.get("hi")):
        return None
    return i["lo"] <= j["hi"] and j["lo"] <= i["hi"]


def roles(ground_truth: dict[str, Any]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Per (arm, trial in arm): destination, intermediates, leader and status."""
    def host(w: dict[str, Any] | None) -> str | None:
        return w["host"] if w else None

    return {(t["mode"], t["trial_in_mode"]):
            (host(t["destination"]), tuple(host(i) for i in t["intermediates"]),
             host(t["leader"]), t["status"]) for t in ground_truth["trials"]}


def phase_means(run: Path) -> dict[str, float]:
    """Mean seconds per trial of each phase (``timings.csv``)."""
    with open(Path(run) / "timings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{run}/timings.csv has no trial")
    return {p: sum(float(r[p]) for r in rows) / len(rows) for p in PHASES if p in rows[0]}


def compare(a: Path, b: Path, figures: Iterable[str] | None = None) -> dict[str, Any]:
    """The comparison of run folders ``a`` and ``b`` (only ``figures``, if given)."""
    want = set(figures) if figures else None
    ia, ib = intervals(_load(a, "metrics.json")), intervals(_load(b, "metrics.json"))
    cells = [{"arm": k[0], "who": k[1], "figure": k[2], "a": ia[k], "b": ib[k],
              "agree": overlap(ia[k], ib[k])}
             for k in sorted(set(ia) & set(ib)) if want is None or k[2] in want]
    ra, rb = roles(_load(a, "ground_truth.json")), roles(_load(b, "ground_truth.json"))
    shared = sorted(set(ra) & set(rb))
    ta, tb = _load(a, "timings.json"), _load(b, "timings.json")
    return {
        "a": str(a), "b": str(b),
        "rates": {k: (ta.get(k), tb.get(k)) for k in RATES},
        "phases": {"a": phase_means(a), "b": phase_means(b)},
        "trials_compared": len(shared),
        "roles_differ": [list(k) for k in shared if ra[k] != rb[k]],
        "only_in_one": [list(k) for k in sorted(set(ra) ^ set(rb))],
        "cells": cells,
        "disagree": sum(c["agree"] is False for c in cells),
        "no_interval": sum(c["agree"] is None for c in cells),
    }


def _cell(i: dict[str, Any]) -> str:
    if i.get("mean") is None:
        return "–"
    if i.get("lo") is None or i.get("hi") is None:
        return f"{i['mean']:.3g} (n={i.get('n')})"
    return f"{i['mean']:.3g} [{i['lo']:.3g}, {i['hi']:.3g}]"


def markdown(c: dict[str, Any], labels: tuple[str, str] = ("A", "B")) -> str:
    """The comparison as Markdown tables."""
    la, lb = labels
    lines = [f"# {la} against {lb}", "", f"- {la}: `{c['a']}`", f"- {lb}: `{c['b']}`", "",
             f"| | {la} | {lb} |", "|---|---|---|"]
    lines += [f"| {k} | {x} | {y} |" for k, (x, y) in c["rates"].items()]
    pa, pb = c["phases"]["a"], c["phases"]["b"]
    lines += ["", "| mean s per trial | " + " | ".join(pa) + " |",
              "|---|" + "---|" * len(pa),
              f"| {la} | " + " | ".join(f"{v:.1f}" for v in pa.values()) + " |",
              f"| {lb} | " + " | ".join(f"{pb.get(k, float('nan')):.1f}" for k in pa) + " |"]
    lines += ["", f"Roles and status the same in {c['trials_compared'] - len(c['roles_differ'])}"
              f"/{c['trials_compared']} trials"
              + (f"; differ: {c['roles_differ']}" if c["roles_differ"] else "")
              + (f"; in one run only: {c['only_in_one']}" if c["only_in_one"] else "") + ".", ""]
    word = {True: "yes", False: "**no**", None: "–"}
    lines += [f"| arm | who | figure | {la} | {lb} | overlap |", "|---|---|---|---|---|---|"]
    lines += [f"| {x['arm']} | {x['who']} | {x['figure']} | {_cell(x['a'])} | {_cell(x['b'])} | "
              f"{word[x['agree']]} |" for x in c["cells"]]
    lines += ["", f"{len(c['cells'])} figures: intervals overlap in "
              f"{len(c['cells']) - c['disagree'] - c['no_interval']}, do not in {c['disagree']}, "
              f"{c['no_interval']} without an interval (fewer than two trials)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="a run folder")
    ap.add_argument("b", type=Path, help="another run folder of the same scenario")
    ap.add_argument("--labels", default="A,B", help="names of the two runs (default A,B)")
    ap.add_argument("--figures", default="",
                    help="comma-separated figures to compare (default: every one with an "
                         "interval), e.g. detection_auc,destination_top1")
    ap.add_argument("--out", type=Path, help="also write the comparison here (.md and .json)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a pair of intervals does not overlap or roles differ")
    args = ap.parse_args(argv)
    labels = tuple(args.labels.split(","))
    if len(labels) != 2:
        ap.error(f"--labels {args.labels!r}: give two names, e.g. fresh,reused")
    try:
        c = compare(args.a, args.b, [f for f in args.figures.split(",") if f])
    except (FileNotFoundError, ValueError, KeyError) as exc:
        ap.error(f"cannot compare: {exc}")
    md = markdown(c, labels)  # type: ignore[arg-type]
    print(md, end="")
    if args.out:
        args.out.with_suffix(".md").write_text(md)
        args.out.with_suffix(".json").write_text(json.dumps(c, indent=1))
    return 1 if args.check and (c["disagree"] or c["roles_differ"]) else 0
