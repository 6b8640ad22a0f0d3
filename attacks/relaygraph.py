"""The relay graph: relay evidence chained into the path the attacker believes the VM took.

``relay_graph`` keeps the triples reachable from the attacker's top-ranked source that lead away
from it; when no relay is found (a direct migration) the graph is the single edge top source →
top destination. ``extend_chain`` follows the bytes past a merging leader by byte conservation,
``relay_signature`` finds the protocol's fan-out (one source, k ≥ 2 relays, one next host) in the
evidence. ``RelayGraph.edges`` are host-level directed edges (IPs).

Callers: ``attacks.pipeline``, the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.capture import int_to_ip
from attacks.evidence import RelayEvidence
from attacks.features import host_pairs


@dataclass
class RelayGraph:
    """The reconstructed relay graph: directed host-level edges plus the evidence for them."""

    edges: list[tuple[str, str]]
    evidence: list[RelayEvidence] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "edges": [list(e) for e in self.edges],
            "evidence": [e.to_json() for e in self.evidence],
        }


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


def _pair_bytes(data: np.ndarray) -> dict[tuple[str, str], float]:
    """Payload bytes per (source IP, destination IP), pairs in the order they first appear."""
    if not len(data):
        return {}
    uniq, inv = host_pairs(data)
    first = np.full(len(uniq), len(data))
    np.minimum.at(first, inv, np.arange(len(data)))
    # whole numbers below 2**53: the float sums are exact, as the integer sums were
    sums = np.bincount(inv, weights=data["plen"].astype(float), minlength=len(uniq))
    pair: dict[tuple[str, str], float] = {}
    for k in np.argsort(first, kind="stable").tolist():
        u = int(uniq[k])
        pair[(int_to_ip(u >> 32), int_to_ip(u & 0xFFFFFFFF))] = int(sums[k])
    return pair


def extend_chain(
    graph: RelayGraph,
    packets: np.ndarray,
    source: str,
    span: tuple[float, float],
    min_share: float = 0.5,
) -> RelayGraph:
    """Follow the bytes past the deepest hosts of the chain by volume alone.

    A leader that merges several inputs into one fast stream defeats per-transfer matching and,
    when the whole transfer fits in a few bins, correlation too. Bytes are still conserved: if a
    deepest host sent, during the relay's span, at least ``min_share`` of what it received over
    the chain's edges to one host outside the chain, that host is the next hop.
    """
    if not graph.edges:
        return graph
    edges = set(graph.edges)
    lo, hi = span
    data = packets[(packets["plen"] > 0) & (packets["ts"] >= lo) & (packets["ts"] <= hi + 1.0)]
    pair = _pair_bytes(data)
    for _ in range(4):  # a few hops at most
        depth = bfs_depth(sorted(edges), source)
        deepest = max(depth.values())
        added = False
        for n in [n for n, d in depth.items() if d == deepest and d > 0]:
            received = sum(pair.get((a, n), 0.0) for a, b in edges if b == n)
            outs = [(b, v) for (a, b), v in pair.items() if a == n and b not in depth]
            if not outs or received <= 0:
                continue
            b, v = max(outs, key=lambda o: o[1])
            if v >= min_share * received:
                edges.add((n, b))
                added = True
        if not added:
            break
    return RelayGraph(edges=sorted(edges), evidence=graph.evidence)


def bfs_depth(edges: list[tuple[str, str]], root: str) -> dict[str, int]:
    """Breadth-first depth of every node reachable from ``root`` along directed edges."""
    import networkx as nx

    g = nx.DiGraph(edges)
    g.add_node(root)
    return dict(nx.single_source_shortest_path_length(g, root))


def relay_span(evidence: list[RelayEvidence]) -> tuple[float, float] | None:
    """When relaying was seen: ``(first, last)`` over all evidence, or None without any."""
    if not evidence:
        return None
    return min(e.t_first for e in evidence), max(e.t_last for e in evidence)


def relay_graph(
    evidence: list[RelayEvidence], source: str | None, destination: str | None
) -> RelayGraph:
    """Chain relay triples into a graph rooted at the attacker's source guess.

    Only edges reachable from the source that lead *away* from it (to a node first reached at a
    deeper breadth-first level) are kept: acks relayed back towards the source are relaying too,
    but not the migration's path. With no triple touching the source, the graph is the direct
    edge source → destination.
    """
    edges: set[tuple[str, str]] = set()
    for ev in evidence:
        edges |= {(ev.a, ev.relay), (ev.relay, ev.b)}
    if source is not None and edges:
        level = {source: 0}
        frontier = [source]
        while frontier:
            nxt = []
            for n in frontier:
                for a, b in sorted(edges):
                    if a == n and b not in level:
                        level[b] = level[n] + 1
                        nxt.append(b)
            frontier = nxt
        edges = {(a, b) for a, b in edges if a in level and b in level and level[b] > level[a]}
        evidence = [ev for ev in evidence if (ev.a, ev.relay) in edges or (ev.relay, ev.b) in edges]
    if not edges and source is not None and destination is not None and source != destination:
        edges = {(source, destination)}
    return RelayGraph(edges=sorted(edges), evidence=evidence)
