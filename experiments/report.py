"""Write a run's results: metrics.json, arms.json, metrics.csv, costs.csv, arms.csv, plots/ and
report.md.

The pieces: ``experiments.analysis`` (what the attackers achieved, what the migration cost),
``experiments.tables`` (CSVs, tables, report.md), ``experiments.plots`` (matplotlib). Called by
the runner and the demo after ``experiments.analysis.analyze``.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import plots, tables
from experiments.analysis import Analysis
from experiments.scenario import Scenario


def write(out: Path, sc: Scenario, an: Analysis) -> None:
    """Everything of ``an`` into the run folder ``out``."""
    (out / "metrics.json").write_text(json.dumps(an.metrics, indent=1, default=float))
    (out / "arms.json").write_text(json.dumps(an.arms, indent=1, default=float))
    tables.write_csvs(out, an)
    (out / "plots").mkdir(exist_ok=True)
    made = plots.plot_all(out / "plots", an)
    (out / "report.md").write_text(tables.report_md(sc, an.truth, an.metrics, made, an.arms))
