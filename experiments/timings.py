"""Where a run's time goes: each trial's phases, ``timings.csv`` in its run folder, the table
the runner prints at the end and the trials per hour.

A trial's phases, in seconds of ``time.monotonic``: ``bringup_s`` (testbed, agents, workload,
captures: ``experiments.trial.Trial``), ``settle_s`` (workload and cover running, not yet
captured: ``background.settle_s``), ``warmup_s`` (normal traffic only; monitors training),
``migration_s`` (the controller told, until the migration ended), ``cooldown_s``,
``teardown_s`` (captures and testbed stopped, VM images removed) and ``analysis_s``: the run's
analysis (attackers, plots, report) shared equally by its trials, so a row's ``total_s`` is the
trial's share of the run. ``lock_wait_s``, the wait for the machine's testbed lock while another
network ran, is kept apart: not the trial's own cost, not in ``total_s``. Callers:
``experiments.runner``, ``experiments.merge``. ``reused`` is 1 for a trial that ran on a testbed
kept from the last trial (``reuse_testbed``), 0 on a fresh one.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.table import Table

PHASES = ("bringup_s", "settle_s", "warmup_s", "migration_s", "cooldown_s", "teardown_s",
          "analysis_s")
COLUMNS = ("point", "trial", "mode", "trial_in_mode", *PHASES, "total_s", "lock_wait_s",
           "reused")
FILE = "timings.csv"


def row(point: str, trial: int, mode: str, trial_in_mode: int,
        phases: dict[str, float]) -> dict[str, Any]:
    """One trial's row (phases not measured count 0)."""
    r: dict[str, Any] = {"point": point, "trial": trial, "mode": mode,
                         "trial_in_mode": trial_in_mode}
    r.update({p: round(float(phases.get(p, 0.0)), 3) for p in PHASES})
    r["total_s"] = round(sum(r[p] for p in PHASES), 3)
    r["lock_wait_s"] = round(float(phases.get("lock_wait_s", 0.0)), 3)
    r["reused"] = int(phases.get("reused", 0))
    return r


def share_analysis(rows: list[dict[str, Any]], seconds: float) -> None:
    """Spread a point's analysis time over its trials' rows (in place)."""
    for r in rows:
        r["analysis_s"] = round(seconds / len(rows), 3)
        r["total_s"] = round(sum(r[p] for p in PHASES), 3)


def write_csv(folder: Path, rows: Iterable[dict[str, Any]]) -> None:
    """``folder/timings.csv``, one row per trial (rewritten whole)."""
    with (folder / FILE).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def read_csv(folder: Path) -> list[dict[str, Any]]:
    """The rows of ``folder/timings.csv`` (none if it has none)."""
    path = folder / FILE
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        numbers = (*PHASES, "total_s", "lock_wait_s")
        return [{**r, "trial": int(r["trial"]), "trial_in_mode": int(r["trial_in_mode"]),
                 "reused": int(r.get("reused") or 0),  # files from before the column: fresh
                 # a phase missing from an older file (settle_s) took 0 s
                 **{k: float(r.get(k) or 0.0) for k in numbers}} for r in csv.DictReader(f)]


def trials_per_hour(n: int, seconds: float) -> float:
    return 3600.0 * n / seconds if seconds > 0 else 0.0


def table(rows: list[dict[str, Any]], title: str = "where a trial's time went (s)") -> Table:
    """Each trial's phases, then their means and each phase's share of the total (the lock
    wait shown apart)."""
    t = Table(title=title)
    shown = (*PHASES, "total_s", "lock_wait_s")
    for c in ("point", "mode", "trial", *(p.removesuffix("_s").replace("_", " ") for p in shown)):
        t.add_column(c, justify="left" if c in ("point", "mode") else "right")
    for r in rows:
        t.add_row(r["point"] or "–", r["mode"], str(r["trial_in_mode"]),
                  *(f"{r[p]:.1f}" for p in shown))
    if rows:
        means = {p: statistics.fmean(r[p] for r in rows) for p in shown}
        t.add_row("mean", "", "", *(f"{means[p]:.1f}" for p in shown), style="bold")
        total = means["total_s"] or 1.0
        t.add_row("share", "", "", *(f"{100 * means[p] / total:.0f}%" for p in PHASES), "100%",
                  "")
    return t
