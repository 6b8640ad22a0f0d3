"""The attackers' slow path, kept only as the reference for tests/unit/test_attacks_speed.py.

These are the per-packet / per-flow / per-lag implementations of the analysis as they were before
it was vectorised end to end (features, relay evidence, chain extension, aliases,
de-duplication), copied verbatim from the modules as of commit 8eaf4a9 (main before the
vectorised attackers). ``slow_path(monkeypatch)`` swaps them into the ``attacks`` modules so that
the whole pipeline can run either way and the outputs be compared. Nothing else uses them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from attacks.capture import PACKET_DTYPE, TCP_ACK, TCP_SYN, Capture, int_to_ip, packet_key
from attacks.evidence import (
    TRANSFER_DTYPE,
    RelayEvidence,
    _bursts,
    _corr,
    _lagged,
    drop_popular_sizes,
)
from attacks.features import (
    FEATURE_NAMES,
    LOG_FEATURES,
    LONG_FLOW_S,
    Windows,
    _group_max,
    host_index,
    host_window_matrix,
)
from attacks.relaygraph import RelayGraph, bfs_depth

_KEY = ["sport", "dport", "proto", "ipid", "seq", "plen"]


def flow_ids(packets: np.ndarray) -> tuple[np.ndarray, int]:
    """A dense id per 5-tuple (direction matters) and the number of flows."""
    if not len(packets):
        return np.zeros(0, dtype=np.int64), 0
    hi = packets["src"].astype(np.uint64) << np.uint64(32) | packets["dst"].astype(np.uint64)
    lo = (
        packets["sport"].astype(np.uint64) << np.uint64(24)
        | packets["dport"].astype(np.uint64) << np.uint64(8)
        | packets["proto"].astype(np.uint64)
    )
    order = np.lexsort([lo, hi])
    new = np.ones(len(order), dtype=bool)
    new[1:] = (hi[order][1:] != hi[order][:-1]) | (lo[order][1:] != lo[order][:-1])
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, int(new.sum())


def _pair_sums(win: np.ndarray, key: np.ndarray, weights: np.ndarray, n: int):
    """Sum ``weights`` per (window, key); return the window of each group and its sum."""
    combo = win * (int(key.max()) + 1 if len(key) else 1) + key
    uniq, inv = np.unique(combo, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=weights)
    kmax = int(key.max()) + 1 if len(key) else 1
    return (uniq // kmax).astype(np.int64), sums


def window_features(packets: np.ndarray, windows: Windows) -> np.ndarray:
    """One row of ``FEATURE_NAMES`` per window (log1p on byte-like features)."""
    n = windows.count
    X = np.zeros((n, len(FEATURE_NAMES)))
    if not len(packets):
        return X
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    win = windows.index
    length = packets["length"].astype(float)
    plen = packets["plen"].astype(float)
    ts = packets["ts"]

    X[:, col["bytes"]] = np.bincount(win, weights=length, minlength=n)
    pk = np.bincount(win, minlength=n).astype(float)
    X[:, col["packets"]] = pk
    with np.errstate(invalid="ignore", divide="ignore"):
        X[:, col["mean_pkt_size"]] = np.where(pk > 0, X[:, col["bytes"]] / np.maximum(pk, 1), 0)
        full = np.bincount(win, weights=(plen >= 1200).astype(float), minlength=n)
        X[:, col["frac_full_size"]] = np.where(pk > 0, full / np.maximum(pk, 1), 0)

    fid, nflows = flow_ids(packets)
    fw, fbytes = _pair_sums(win, fid, plen, n)
    X[:, col["flows_active"]] = np.bincount(fw, minlength=n)
    syn = (packets["flags"] & TCP_SYN).astype(bool) & ~(packets["flags"] & TCP_ACK).astype(bool)
    X[:, col["flows_new"]] = np.bincount(win[syn], minlength=n)
    top_flow = _group_max(fw, fbytes, n)
    X[:, col["top_flow_bytes"]] = top_flow
    # the biggest flow so far: bytes a flow active in the window has carried up to its end
    order = np.lexsort([ts, fid])
    cum = np.empty(len(fid))
    csum = np.cumsum(plen[order])
    starts = np.concatenate([[0], np.nonzero(np.diff(fid[order]))[0] + 1])
    offs = np.repeat(csum[starts] - plen[order][starts], np.diff(np.append(starts, len(fid))))
    cum[order] = csum - offs
    X[:, col["top_flow_total"]] = _group_max(win, cum, n)
    payload = np.bincount(win, weights=plen, minlength=n)
    X[:, col["top_flow_share"]] = np.where(payload > 0, top_flow / np.maximum(payload, 1), 0)

    hosts, si, di = host_index(packets)
    nh = len(hosts)
    pw, pbytes = _pair_sums(win, si * nh + di, plen, n)
    X[:, col["top_pair_bytes"]] = _group_max(pw, pbytes, n)
    _, out, inn = host_window_matrix(packets, windows, hosts)
    X[:, col["max_host_out"]] = out.max(axis=1)
    X[:, col["max_host_in"]] = inn.max(axis=1)
    X[:, col["max_host_net_in"]] = np.clip((inn - out).max(axis=1), 0, None)

    # fan-out/fan-in: distinct peers per host per window (data-carrying packets only)
    data = plen > 0
    for name, a, b in (("max_fan_out", si, di), ("max_fan_in", di, si)):
        combo = np.unique((win[data] * nh + a[data]) * nh + b[data])
        wa = combo // nh
        counts = np.bincount(wa, minlength=n * nh)[: n * nh].reshape(n, nh)
        X[:, col[name]] = counts.max(axis=1)

    # entropy of the destination byte distribution
    dmat = inn / np.maximum(inn.sum(axis=1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        X[:, col["dst_entropy"]] = -np.nansum(np.where(dmat > 0, dmat * np.log2(dmat), 0), axis=1)

    # gaps between consecutive packets (of the whole vantage point) within a window
    gaps = np.diff(ts, prepend=ts[0])
    lg = np.log10(np.maximum(gaps, 1e-7))
    cnt = np.maximum(pk, 1)
    mean = np.bincount(win, weights=lg, minlength=n) / cnt
    sq = np.bincount(win, weights=lg * lg, minlength=n) / cnt
    X[:, col["gap_mean_log"]] = np.where(pk > 0, mean, 0)
    X[:, col["gap_std_log"]] = np.sqrt(np.clip(sq - mean * mean, 0, None))

    # long-lived flows: age of the flow (since its first packet) at each packet
    first = np.full(nflows, np.inf)
    np.minimum.at(first, fid, ts)
    age = ts - first[fid]
    X[:, col["oldest_flow_age"]] = _group_max(win, age, n)
    long = age > LONG_FLOW_S
    X[:, col["long_flow_bytes"]] = np.bincount(win[long], weights=plen[long], minlength=n)
    lw = np.unique(win[long] * max(nflows, 1) + fid[long]) // max(nflows, 1)
    X[:, col["long_flow_count"]] = np.bincount(lw, minlength=n)

    for name in LOG_FEATURES:
        X[:, col[name]] = np.log1p(X[:, col[name]])
    return X


def transfers(
    packets: np.ndarray, min_bytes: int = 1, burst_gap_s: float | None = None
) -> np.ndarray:
    """Data-carrying *transfers*: one row per connection direction, or, with ``burst_gap_s``, one
    row per burst of it (a pause longer than ``burst_gap_s`` starts a new one). Persistent hop
    connections carry one chunk per burst, so bursts are what a relay re-sends."""
    data = packets[packets["plen"] > 0]
    if not len(data):
        return np.zeros(0, dtype=TRANSFER_DTYPE)
    fid, _ = flow_ids(data)
    order = np.lexsort([data["ts"], fid])
    data, fid = data[order], fid[order]
    new = np.ones(len(data), dtype=bool)
    new[1:] = fid[1:] != fid[:-1]
    if burst_gap_s is not None:
        new[1:] |= np.diff(data["ts"]) > burst_gap_s
    bid = np.cumsum(new) - 1
    n = int(bid[-1]) + 1
    first = np.nonzero(new)[0]
    last = np.concatenate([first[1:] - 1, [len(data) - 1]])
    out = np.zeros(n, dtype=TRANSFER_DTYPE)
    for f in ("src", "dst", "sport", "dport"):
        out[f] = data[f][first]
    out["start"] = data["ts"][first]
    out["end"] = data["ts"][last]
    out["bytes"] = np.bincount(bid, weights=data["plen"].astype(float), minlength=n)
    out = out[out["bytes"] >= min_bytes]
    return out[np.argsort(out["start"], kind="stable")]


def _match_counts(
    tin: np.ndarray,
    tout: np.ndarray,
    shift: float,
    max_delay: float,
    tol: float,
    slack: float,
    extent: dict[tuple[int, int], list] | None = None,
) -> dict[tuple[int, int], int]:
    """Greedy one-to-one matching of incoming to outgoing transfers of one host; ``extent``
    collects ``[bytes, first, last, [(time, bytes), ...]]`` of the matches per (from, to)."""
    counts: dict[tuple[int, int], int] = defaultdict(int)
    if not len(tin) or not len(tout):
        return counts
    o_start = tout["start"] + shift
    order = np.argsort(o_start, kind="stable")
    o_start, o_bytes, o_dst = o_start[order], tout["bytes"][order], tout["dst"][order]
    used = np.zeros(len(order), dtype=bool)
    for src, start, end, nbytes in zip(
        tin["src"].tolist(),
        tin["start"].tolist(),
        tin["end"].tolist(),
        tin["bytes"].tolist(),
        strict=True,
    ):
        lo = np.searchsorted(o_start, start, side="left")
        hi = np.searchsorted(o_start, end + max_delay, side="right")
        if lo >= hi:
            continue
        cand = np.arange(lo, hi)
        ok = (~used[cand]) & (o_dst[cand] != src)
        ok &= np.abs(o_bytes[cand] - nbytes) <= max(tol * nbytes, slack)
        cand = cand[ok]
        if not len(cand):
            continue
        best = cand[np.argmin(np.abs(o_start[cand] - end))]
        used[best] = True
        key = (src, int(o_dst[best]))
        counts[key] += 1
        if extent is not None:
            e = extent.setdefault(key, [0.0, start, end, []])
            e[0] += float(o_bytes[best])
            e[1], e[2] = min(e[1], start), max(e[2], float(o_start[best]))
            e[3] += [(start, nbytes), (float(o_start[best]), float(o_bytes[best]))]
    return counts


def _xcorr_peak(x: np.ndarray, y: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Largest Pearson correlation of ``y`` shifted back by 0..max_lag bins against ``x``."""
    best, best_lag = 0.0, 0
    for lag in range(0, max_lag + 1):
        xa = x[: len(x) - lag] if lag else x
        ya = y[lag:]
        if xa.std() == 0 or ya.std() == 0:
            continue
        r = float(np.corrcoef(xa, ya)[0, 1])
        if r > best:
            best, best_lag = r, lag
    return best, best_lag


