"""The passive attacker: detection per window, ranked hosts and the relay graph.

For the views of one vantage point across the trials (``attacks.view``):

1. ``detect``: the change detector and the relay detector (windows in which the path tracer saw
   bytes being relayed) on every trial, and the classifier trained leave-one-seed-out on the
   window features plus the relayed bytes (labels of the trials of *other* workload seeds only,
   as an attacker who rehearsed on its own runs; a trial's twin of the other mode shares its
   seed and never trains it, ``AttackContext.groups``). The classifier is the primary detector
   when it can be trained, else the relay detector when the relay's signature is there, else the
   change detector (whose notes then say why the classifier was not trained); all three are
   scored (``detection_auc_<name>``).
2. ``analyze``: host rankings and the relay graph, from the packets and the detection only.

``attack(views, ctx)`` runs both; it is registered in ``attacks.pipeline.ATTACKERS`` as
``"passive"``. Callers: ``attacks.pipeline``, the tests.
"""

from __future__ import annotations

import numpy as np

from attacks.capture import int_to_ip, ip_to_int
from attacks.detection import (
    Detection,
    detect_change,
    detect_relay,
    label_windows,
    leave_one_seed_out,
    leave_one_seed_out_change,
)
from attacks.identify import HostRanking, rank_hosts, suspect_windows
from attacks.relaygraph import bfs_depth, extend_chain, relay_graph, relay_signature, relay_span
from attacks.view import AttackContext, AttackerView, AttackResult


def detect(
    views: list[AttackerView],
    labels: list[np.ndarray | None] | None = None,
    seed: int = 0,
    groups: list[str] | None = None,
) -> list[dict[str, Detection]]:
    """Change, relay and classifier detections for views of *one* attacker across trials.

    ``labels`` (per view, see ``AttackContext``) train the classifier and the CUSUM threshold;
    trial ``i`` is never scored by a model or threshold that saw the labels of a trial of its
    group (``groups[i]``, its workload seed; default: each trial its own).
    """
    feats = [v.features for v in views]
    rehearsed = labels is not None and any(y is not None for y in labels)
    y = [
        lab if lab is not None else np.zeros(len(f.window_starts), dtype=bool)
        for f, lab in zip(feats, labels or [None] * len(feats), strict=True)
    ]
    # without rehearsal data the CUSUM keeps its default threshold
    if rehearsed:
        change = leave_one_seed_out_change(feats, y, groups)
        cls = leave_one_seed_out(feats, y, groups, seed=seed)
    else:
        change = [detect_change(f) for f in feats]
        cls = ["classifier not trained: no rehearsal labels"] * len(feats)
    out = []
    for f, c, k in zip(feats, change, cls, strict=True):
        d = {"change": c, "relay": detect_relay(f)}
        if isinstance(k, Detection):
            d["classifier"] = k
        else:  # the stand-ins say why they stand in
            c.notes.append(k)
            d["relay"].notes.append(k)
        out.append(d)
    return out


def analyze(
    view: AttackerView,
    detections: dict[str, Detection],
    candidates: set[int] | None = None,
    name: str | None = None,
) -> AttackResult:
    """Rank hosts and trace the relay for one view, using only its packets and detections.

    Without the relay's signature (``relay_signature``) the detector's suspect windows decide:
    hosts ranked by excess net bytes there, and the path is the edge top source → top
    destination. With it, the fan's origin is the source, the relay graph is rooted there (and
    followed past a merging leader by byte conservation), its time span marks the windows in which
    bytes are counted, and its hosts lead the destination ranking, deepest first (the end of the
    chain), ties by bytes gained. ``name`` names the attacker in the result (default: the
    vantage point).
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
        attacker=name or str(view.vantage),
        trial=view.trial,
        detection=primary,
        detections=detections,
        ranking=ranking,
        graph=graph,
        aliases={int_to_ip(k): int_to_ip(v) for k, v in view.aliases.items()},
    )


def attack(views: list[AttackerView], ctx: AttackContext) -> list[AttackResult]:
    """The passive attacker on one vantage point's views of every trial."""
    dets = detect(views, ctx.labels, seed=ctx.seed, groups=ctx.groups)
    return [analyze(v, d, ctx.candidates, ctx.name) for v, d in zip(views, dets, strict=True)]
