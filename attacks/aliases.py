"""Virtual addresses: find which real host hides behind an address rewritten at its edge switch.

A stealth destination may be reached through a virtual IP that only the destination's edge switch
rewrites to the real one. An attacker who sees one packet at two switches (the global passive
adversary) sees the same IP id, ports, TCP sequence number and payload length once with the virtual
destination (upstream, earlier) and once with the real one (at the edge, later); replies carry the
real source first and the virtual one after the rewrite. ``resolve_aliases`` votes over such pairs;
``apply_aliases`` rewrites the table so that every later analysis ranks real hosts.

A single-switch eavesdropper upstream of the rewrite never sees the pair, so the virtual address
stays unresolved (and scores as a wrong guess): that is the protection the virtual IP buys.

Callers: ``attacks.pipeline``, the tests.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

_KEY = ["sport", "dport", "proto", "ipid", "seq", "plen"]


def _pairs(
    packets: np.ndarray, fixed: str, varying: str, tolerance_s: float, distinct_vp: bool
) -> Counter:
    """Count (earlier value, later value) of ``varying`` for copies of one packet."""
    votes: Counter = Counter()
    if len(packets) < 2:
        return votes
    fields = [fixed, *_KEY]
    order = np.lexsort([packets["ts"]] + [packets[f] for f in reversed(fields)])
    p = packets[order]
    same = np.ones(len(p) - 1, dtype=bool)
    for f in fields:
        same &= p[f][1:] == p[f][:-1]
    same &= (p["ts"][1:] - p["ts"][:-1]) < tolerance_s
    same &= p[varying][1:] != p[varying][:-1]
    if distinct_vp:
        same &= p["vp"][1:] != p["vp"][:-1]
    idx = np.nonzero(same)[0]
    for a, b in zip(p[varying][idx].tolist(), p[varying][idx + 1].tolist(), strict=True):
        votes[(a, b)] += 1
    return votes


def resolve_aliases(
    packets: np.ndarray, tolerance_s: float = 0.05, min_votes: int = 3, distinct_vp: bool = True
) -> dict[int, int]:
    """``{virtual: real}`` from packets seen at several vantage points.

    Needs the merged table *before* de-duplication. Destination rewrites vote (earlier dst →
    later dst), source rewrites of replies vote (later src → earlier src). With ``distinct_vp``
    the two copies must come from different vantage points (``vp``); turn it off for one pcap
    that was captured on several ports at once.
    """
    votes: Counter = Counter()
    for (early, late), n in _pairs(packets, "src", "dst", tolerance_s, distinct_vp).items():
        votes[(early, late)] += n
    for (early, late), n in _pairs(packets, "dst", "src", tolerance_s, distinct_vp).items():
        votes[(late, early)] += n
    best: dict[int, tuple[int, int]] = {}
    for (virtual, real), n in votes.items():
        if n >= min_votes and n > best.get(virtual, (0, -1))[1]:
            best[virtual] = (real, n)
    # an address that is itself the target of an alias is real; drop cycles
    return {v: r for v, (r, _) in best.items() if v not in {r2 for r2, _ in best.values()}}


def apply_aliases(packets: np.ndarray, aliases: dict[int, int]) -> np.ndarray:
    """A copy of the table with every virtual address replaced by its real host."""
    out = packets.copy()
    for virtual, real in aliases.items():
        out["src"][out["src"] == virtual] = real
        out["dst"][out["dst"] == virtual] = real
    return out
