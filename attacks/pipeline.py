"""Offline analysis of a run: every attacker, every trial, from captures to scored records.

The order matters for honesty:

1. ``build_view``: what one attacker holds for one trial, from its vantage point's capture(s):
   virtual addresses resolved where the vantage point allows it (``attacks.aliases``), copies of a
   packet seen at several switches counted once, features per window.
2. ``detect``: the change detector and the relay detector (windows in which the path tracer saw
   bytes being relayed) on every trial, and the classifier trained leave-one-trial-out on the
   window features plus the relayed bytes (ground-truth labels of the *other* trials only, as an
   attacker who rehearsed on its own runs). The classifier is the primary detector when it can be
   trained, else the relay detector when the relay's signature is there, else the change
   detector; all three are scored (``detection_auc_<name>``).
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
    bfs_depth,
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
    attacker: str,
    trial: int,
    captures: list[Capture],
    window_s: float = 1.0,
    drop_loopback: bool = True,
) -> AttackerView:
    """Merge, de-alias and de-duplicate an attacker's captures of one trial; cut into windows.

    With ``drop_loopback``, packets from or to 127.0.0.0/8 are dropped: they never cross a wire
    (a ``tcpdump -i any`` in the root namespace also records the machine's own ``lo``).
    """
    if len(captures) == 1:
        packets = captures[0].packets
        aliases = resolve_aliases(packets, distinct_vp=False)
    else:
        packets = merge_captures(captures, dedupe=False).packets
        aliases = resolve_aliases(packets)
    if aliases:
        packets = apply_aliases(packets, aliases)
    if drop_loopback and len(packets):
        lo_net = np.uint32(127 << 24)
        keep = ((packets["src"] & np.uint32(0xFF000000)) != lo_net) & (
            (packets["dst"] & np.uint32(0xFF000000)) != lo_net
        )
        packets = packets[keep]
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


def relay_signature(evidence: list[RelayEvidence]) -> tuple[str, str] | None:
    """The protocol's fingerprint in the evidence: one host fanning out through at least two
    relays that all forward to the same next host (n ≥ k ≥ 2 intermediates, one leader).

    Returns ``(source, leader)`` for the widest such fan (ties: most bytes), or None. Isolated
    relay-like coincidences in background traffic rarely form one; a direct migration never does.
    """
    fans: dict[tuple[str, str], set[str]] = {}
    volume: dict[tuple[str, str], float] = {}
    for e in evidence:
        fans.setdefault((e.a, e.b), set()).add(e.relay)
        volume[(e.a, e.b)] = volume.get((e.a, e.b), 0.0) + e.bytes
    wide = [k for k, relays in fans.items() if len(relays) >= 2]
    if not wide:
        return None
    return max(wide, key=lambda k: (len(fans[k]), volume[k]))


def analyze(
    view: AttackerView, detections: dict[str, Detection], candidates: set[int] | None = None
) -> AttackResult:
    """Rank hosts and trace the relay for one view, using only its packets and detections.

    Without the relay's signature (``relay_signature``) the detector's suspect windows decide:
    hosts ranked by excess net bytes there, and the path is the edge top source → top
    destination. With it, the fan's origin is the source, the relay graph is rooted there (and
    followed past a merging leader by byte conservation), its time span marks the windows in which
    bytes are counted, and its hosts lead the destination ranking, deepest first (the end of the
    chain), ties by bytes gained.
    """
    windows = view.features.windows
    sig = relay_signature(view.evidence)
    primary = detections.get("classifier")
    if primary is None:  # no rehearsal: the relay's own windows if it left its signature
        primary = detections["relay"] if sig is not None and "relay" in detections else None
    primary = primary or detections["change"]
    if sig is None:
        ranking = rank_hosts(view.packets, windows, suspect_windows(primary), candidates)
        src = ranking.source[0][0] if ranking.source else None
        dst = ranking.destination[0][0] if ranking.destination else None
        graph = relay_graph([], src, dst)
    else:
        src = sig[0]
        graph = relay_graph(view.evidence, src, None)
        used = [e for e in graph.evidence if (e.a, e.relay) in set(graph.edges)]
        span = relay_span(used) or relay_span(view.evidence)
        assert span is not None
        graph = extend_chain(graph, view.packets, src, span)
        suspect = label_windows(view.features.window_starts, view.features.window_s, *span)
        ranking = rank_hosts(view.packets, windows, suspect, candidates)
        depth = bfs_depth(graph.edges, src)
        gained = dict(ranking.destination)
        lost = dict(ranking.source)
        chain = sorted((n for n in depth if n != src), key=lambda n: (-depth[n], -gained.get(n, 0)))
        if candidates is not None:
            chain = [n for n in chain if ip_to_int(n) in candidates]
        ranking = HostRanking(
            [(src, lost.get(src, 0.0))] + [r for r in ranking.source if r[0] != src],
            [(n, gained.get(n, 0.0)) for n in chain]
            + [r for r in ranking.destination if r[0] not in depth or r[0] == src],
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
