"""Offline analysis of a run: every attacker, every trial, from captures to scored records.

The order matters for honesty:

1. ``build_view``: what one attacker holds for one trial, from its vantage point's capture(s):
   virtual addresses resolved where the vantage point allows it (``attacks.aliases``), copies of a
   packet seen at several switches counted once, features per window.
2. ``detect``: the change detector and the relay detector (windows in which the path tracer saw
   bytes being relayed) on every trial, and the classifier trained leave-one-trial-out on the
   window features plus the relayed bytes (ground-truth labels of the *other* trials only, as an
   attacker who rehearsed on its own runs). The classifier is the primary detector when it can be
   trained, else the change detector; all three are scored (``detection_auc_<name>``).
3. ``analyze``: host rankings and the relay graph, from the packets and the detection only.
4. ``score``: only now the ground truth of the trial itself (``attacks.scoring``).

Attackers are named ``switch:<vantage>`` (one mirror port's capture) and ``global`` (all of a
trial's vantage points together, or a capture already named ``global``/``all``).

Callers: ``attacks.cli`` and the experiments runner (``analyze_run``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.aliases import apply_aliases, resolve_aliases
from attacks.capture import Capture, dedupe_packets, int_to_ip, ip_to_int, merge_captures
from attacks.detection import (
    Detection,
    WindowFeatures,
    detect_change,
    detect_relay,
    ks_tests,
    label_windows,
    leave_one_trial_out,
    loto_change,
    trial_features,
)
from attacks.identify import HostRanking, rank_hosts, suspect_windows
from attacks.pathtrace import (
    RelayEvidence,
    RelayGraph,
    extend_chain,
    relay_activity,
    relay_graph,
    relay_span,
    trace_relays,
)
from attacks.scoring import (
    aggregate,
    detection_metrics,
    identification_metrics,
    ks_metrics,
    path_metrics,
)

GLOBAL_NAMES = {"global", "all", "any"}


@dataclass
class AttackerView:
    """One attacker's holdings for one trial."""

    attacker: str
    trial: int
    packets: np.ndarray
    aliases: dict[int, int]
    features: WindowFeatures
    evidence: list[RelayEvidence] = field(default_factory=list)


@dataclass
class AttackResult:
    """What one attacker concluded about one trial (no ground truth inside)."""

    attacker: str
    trial: int
    detection: Detection
    detections: dict[str, Detection]
    ranking: HostRanking
    graph: RelayGraph
    aliases: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "attacker": self.attacker,
            "trial": self.trial,
            "detector": self.detection.detector,
            "detections": {k: d.to_json() for k, d in self.detections.items()},
            "ranking": self.ranking.to_json(),
            "relay_graph": self.graph.to_json(),
            "aliases": self.aliases,
        }


def build_view(
    attacker: str, trial: int, captures: list[Capture], window_s: float = 1.0
) -> AttackerView:
    """Merge, de-alias and de-duplicate an attacker's captures of one trial; cut into windows."""
    if len(captures) == 1:
        packets = captures[0].packets
        aliases = resolve_aliases(packets, distinct_vp=False)
    else:
        packets = merge_captures(captures, dedupe=False).packets
        aliases = resolve_aliases(packets)
    if aliases:
        packets = apply_aliases(packets, aliases)
    packets = dedupe_packets(packets)
    features = trial_features(packets, window_s)
    evidence = trace_relays(packets)
    features.extra = relay_activity(evidence, features.window_starts, window_s)[:, None]
    return AttackerView(attacker, trial, packets, aliases, features, evidence)


def _labels(view: AttackerView, truth: dict | None) -> np.ndarray:
    f = view.features
    if not truth:
        return np.zeros(len(f.window_starts), dtype=bool)
    return label_windows(
        f.window_starts, f.window_s, truth.get("migration_start"), truth.get("migration_end")
    )


def detect(
    views: list[AttackerView], truths: dict[int, dict] | None = None, seed: int = 0
) -> list[dict[str, Detection]]:
    """Change and classifier detections for views of *one* attacker across trials.

    ``truths`` (trial → ground truth) provides training labels; trial ``i`` is never scored by a
    model or threshold that saw trial ``i``'s labels.
    """
    feats = [v.features for v in views]
    labels = [_labels(v, (truths or {}).get(v.trial)) for v in views]
    # without rehearsal data the CUSUM keeps its default threshold
    change = loto_change(feats, labels) if truths else [detect_change(f) for f in feats]
    cls = leave_one_trial_out(feats, labels, seed=seed) if truths else [None] * len(feats)
    out = []
    for f, c, k in zip(feats, change, cls, strict=True):
        d = {"change": c, "relay": detect_relay(f)}
        if k is not None:
            d["classifier"] = k
        out.append(d)
    return out


