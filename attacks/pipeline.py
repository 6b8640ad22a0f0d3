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

Training never crosses a workload seed: trial t of every mode shares one seed (its background
traffic), so the views are grouped by the seed their ground truth records (``trial_groups``; the
attacker may know which trials are twins, the run folder says so) and a trial's classifier and
thresholds never rehearse on its twin (``AttackContext.groups``, ``attacks.detection.seed_folds``).
A window is a positive label when it overlaps the chosen span of the migration (``span``: the
whole migration or its transfer phase, ``attacks.truth.SPANS``); the metrics say which.

A run folder (``analyze_folder``): its ``ground_truth.json``, the pcaps each trial names, and
``analysis.json`` (``AnalysisSettings``: window, seed, candidate hosts, vantage points, span,
scenario, modes), which the runner's analysis writes and ``stealth-mtd attack analyze --run``
reads back, so that both write the same ``metrics.json``: every attacker's records and means, the
costs per mode, and every mean with its interval and trial count (``attacks.stats``, seeded with
the run's seed).

Callers: ``attacks.cli`` and the experiments' analysis (``analyze_folder``, ``analyze_run``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from attacks import coveraware, designaware, passive
from attacks.capture import Capture, dedupe_packets, ip_to_int, read_pcap
from attacks.detection import Detection, ks_tests, label_windows
from attacks.probing import analyze_probes
from attacks.scoring import (
    PROPORTION_FIELDS,
    aggregate,
    aggregate_costs,
    cost_record,
    detection_metrics,
    hop_bytes,
    identification_metrics,
    ks_metrics,
    path_metrics,
)
from attacks.stats import CONFIDENCE, N_RESAMPLES
from attacks.truth import GLOBAL, SPANS, RunTruth, TrialTruth, Vantage
from attacks.view import AttackContext, AttackerView, AttackResult, build_view

Attacker = Callable[[list[AttackerView], AttackContext], list[AttackResult]]

# the attackers every vantage point runs: name → attack(views, ctx)
ATTACKERS: dict[str, Attacker] = {
    "passive": passive.attack,
    "design-aware": designaware.attack,
    "cover-aware": coveraware.attack,
}
BUILT_IN = "passive"  # its results keep the vantage point's name


def attacker_name(vantage: Vantage, attacker: str) -> str:
    """``switch:e1`` for the built-in attacker, ``switch:e1/<attacker>`` for the others."""
    return str(vantage) if attacker == BUILT_IN else f"{vantage}/{attacker}"


def _order(v: Vantage) -> str:
    """Vantage points in the order of their switch names (the global one as "global")."""
    return "global" if v.switch is None else v.switch


def window_labels(
    view: AttackerView, truth: TrialTruth | None, span: str = "migration"
) -> np.ndarray:
    """The view's windows that overlap the trial's ``span`` (all False without a truth)."""
    f = view.features
    if truth is None:
        return np.zeros(len(f.window_starts), dtype=bool)
    return label_windows(f.window_starts, f.window_s, *truth.span(span))


def detection_labels(det: Detection, truth: TrialTruth, span: str = "migration") -> np.ndarray:
    """A detection's windows that overlap the trial's ``span``."""
    return label_windows(det.window_starts, det.window_s, *truth.span(span))


def trial_groups(trials: list[int], truths: Mapping[int, TrialTruth]) -> list[str]:
    """Each trial's workload group: ``seed:<seed>`` as its ground truth records it (twins of
    the modes share it), else ``trial:<n>`` (a group of its own)."""
    out = []
    for trial in trials:
        t = truths.get(trial)
        out.append(f"seed:{t.seed}" if t is not None and t.seed is not None else f"trial:{trial}")
    return out


def score(
    result: AttackResult, view: AttackerView, truth: TrialTruth, span: str = "migration"
) -> dict[str, Any]:
    """One metrics record (see ``attacks.scoring`` for the definitions); detections are scored
    against the windows of ``span``."""
    start, end = truth.span(span)
    rec: dict[str, Any] = {
        "trial": result.trial,
        "mode": truth.mode,
        "attacker": result.attacker,
        "detector": result.detection.detector,
        "detector_notes": list(result.detection.notes),
        "label_span": span,
    }
    rec.update(detection_metrics(result.detection, start, end))
    rec.update(
        identification_metrics(
            [h for h, _ in result.ranking.source], [h for h, _ in result.ranking.destination], truth
        )
    )
    rec.update(path_metrics(result.graph.edges, truth))
    y = window_labels(view, truth, span)
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
    span: str = "migration",
) -> tuple[list[AttackResult], list[dict[str, Any]], dict[str, Any]]:
    """Every attacker on every trial: ``captures[trial][vantage]`` → results, records, metrics.

    Each vantage point's capture is a view; when a trial has several vantage points (and none is
    already global) their union is the ``global`` view. ``attackers`` defaults to ``ATTACKERS``.
    Labels (rehearsal and scoring) are the windows of ``span``; ``seed`` seeds the attackers'
    models and the intervals of the means.
    """
    if span not in SPANS:
        raise ValueError(f"span {span!r}: use one of {', '.join(SPANS)}")
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
        labels = [window_labels(v, truths.get(v.trial), span) for v in views] if truths else None
        groups = trial_groups([v.trial for v in views], truths)
        for name, attack in (ATTACKERS if attackers is None else attackers).items():
            ctx = AttackContext(
                attacker_name(vantage, name), labels or [None] * len(views), seed, candidates,
                groups,
            )
            for view, res in zip(views, attack(views, ctx), strict=True):
                res = replace(res, attacker=ctx.name, trial=view.trial)
                results.append(res)
                if view.trial in truths:
                    records.append(score(res, view, truths[view.trial], span))
    metrics = {
        "schema": "stealth-mtd/attack-metrics/1",
        "window_s": window_s,
        "records": records,
        "modes": aggregate(records, seed),
    }
    return results, records, metrics


