"""Offline analysis of a run: every attacker, every vantage point, every trial, scored.

The order matters for honesty:

1. ``build_view`` (``attacks.view``): what one vantage point holds for one trial.
2. each attacker of ``ATTACKERS`` on the views of one vantage point across the trials, with the
   window labels of the trials whose ground truth is known (to rehearse on the *other* trials,
   see ``AttackContext``): one ``AttackResult`` per view, from the packets only.
3. ``score``: only now the ground truth of the trial itself (``attacks.scoring``).

Vantage points are ``switch:<name>`` (one mirror port's capture) and ``global`` (all of a trial's
vantage points together, or a capture already named ``global``). An attacker's results and
records are named by its vantage point (the built-in ``"passive"`` attacker: ``switch:e1``,
``global``) or ``<vantage>/<attacker>`` for the others (``global/tiny``).

Adding an attacker: write a module with a function ``attack(views, ctx) -> list[AttackResult]``
(``attacks.passive`` is the example) and add one line to ``ATTACKERS``
(tests/unit/test_extension_attacker.py does it with an attacker defined in the test).

Callers: ``attacks.cli`` and the experiments' analysis (``analyze_run``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from attacks import designaware, passive
from attacks.capture import Capture
from attacks.detection import ks_tests, label_windows
from attacks.scoring import (
    aggregate,
    detection_metrics,
    identification_metrics,
    ks_metrics,
    path_metrics,
)
from attacks.truth import GLOBAL, TrialTruth, Vantage
from attacks.view import AttackContext, AttackerView, AttackResult, build_view

Attacker = Callable[[list[AttackerView], AttackContext], list[AttackResult]]

# the attackers every vantage point runs: name → attack(views, ctx)
ATTACKERS: dict[str, Attacker] = {
    "passive": passive.attack,
    "design-aware": designaware.attack,
}
BUILT_IN = "passive"  # its results keep the vantage point's name


def attacker_name(vantage: Vantage, attacker: str) -> str:
    """``switch:e1`` for the built-in attacker, ``switch:e1/<attacker>`` for the others."""
    return str(vantage) if attacker == BUILT_IN else f"{vantage}/{attacker}"


def _order(v: Vantage) -> str:
    """Vantage points in the order of their switch names (the global one as "global")."""
    return "global" if v.switch is None else v.switch


def window_labels(view: AttackerView, truth: TrialTruth | None) -> np.ndarray:
    """The view's windows that overlap the trial's migration (all False without a truth)."""
    f = view.features
    if truth is None:
        return np.zeros(len(f.window_starts), dtype=bool)
    return label_windows(f.window_starts, f.window_s, truth.migration_start, truth.migration_end)


def score(result: AttackResult, view: AttackerView, truth: TrialTruth) -> dict[str, Any]:
    """One metrics record (see ``attacks.scoring`` for the definitions)."""
    start, end = truth.migration_start, truth.migration_end
    rec: dict[str, Any] = {
        "trial": result.trial,
        "mode": truth.mode,
        "attacker": result.attacker,
        "detector": result.detection.detector,
    }
    rec.update(detection_metrics(result.detection, start, end))
    rec.update(
        identification_metrics(
            [h for h, _ in result.ranking.source], [h for h, _ in result.ranking.destination], truth
        )
    )
    rec.update(path_metrics(result.graph.edges, truth))
    y = window_labels(view, truth)
    ks = ks_tests(view.packets, view.features.windows, y) if y.any() else None
    rec.update(ks_metrics(ks))
    for name, det in result.detections.items():
        rec[f"detection_auc_{name}"] = detection_metrics(det, start, end)["detection_auc"]
    return rec


def analyze_run(
    captures: Mapping[int, Mapping[Vantage, Capture]],
    truths: Mapping[int, TrialTruth],
    window_s: float = 1.0,
    candidates: set[int] | None = None,
    seed: int = 0,
    attackers: Mapping[str, Attacker] | None = None,
) -> tuple[list[AttackResult], list[dict[str, Any]], dict[str, Any]]:
    """Every attacker on every trial: ``captures[trial][vantage]`` → results, records, metrics.

    Each vantage point's capture is a view; when a trial has several vantage points (and none is
    already global) their union is the ``global`` view. ``attackers`` defaults to ``ATTACKERS``.
    """
    by_vantage: dict[Vantage, list[AttackerView]] = {}
    for trial in sorted(captures):
        vps = captures[trial]
        for vantage in sorted(vps, key=_order):
            by_vantage.setdefault(vantage, []).append(
                build_view(vantage, trial, [vps[vantage]], window_s)
            )
        if len(vps) > 1 and GLOBAL not in vps:
            by_vantage.setdefault(GLOBAL, []).append(
                build_view(GLOBAL, trial, [vps[v] for v in sorted(vps, key=_order)], window_s)
            )
    results, records = [], []
    for vantage, views in by_vantage.items():
        # rehearsal labels: from the trials whose ground truth is known (none: no rehearsal)
        labels = [window_labels(v, truths.get(v.trial)) for v in views] if truths else None
        for name, attack in (ATTACKERS if attackers is None else attackers).items():
            ctx = AttackContext(
                attacker_name(vantage, name), labels or [None] * len(views), seed, candidates
            )
            for view, res in zip(views, attack(views, ctx), strict=True):
                res = replace(res, attacker=ctx.name, trial=view.trial)
                results.append(res)
                if view.trial in truths:
                    records.append(score(res, view, truths[view.trial]))
    metrics = {
        "schema": "stealth-mtd/attack-metrics/1",
        "window_s": window_s,
        "records": records,
        "modes": aggregate(records),
    }
    return results, records, metrics