def _matched_triples(
    tr: np.ndarray,
    max_delay: float,
    tol: float,
    slack: float,
    min_matches: int,
    shifts: tuple[float, ...],
    min_single_bytes: float | None = None,
) -> dict[tuple[int, int, int], RelayEvidence]:
    found: dict[tuple[int, int, int], RelayEvidence] = {}
    hosts = np.union1d(tr["src"], tr["dst"]) if len(tr) else []
    for h in hosts:
        tin, tout = tr[tr["dst"] == h], tr[tr["src"] == h]
        if not len(tin) or not len(tout):
            continue
        extent: dict[tuple[int, int], list] = {}
        real = _match_counts(tin, tout, 0.0, max_delay, tol, slack, extent)
        if not real:
            continue
        chance: dict[tuple[int, int], float] = defaultdict(float)
        for s in shifts:
            for k, v in _match_counts(tin, tout, s, max_delay, tol, slack).items():
                chance[k] += v / len(shifts)
        for (a, b), m in real.items():
            e = chance.get((a, b), 0.0)
            # well above coincidence: 3 sigma (Poisson) and at least twice the chance count
            nbytes = extent[(a, b)][0]
            repeated = m >= min_matches and m > e + 3.0 * np.sqrt(e) + 1.0 and m >= 2.0 * e + 1.0
            # one whole connection passed on byte for byte is evidence enough when it is big
            single = min_single_bytes is not None and nbytes >= min_single_bytes and e < 0.5
            if repeated or single:
                nbytes, first, last, events = extent[(a, b)]
                found[(a, int(h), b)] = RelayEvidence(
                    int_to_ip(a),
                    int_to_ip(h),
                    int_to_ip(b),
                    m,
                    round(e, 3),
                    0.0,
                    0.0,
                    nbytes,
                    first,
                    last,
                    events,
                )
    return found