# ----------------------------------------------------------------------------- run folders
SETTINGS_FILE = "analysis.json"
SETTINGS_SCHEMA = "stealth-mtd/analysis/1"
RUN_METRICS_SCHEMA = "stealth-mtd/run-metrics/2"


@dataclass
class AnalysisSettings:
    """What a run's analysis used (its ``analysis.json``): re-analysis with the same settings
    writes the same ``metrics.json``.

    ``candidates``: the addresses the rankings are restricted to (the runner grants the tenants'
    list, which an ARP or ping sweep finds from the wire); None: every address seen.
    ``vantage``: the vantage points analysed (their pcaps as the ground truth names them); None:
    every pcap named. ``span``: the detection label (``attacks.truth.SPANS``). ``modes``: the
    modes reported, in order; None: as the ground truth first names them.
    """

    window_s: float = 1.0
    seed: int = 0
    candidates: list[str] | None = None
    vantage: list[str] | None = None
    span: str = "migration"
    scenario: str | None = None
    modes: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SETTINGS_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnalysisSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"schema"})
        if d.get("schema", SETTINGS_SCHEMA) != SETTINGS_SCHEMA or unknown:
            raise ValueError(f"analysis settings: schema {d.get('schema')!r}, unknown field(s) "
                             f"{unknown}; this code reads {SETTINGS_SCHEMA!r}")
        s = cls(**{k: v for k, v in d.items() if k in known})
        if s.span not in SPANS:
            raise ValueError(f"analysis settings: span {s.span!r}, use one of {', '.join(SPANS)}")
        return s

    def candidate_set(self) -> set[int] | None:
        return None if self.candidates is None else {ip_to_int(ip) for ip in self.candidates}


def write_settings(run_dir: Path, settings: AnalysisSettings) -> None:
    (Path(run_dir) / SETTINGS_FILE).write_text(json.dumps(settings.to_dict(), indent=1) + "\n")


def read_settings(run_dir: Path) -> AnalysisSettings | None:
    """The run folder's ``analysis.json``; None when it has none (``ValueError`` if malformed)."""
    path = Path(run_dir) / SETTINGS_FILE
    if not path.exists():
        return None
    return AnalysisSettings.from_dict(json.loads(path.read_text()))