def _promote(ranked: list[tuple[str, float]], first: set[str]) -> list[tuple[str, float]]:
    """The hosts in ``first`` ahead of the others, each group keeping its order."""
    return [r for r in ranked if r[0] in first] + [r for r in ranked if r[0] not in first]


def _depths(edges: list[tuple[str, str]], root: str) -> dict[str, int]:
    """Breadth-first depth of every node reachable from ``root``."""
    depth, frontier = {root: 0}, [root]
    while frontier:
        nxt = []
        for n in frontier:
            for a, b in edges:
                if a == n and b not in depth:
                    depth[b] = depth[n] + 1
                    nxt.append(b)
        frontier = nxt
    return depth


def analyze(
    view: AttackerView, detections: dict[str, Detection], candidates: set[int] | None = None
) -> AttackResult:
    """Rank hosts and trace the relay for one view, using only its packets and detections.

    When relaying is seen, its time span (not only the detector's alarms) marks the windows in
    which bytes are counted and the hosts of the relay come first in the source ranking (the one
    that lost the most bytes first). The relay graph is rooted there; its hosts lead the
    destination ranking, deepest first (the end of the chain), ties by bytes gained.
    """
    primary = detections.get("classifier") or detections["change"]
    windows = view.features.windows
    evidence = view.evidence
    span = relay_span(evidence)
    if span is not None:
        suspect = label_windows(view.features.window_starts, view.features.window_s, *span)
    else:
        suspect = suspect_windows(primary)
    ranking = rank_hosts(view.packets, windows, suspect, candidates)
    if evidence:
        nodes = {n for e in evidence for n in (e.a, e.relay, e.b)}
        ranking = HostRanking(_promote(ranking.source, nodes), _promote(ranking.destination, nodes))
    src = ranking.source[0][0] if ranking.source else None
    dst = ranking.destination[0][0] if ranking.destination else None
    graph = relay_graph(evidence, src, dst)
    if evidence and graph.edges and src is not None and span is not None:
        graph = extend_chain(graph, view.packets, src, span)
    if evidence and graph.edges and src is not None:
        depth = _depths(graph.edges, src)
        gained = dict(ranking.destination)
        chain = sorted((n for n in depth if n != src), key=lambda n: (-depth[n], -gained.get(n, 0)))
        if candidates is not None:
            chain = [n for n in chain if ip_to_int(n) in candidates]
        first = [(n, gained.get(n, 0.0)) for n in chain]
        ranking = HostRanking(
            ranking.source,
            first + [r for r in ranking.destination if r[0] not in depth or r[0] == src],
        )
    return AttackResult(
        attacker=view.attacker,
        trial=view.trial,
        detection=primary,
        detections=detections,
        ranking=ranking,
        graph=graph,
        aliases={int_to_ip(k): int_to_ip(v) for k, v in view.aliases.items()},
    )


def score(result: AttackResult, view: AttackerView, truth: dict) -> dict[str, Any]:
    """One metrics record (see ``attacks.scoring`` for the definitions)."""
    start, end = truth.get("migration_start"), truth.get("migration_end")
    rec: dict[str, Any] = {
        "trial": result.trial,
        "mode": truth.get("mode"),
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
    y = _labels(view, truth)
    ks = ks_tests(view.packets, view.features.windows, y) if y.any() else None
    rec.update(ks_metrics(ks))
    for name, det in result.detections.items():
        rec[f"detection_auc_{name}"] = detection_metrics(det, start, end)["detection_auc"]
    return rec


def analyze_run(
    captures: dict[int, dict[str, Capture]],
    truths: dict[int, dict],
    window_s: float = 1.0,
    candidates: set[int] | None = None,
    seed: int = 0,
) -> tuple[list[AttackResult], list[dict[str, Any]], dict[str, Any]]:
    """Every attacker on every trial: ``captures[trial][vantage]`` → results, records, metrics.

    Each vantage point is a ``switch:<vantage>`` attacker; when a trial has several vantage points
    (and none is already global) their union is the ``global`` attacker.
    """
    by_attacker: dict[str, list[AttackerView]] = {}
    for trial in sorted(captures):
        vps = captures[trial]
        for vantage, cap in sorted(vps.items()):
            name = "global" if vantage in GLOBAL_NAMES else f"switch:{vantage}"
            by_attacker.setdefault(name, []).append(build_view(name, trial, [cap], window_s))
        if len(vps) > 1 and not (set(vps) & GLOBAL_NAMES):
            by_attacker.setdefault("global", []).append(
                build_view("global", trial, [vps[v] for v in sorted(vps)], window_s)
            )
    results, records = [], []
    for views in by_attacker.values():
        dets = detect(views, truths, seed=seed)
        for view, d in zip(views, dets, strict=True):
            res = analyze(view, d, candidates)
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