def _xcorr_triples(
    packets: np.ndarray,
    bin_s: float | None,
    max_lag_s: float,
    min_xcorr: float,
    min_bytes: float,
    size_tol: float,
    min_bursts: int,
    skip: set[tuple[int, int, int]],
) -> dict[tuple[int, int, int], RelayEvidence]:
    """Relays whose output series is explained by one or several lagged input series (a leader
    merges the streams of all intermediates into one)."""
    found: dict[tuple[int, int, int], RelayEvidence] = {}
    data = packets[packets["plen"] > 0]
    if not len(data):
        return found
    t0 = float(data["ts"].min())
    if bin_s is None:  # scale-free: about 300 bins over the capture, 1 ms .. 100 ms
        bin_s = float(np.clip((float(data["ts"].max()) - t0) / 300.0, 0.001, 0.1))
    nb = int((float(data["ts"].max()) - t0) / bin_s) + 1
    idx = ((data["ts"] - t0) / bin_s).astype(np.int64)
    pair = data["src"].astype(np.uint64) << np.uint64(32) | data["dst"].astype(np.uint64)
    uniq, inv = np.unique(pair, return_inverse=True)
    inv = inv.ravel()
    totals = np.bincount(inv, weights=data["plen"].astype(float))
    series: dict[tuple[int, int], np.ndarray] = {}
    for k in np.nonzero(totals >= min_bytes)[0]:
        m = inv == k
        key = (int(uniq[k] >> np.uint64(32)), int(uniq[k] & np.uint64(0xFFFFFFFF)))
        series[key] = np.bincount(idx[m], weights=data["plen"][m].astype(float), minlength=nb)
    bursty = {k for k, v in series.items() if _bursts(v) >= min_bursts}
    max_lag = min(int(round(max_lag_s / bin_s)), 50)
    for (h, b), y in series.items():
        if (h, b) not in bursty:
            continue
        cands = []
        for (a, h2), x in series.items():
            if h2 != h or a == b or (a, h2) not in bursty:
                continue
            r, lag = _xcorr_peak(x, y, max_lag)
            if r > 0.2:
                cands.append((r, lag, a, x))
        cands.sort(key=lambda c: -c[0])
        agg, chosen, best = np.zeros(nb), [], 0.0
        for r, lag, a, x in cands:  # greedy: add inputs while they explain the output better
            trial = agg + _lagged(x, lag)
            c = _corr(trial, y)
            if c > best + 0.02:
                agg, best = trial, c
                chosen.append((a, r, lag))
        if not chosen or best < min_xcorr:
            continue
        ratio = y.sum() / max(agg.sum(), 1.0)
        if not 1 - size_tol <= ratio <= 1 + size_tol:
            continue
        for a, _r, lag in chosen:
            if (a, h, b) not in skip:
                on = np.nonzero(y)[0]
                found[(a, h, b)] = RelayEvidence(
                    int_to_ip(a),
                    int_to_ip(h),
                    int_to_ip(b),
                    0,
                    0.0,
                    round(best, 3),
                    round(lag * bin_s, 3),
                    float(y.sum()),
                    t0 + on[0] * bin_s,
                    t0 + (on[-1] + 1) * bin_s,
                    [(t0 + i * bin_s, float(y[i])) for i in on],
                )
    return found