def metrics_text(metrics: dict[str, Any]) -> str:
    """``metrics.json`` as written by the runner and by ``attack analyze`` alike."""
    return json.dumps(metrics, indent=1, default=float)


def load_run_captures(
    run_dir: Path, trials: list[TrialTruth], vantage: list[str] | None = None
) -> dict[int, dict[Vantage, Capture]]:
    """Every trial's pcaps (the ones its ground truth names; only ``vantage`` if given), keyed
    by vantage point."""
    keep = None if vantage is None else {Vantage.parse(v) for v in vantage}
    return {t.trial: {v: read_pcap(Path(run_dir) / rel, vantage=str(v))
                      for v, rel in t.vantage_pcaps().items() if keep is None or v in keep}
            for t in trials}


@dataclass
class RunAnalysis:
    """``analyze_folder``'s answer: the metrics (``metrics.json``), what each attacker concluded,
    and the global capture's packets and migration bytes per trial (for plots)."""

    metrics: dict[str, Any]
    results: list[AttackResult] = field(default_factory=list)
    global_packets: dict[int, np.ndarray] = field(default_factory=dict)  # trial → deduplicated
    bytes_on_wire: dict[int, int | None] = field(default_factory=dict)  # trial → bytes


def analyze_folder(
    run_dir: Path, truth: RunTruth, settings: AnalysisSettings,
    captures: Mapping[int, Mapping[Vantage, Capture]] | None = None,
) -> RunAnalysis:
    """The run folder's analysis: every attacker on every finished trial (``analyze_run`` with
    ``settings``), then the costs per mode. ``captures`` (default: read from the pcaps the ground
    truth names) are the finished trials' captures."""
    done = [t for t in truth.trials if t.status == "done"]
    by_id = {t.trial: t for t in done}
    caps = load_run_captures(run_dir, done, settings.vantage) if captures is None else captures
    ra = RunAnalysis({})
    cover_arms = {m for m, a in truth.meta.get("arms", {}).items() if a.get("cover")}
    for t in done:
        if GLOBAL in caps.get(t.trial, {}):
            pk = dedupe_packets(caps[t.trial][GLOBAL].packets)
            ra.global_packets[t.trial] = pk
            ra.bytes_on_wire[t.trial] = hop_bytes(pk, t, cover=t.mode in cover_arms)
    m: dict[str, Any] = {"modes": {}}
    records: list[dict[str, Any]] = []
    if done:
        # one analysis over every trial of every mode: the classifier of each trial is trained
        # on the trials of the other seeds (an attacker who rehearsed on both kinds of migration)
        ra.results, records, m = analyze_run(
            {t.trial: caps.get(t.trial, {}) for t in done}, by_id, settings.window_s,
            candidates=settings.candidate_set(), seed=settings.seed, span=settings.span)
    modes = settings.modes or list(dict.fromkeys(t.mode for t in truth.trials))
    metrics: dict[str, Any] = {
        "schema": RUN_METRICS_SCHEMA,
        "scenario": settings.scenario,
        "window_s": settings.window_s,
        "label_span": {"span": settings.span, "definition": SPANS[settings.span]},
        "intervals": {
            "confidence": CONFIDENCE,
            "means": f"percentile bootstrap over trials, {N_RESAMPLES} resamples, seed "
                     f"{settings.seed}",
            "proportions": "Wilson score interval: " + ", ".join(sorted(PROPORTION_FIELDS)),
        },
        "analysis": settings.to_dict(),
        "modes": {},
        "records": records,
    }
    for mode in modes:
        mine = [t for t in done if t.mode == mode]
        costs = aggregate_costs(
            [cost_record(t, ra.bytes_on_wire.get(t.trial)) for t in mine], settings.seed)
        metrics["modes"][mode] = {
            "n_trials": len(mine),
            "failed": len([t for t in truth.trials if t.mode == mode]) - len(mine),
            "attackers": m["modes"].get(mode, {}),
            **costs,
        }
    active = analyze_probes(run_dir, done, settings.window_s, settings.span, settings.seed)
    if active is not None:  # the active probers' and the curious intermediate's figures
        metrics["active"] = active
    ra.metrics = metrics
    return ra
