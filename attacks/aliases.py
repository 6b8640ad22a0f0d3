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

from attacks.capture import group_order

_KEY = ["sport", "dport", "proto", "ipid", "seq", "plen"]


def _refine(
    packets: np.ndarray, order: np.ndarray, same: np.ndarray, fixed: str, f: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``group_order`` by ``_KEY`` refined to groups by (``fixed``, ``_KEY``): only the few key
    groups in which ``fixed`` varies are re-sorted (by ``fixed``, stably, so by time within).
    ``f`` is ``packets[fixed][order]`` if the caller has it; the flag says whether rows moved."""
    f = packets[fixed][order] if f is None else f
    split = same & (f[1:] != f[:-1])
    if not split.any():
        return order, same, False
    gid = np.concatenate([[0], np.cumsum(~same)])
    pos = np.flatnonzero(np.isin(gid, gid[1:][split]))  # the rows of the mixed groups
    order = order.copy()
    order[pos] = order[pos[np.lexsort([f[pos], gid[pos]])]]
    f = packets[fixed][order]
    return order, same & (f[1:] == f[:-1]), True


def _pairs(
    packets: np.ndarray,
    fixed: str,
    varying: str,
    tolerance_s: float,
    distinct_vp: bool,
    grouped: tuple[np.ndarray, np.ndarray] | None = None,
    columns: dict[str, np.ndarray] | None = None,
) -> Counter:
    """Count (earlier value, later value) of ``varying`` for copies of one packet.

    Copies are rows adjacent in (``fixed``, ``_KEY``, time) order. ``grouped`` is
    ``group_order(packets, _KEY)`` and ``columns`` maps field names to their columns in that
    order, when the caller has them. The counter's keys come in the order in which that
    lexicographic sort first meets them.
    """
    votes: Counter = Counter()
    if len(packets) < 2:
        return votes
    cols = columns or {}
    order, same, moved = _refine(
        packets, *(grouped or group_order(packets, _KEY)), fixed, cols.get(fixed)
    )
    var = cols[varying] if varying in cols and not moved else packets[varying][order]
    idx = np.flatnonzero(same & (var[1:] != var[:-1]))  # few: rewritten copies only
    ts, nxt = packets["ts"][order[idx]], packets["ts"][order[idx + 1]]
    ok = (nxt - ts) < tolerance_s
    if distinct_vp:
        ok &= packets["vp"][order[idx]] != packets["vp"][order[idx + 1]]
    idx = idx[ok]
    if not len(idx):
        return votes
    rows = order[idx]
    # the copies in the order of the lexicographic sort (fixed, key fields, time, position)
    first = packets[rows]
    lex = np.lexsort([rows, first["ts"]] + [first[f] for f in reversed([fixed, *_KEY])])
    early = var[idx][lex].astype(np.uint64)
    late = var[idx + 1][lex].astype(np.uint64)
    pair, at, counts = np.unique(
        early << np.uint64(32) | late, return_index=True, return_counts=True
    )
    for k in np.argsort(at, kind="stable").tolist():
        votes[(int(pair[k] >> np.uint64(32)), int(pair[k] & np.uint64(0xFFFFFFFF)))] = int(
            counts[k]
        )
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
    grouped, cols = None, None
    if len(packets) >= 2:  # one sort and one gather of the addresses serve both directions
        grouped = group_order(packets, _KEY)
        cols = {f: packets[f][grouped[0]] for f in ("src", "dst")}
    for (early, late), n in _pairs(
        packets, "src", "dst", tolerance_s, distinct_vp, grouped, cols
    ).items():
        votes[(early, late)] += n
    for (early, late), n in _pairs(
        packets, "dst", "src", tolerance_s, distinct_vp, grouped, cols
    ).items():
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