def trace_relays(
    packets: np.ndarray,
    max_delay_s: float = 0.5,
    size_tol: float = 0.05,
    size_slack: float = 256.0,
    min_bytes: int = 3000,
    min_matches: int = 3,
    max_repeats: int = 2,
    min_single_bytes: float = 500e3,
    single_tol: float = 0.01,
    burst_gaps_s: tuple[float | None, ...] = (None, 0.005, 0.05),
    shifts_s: tuple[float, ...] = (-2.3, -1.7, -1.1, 1.1, 1.7, 2.3),
    bin_s: float | None = None,
    max_lag_s: float = 2.0,
    min_xcorr: float = 0.8,
    min_xcorr_bytes: float = 200e3,
    xcorr_size_tol: float = 0.15,
    min_bursts: int = 3,
) -> list[RelayEvidence]:
    """All triples ``a → h → b`` for which ``h`` looks like a relay (see the module docstring).

    Transfers are matched at several burst granularities (whole connections, and bursts split at
    each of ``burst_gaps_s``): a chunk may travel as its own connection or as a burst inside a
    persistent one. Sizes shared by more than ``max_repeats`` transfers are left out
    (``drop_popular_sizes``). A whole connection of at least ``min_single_bytes`` re-sent within
    ``single_tol`` of its size (where coincidence predicts no match) is a relay on its own: a
    hop that merges all its chunks into one stream leaves exactly that.
    """
    found: dict[tuple[int, int, int], RelayEvidence] = {}
    for gap in burst_gaps_s:
        tr = drop_popular_sizes(
            transfers(packets, min_bytes=min_bytes, burst_gap_s=gap), max_repeats
        )
        whole = gap is None  # whole connections: a single big, exact match counts
        for k, ev in _matched_triples(
            tr,
            max_delay_s,
            single_tol if whole else size_tol,
            size_slack,
            min_matches,
            shifts_s,
            min_single_bytes if whole else None,
        ).items():
            if k not in found or ev.matches > found[k].matches:
                found[k] = ev
    found.update(
        _xcorr_triples(
            packets,
            bin_s,
            max_lag_s,
            min_xcorr,
            min_xcorr_bytes,
            xcorr_size_tol,
            min_bursts,
            set(found),
        )
    )
    return list(found.values())


