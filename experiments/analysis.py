"""Analyse a run: the attackers on every trial's pcaps, and the defender's costs per mode.

``analyze`` reads the run's ``ground_truth.json`` (``attacks.truth.load_truth``), records what
its analysis uses in the run folder's ``analysis.json`` (``settings_for``: the scenario's window
and seed, the tenants' addresses as the candidates, the vantage points, the detection label's
span) and hands the folder to ``attacks.pipeline.analyze_folder``: the attackers see packets, the
ground truth only enters their scoring; the costs per mode come with them (migration time,
downtime, bytes on the wire, VM bytes, the migration's whole span and its transfer phase), every
mean with its interval. ``stealth-mtd attack analyze --run DIR`` reads ``analysis.json`` back
and writes the same metrics. Then each arm's costs measured from packets (``experiments.arms``:
bandwidth overhead, relay goodput against the cover rate, the floor, time and downtime over
direct's) with the run's arm and cover settings: ``Analysis.arms``, saved as ``arms.json`` (kept
out of metrics.json, which the attackers' package alone writes). The result, an ``Analysis``,
holds the metrics (saved as metrics.json), the arms and what the plots need.

Callers: the runner and the demo, then ``experiments.report.write``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks.capture import int_to_ip, ip_to_int
from attacks.pipeline import AnalysisSettings, analyze_folder, detection_labels, write_settings
from attacks.truth import RunTruth, load_truth
from experiments.arms import ARMS_SCHEMA, arm_costs
from experiments.scenario import Scenario, normal_bytes_per_s

SPAN = "migration"  # the detection label the runner's figures use (attacks.truth.SPANS)


def settings_for(sc: Scenario, run: RunTruth, span: str = SPAN) -> AnalysisSettings:
    """What the runner's analysis of ``run`` uses. The candidate hosts an attacker ranks: the
    tenants' addresses, which an ARP or ping sweep finds from the wire
    (tests/mininet/test_active_attacks.py); the attackers' own hosts are not among them."""
    tenants = sorted({ip_to_int(h.ip) for t in run.trials for h in t.hosts})
    return AnalysisSettings(window_s=sc.attackers.window_s, seed=sc.seed,
                            candidates=[int_to_ip(i) for i in tenants],
                            vantage=list(sc.attackers.vantage), span=span, scenario=sc.name,
                            modes=list(sc.modes))


@dataclass
class Analysis:
    """What ``analyze`` found: the metrics (saved as metrics.json), plus what the plots need."""

    metrics: dict[str, Any]
    truth: RunTruth = field(default_factory=RunTruth)
    roc: dict[str, dict[str, tuple[list[float], list[bool]]]] = field(default_factory=dict)
    global_packets: dict[int, np.ndarray] = field(default_factory=dict)  # trial → deduplicated
    bytes_on_wire: dict[int, int | None] = field(default_factory=dict)  # trial → bytes
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    arms: dict[str, Any] = field(default_factory=dict)  # arms.json: ``arms_of``


def analyze(out: Path, sc: Scenario, truth: RunTruth | None = None) -> Analysis:
    """Analyse the run folder ``out`` (its ground truth: ``truth``, else its ground_truth.json);
    writes ``out/analysis.json``."""
    run = truth if truth is not None else load_truth(out / "ground_truth.json")
    settings = settings_for(sc, run)
    write_settings(out, settings)
    ra = analyze_folder(out, run, settings)
    an = Analysis(ra.metrics, run, global_packets=ra.global_packets,
                  bytes_on_wire=ra.bytes_on_wire, settings=settings,
                  arms=arms_of(sc, run, ra.global_packets))
    by_id = run.by_trial()
    for r in ra.results:
        t = by_id[r.trial]
        y = detection_labels(r.detection, t, settings.span)
        s, yy = an.roc.setdefault(t.mode, {}).setdefault(r.attacker, ([], []))
        s += [float(x) for x in r.detection.scores]
        yy += [bool(x) for x in y]
    return an


def arms_of(sc: Scenario, run: RunTruth, packets: dict[int, np.ndarray]) -> dict[str, Any]:
    """``arms.json``: the scenario's cover settings and, per arm, its protocol mode, chunk
    policy, cover rate and costs from packets (``experiments.arms.arm_costs``)."""
    modes = list(dict.fromkeys([*sc.modes, *(t.mode for t in run.trials)]))
    rates = {m: sc.cover_rate_bytes_per_s() if sc.uses_cover(m) else None for m in modes}
    costs = arm_costs(run.trials, packets, rates, sc.seed)
    c = sc.cover
    return {
        "schema": ARMS_SCHEMA, "scenario": sc.name,
        "cover": {"rate_mbit": c.rate_mbit, "rate_x_normal": c.rate_x_normal,
                  "rate_bytes_per_s": sc.cover_rate_bytes_per_s(),
                  "normal_bytes_per_s_expected": normal_bytes_per_s(sc.background),
                  "record_min": c.record_min, "record_max": c.record_max,
                  "flow_cdf": c.flow_cdf, "flow_cap_bytes": c.flow_cap_bytes},
        "arms": {m: {"protocol_mode": sc.protocol_mode(m),
                     "chunk_policy": sc.chunk_policy(m)["kind"],
                     "n_trials": len([t for t in run.trials if t.mode == m
                                      and t.status == "done"]),
                     **costs.get(m, {})} for m in modes},
    }