def relay_activity(
    evidence: list[RelayEvidence], window_starts: np.ndarray, window_s: float
) -> np.ndarray:
    """Bytes seen being relayed in each window (each matched transfer counted where it starts)."""
    out = np.zeros(len(window_starts))
    if not len(window_starts):
        return out
    t0 = float(window_starts[0])
    for ev in evidence:
        for t, b in ev.events:
            i = int((t - t0) // window_s)
            if 0 <= i < len(out):
                out[i] += b
    return out


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
    pair: dict[tuple[str, str], float] = defaultdict(float)
    for s_, d_, b_ in zip(
        data["src"].tolist(), data["dst"].tolist(), data["plen"].tolist(), strict=True
    ):
        pair[(int_to_ip(s_), int_to_ip(d_))] += b_
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


def dedupe_packets(packets: np.ndarray, tolerance_s: float = 0.05) -> np.ndarray:
    """Drop copies of one packet seen at several vantage points (keep the earliest copy).

    Two rows are copies when their ``packet_key`` is equal and they are less than ``tolerance_s``
    apart. ``packets`` must be sorted by time; the result is too.
    """
    if len(packets) < 2:
        return packets
    key = packet_key(packets)
    order = np.lexsort([packets["ts"]] + [key[f] for f in reversed(key.dtype.names)])
    k = key[order]
    ts = packets["ts"][order]
    same = np.ones(len(order) - 1, dtype=bool)
    for f in k.dtype.names:
        same &= k[f][1:] == k[f][:-1]
    # a row is a copy if it matches its predecessor (in key order) closely in time; chains of
    # copies (s1, s2, s3) are caught because each one matches the one before it.
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = same & (ts[1:] - ts[:-1] < tolerance_s)
    keep = np.sort(order[~dup])
    return packets[keep]


def merge_captures(captures: Sequence[Capture], dedupe: bool = True) -> Capture:
    """Join the captures of several vantage points (the global passive adversary's view).

    Rows keep their vantage index (``vp`` is renumbered into the merged ``vantages`` list). With
    ``dedupe``, a packet seen on several switches counts once (see ``dedupe_packets``); virtual
    addresses are not resolved here (``attacks.aliases`` does that).
    """
    parts, vantages, arp = [], [], set()
    for cap in captures:
        pk = cap.packets.copy()
        pk["vp"] = pk["vp"] + len(vantages)
        parts.append(pk)
        vantages.extend(cap.vantages)
        arp |= cap.arp_hosts
    packets = np.concatenate(parts) if parts else np.zeros(0, dtype=PACKET_DTYPE)
    packets = packets[np.argsort(packets["ts"], kind="stable")]
    if dedupe:
        packets = dedupe_packets(packets)
    return Capture(packets=packets, vantages=vantages, arp_hosts=arp)


def slow_path(monkeypatch) -> None:
    """Run the attackers on the reference implementations above (pytest's ``monkeypatch``)."""
    import attacks.aliases
    import attacks.capture
    import attacks.detection
    import attacks.evidence
    import attacks.features
    import attacks.passive
    import attacks.relaygraph
    import attacks.view

    for module, name, fn in [
        (attacks.features, "window_features", window_features),
        (attacks.detection, "window_features", window_features),
        (attacks.evidence, "transfers", transfers),
        (attacks.evidence, "_match_counts", _match_counts),
        (attacks.evidence, "_xcorr_peak", _xcorr_peak),
        (attacks.evidence, "_matched_triples", _matched_triples),
        (attacks.evidence, "_xcorr_triples", _xcorr_triples),
        (attacks.evidence, "trace_relays", trace_relays),
        (attacks.evidence, "relay_activity", relay_activity),
        (attacks.view, "trace_relays", trace_relays),
        (attacks.view, "relay_activity", relay_activity),
        (attacks.relaygraph, "extend_chain", extend_chain),
        (attacks.passive, "extend_chain", extend_chain),
        (attacks.aliases, "_pairs", _pairs),
        (attacks.aliases, "resolve_aliases", resolve_aliases),
        (attacks.view, "resolve_aliases", resolve_aliases),
        (attacks.capture, "dedupe_packets", dedupe_packets),
        (attacks.view, "dedupe_packets", dedupe_packets),
        (attacks.capture, "merge_captures", merge_captures),
        (attacks.view, "merge_captures", merge_captures),
    ]:
        monkeypatch.setattr(module, name, fn)
