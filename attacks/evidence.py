"""Relay evidence: which hosts pass on whose bytes, from what crosses the wire only.

A relay (intermediate or leader) receives a chunk and sends it on soon after, about the same size
give or take a header. Two pieces of evidence:

1. **transfer matching** (sizes and timing): every data-carrying connection, or every burst of
   one (persistent hop connections carry one chunk per burst), is a *transfer* (endpoints, start,
   end, payload bytes). For each host ``h`` an incoming transfer ``a→h`` matches an outgoing
   ``h→b`` (``b ≠ a``) that starts between the incoming one's start and ``max_delay_s`` after its
   end, with a payload within ``size_tol`` (fraction) or ``size_slack`` bytes of it. Matches are
   counted per triple ``(a, h, b)`` and compared with the count obtained when the outgoing
   transfers are shifted in time by one to two seconds, past ``max_delay_s`` but short enough
   that flows which merely overlap still overlap (what coincidence alone produces).
2. **binned cross-correlation** (byte-count time series with a lag search): the series ``a→h`` and
   ``h→b`` binned at ``bin_s`` (default: a 300th of the capture, 1-100 ms) are correlated at lags
   ``0..max_lag_s`` (at most 50 bins); a streaming relay that
   re-sends one long flow shows a high peak at a positive lag with similar volumes.

A triple that passes either test is a ``RelayEvidence`` (``trace_relays``); ``relay_activity``
turns the evidence into bytes relayed per window, a feature of the detectors.
``attacks.relaygraph`` chains the triples into the attacker's relay graph.

Everything scales with the capture in numpy: transfers are cut from one sort of the data packets
by flow (shared by every burst granularity), the candidates of every transfer are found and
ranked at once (only the greedy taking is a loop, over transfers), the per-pair series come from
one bincount and every lag's correlation from running sums. tests/unit/test_attacks_speed.py
holds this module's figures equal to the per-packet implementation it replaced.

Callers: ``attacks.pipeline``, ``attacks.relaygraph``, the tests. About 470 lines: both pieces
of evidence share the transfers and the ``RelayEvidence`` they produce, and are tuned together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from attacks.capture import int_to_ip
from attacks.features import flow_order, host_pairs

TRANSFER_DTYPE = np.dtype(
    [
        ("src", "u4"),
        ("dst", "u4"),
        ("sport", "u2"),
        ("dport", "u2"),
        ("start", "f8"),
        ("end", "f8"),
        ("bytes", "f8"),
    ]
)


@dataclass
class RelayEvidence:
    """Why a triple ``a → relay → b`` was believed."""

    a: str
    relay: str
    b: str
    matches: int
    chance: float
    xcorr: float
    lag_s: float
    bytes: float = 0.0  # bytes the relay passed on along this triple
    t_first: float = 0.0  # when the relaying was seen, epoch seconds
    t_last: float = 0.0
    events: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (time, bytes)

    def to_json(self) -> dict:
        d = {k: v for k, v in vars(self).items() if k != "events"}
        d["t_first"], d["t_last"] = float(self.t_first), float(self.t_last)
        return d


_FLOW_FIELDS = ("src", "dst", "sport", "dport", "proto", "ts", "plen")


def _data_by_flow(packets: np.ndarray) -> dict[str, np.ndarray]:
    """The columns ``transfers`` needs of the data-carrying packets, ordered by flow, then time."""
    rows = np.flatnonzero(packets["plen"] > 0)
    cols = {f: packets[f][rows] for f in _FLOW_FIELDS}
    if len(rows):
        _, _, order = flow_order(cols)
        cols = {f: c[order] for f, c in cols.items()}
    return cols


def _transfers_of(data: dict[str, np.ndarray], min_bytes: int, gap: float | None) -> np.ndarray:
    """``transfers`` of the columns ``_data_by_flow`` gives."""
    n_rows = len(data["ts"])
    if not n_rows:
        return np.zeros(0, dtype=TRANSFER_DTYPE)
    new = np.ones(n_rows, dtype=bool)
    for f in ("src", "dst", "sport", "dport", "proto"):
        new[1:] &= data[f][1:] == data[f][:-1]
    new[1:] = ~new[1:]
    if gap is not None:
        new[1:] |= np.diff(data["ts"]) > gap
    bid = np.cumsum(new) - 1
    n = int(bid[-1]) + 1
    first = np.nonzero(new)[0]
    last = np.concatenate([first[1:] - 1, [n_rows - 1]])
    out = np.zeros(n, dtype=TRANSFER_DTYPE)
    for f in ("src", "dst", "sport", "dport"):
        out[f] = data[f][first]
    out["start"] = data["ts"][first]
    out["end"] = data["ts"][last]
    out["bytes"] = np.bincount(bid, weights=data["plen"].astype(float), minlength=n)
    out = out[out["bytes"] >= min_bytes]
    return out[np.argsort(out["start"], kind="stable")]


def transfers(
    packets: np.ndarray, min_bytes: int = 1, burst_gap_s: float | None = None
) -> np.ndarray:
    """Data-carrying *transfers*: one row per connection direction, or, with ``burst_gap_s``, one
    row per burst of it (a pause longer than ``burst_gap_s`` starts a new one). Persistent hop
    connections carry one chunk per burst, so bursts are what a relay re-sends."""
    return _transfers_of(_data_by_flow(packets), min_bytes, burst_gap_s)


def drop_popular_sizes(tr: np.ndarray, max_repeats: int = 2) -> np.ndarray:
    """Transfers whose exact size occurs at most ``max_repeats`` times in the capture.

    A size many transfers share carries no identity: TCP flights (the initial window, 2^k
    segments in slow start) and capped application objects repeat exactly, and matching them
    pairs unrelated flows. A relayed chunk's size is drawn afresh for each chunk.
    """
    if not len(tr):
        return tr
    sizes, counts = np.unique(tr["bytes"], return_counts=True)
    popular = sizes[counts > max_repeats]
    return tr[~np.isin(tr["bytes"], popular)]


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
    collects ``[bytes, first, last, [(time, bytes), ...]]`` of the matches per (from, to).

    Each incoming transfer (in start order) takes the unused outgoing one, among those starting
    in its window with a different destination and a size close enough, that starts nearest to
    its end (ties: the earliest). The candidates of every transfer are found and ranked at once;
    only the taking, which depends on what earlier transfers took, is a loop over them.
    """
    counts: dict[tuple[int, int], int] = defaultdict(int)
    if not len(tin) or not len(tout):
        return counts
    o_start = tout["start"] + shift
    order = np.argsort(o_start, kind="stable")
    o_start, o_bytes, o_dst = o_start[order], tout["bytes"][order], tout["dst"][order]
    i_src, i_start, i_end, i_bytes = tin["src"], tin["start"], tin["end"], tin["bytes"]
    lo = np.searchsorted(o_start, i_start, side="left")
    hi = np.searchsorted(o_start, i_end + max_delay, side="right")
    width = np.maximum(hi - lo, 0)
    if not width.any():
        return counts
    inc = np.repeat(np.arange(len(tin)), width)  # (incoming, candidate) pairs
    cand = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    cand += np.repeat(lo, width)
    ok = o_dst[cand] != i_src[inc]
    ok &= np.abs(o_bytes[cand] - i_bytes[inc]) <= np.maximum(tol * i_bytes[inc], slack)
    inc, cand = inc[ok], cand[ok]
    rank = np.lexsort([cand, np.abs(o_start[cand] - i_end[inc]), inc])
    inc, cand = inc[rank], cand[rank]
    bounds = np.searchsorted(inc, np.arange(len(tin) + 1))
    cands, bounds_l = cand.tolist(), bounds.tolist()
    srcs, starts, ends, sizes = (
        i_src.tolist(),
        i_start.tolist(),
        i_end.tolist(),
        i_bytes.tolist(),
    )
    o_dst_l, o_start_l, o_bytes_l = o_dst.tolist(), o_start.tolist(), o_bytes.tolist()
    used = [False] * len(o_start_l)
    for i in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
        best = next((c for c in cands[bounds_l[i] : bounds_l[i + 1]] if not used[c]), None)
        if best is None:
            continue
        used[best] = True
        src, start, end, nbytes = srcs[i], starts[i], ends[i], sizes[i]
        key = (src, o_dst_l[best])
        counts[key] += 1
        if extent is not None:
            e = extent.setdefault(key, [0.0, start, end, []])
            e[0] += o_bytes_l[best]
            e[1], e[2] = min(e[1], start), max(e[2], o_start_l[best])
            e[3] += [(start, nbytes), (o_start_l[best], o_bytes_l[best])]
    return counts


def _bursts(x: np.ndarray, min_share: float = 0.05) -> int:
    """Separate runs of non-empty bins holding at least ``min_share`` of the bytes each: one long
    flow is one burst whatever its shape, and a few stray small flows do not count."""
    if not len(x) or x.sum() <= 0:
        return 0
    on = x > 0
    run = np.cumsum(np.concatenate([[on[0]], on[1:] & ~on[:-1]])) * on  # run number, 0 = off
    sums = np.bincount(run, weights=x)[1:]
    return int(np.count_nonzero(sums >= min_share * x.sum()))


def _pearson_exact(x: np.ndarray, y: np.ndarray, lag: int) -> float | None:
    """Pearson correlation of ``x[:n-lag]`` and ``y[lag:]`` as ``np.corrcoef`` gives it (None
    when one side is constant)."""
    xa = x[: len(x) - lag] if lag else x
    ya = y[lag:]
    if xa.std() == 0 or ya.std() == 0:
        return None
    return float(np.corrcoef(xa, ya)[0, 1])


def _xcorr_peak(x: np.ndarray, y: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Largest Pearson correlation of ``y`` shifted back by 0..max_lag bins against ``x``.

    ``x`` and ``y`` hold whole numbers (bytes per bin). Every lag's correlation comes at once from
    running sums; the lags within a hair (1e-6) of the largest, and any whose running-sum
    variance is too close to 0 to trust, are recomputed with ``np.corrcoef`` and chosen among as
    the plain loop over the lags does (the first strictly largest above 0). The figure is thus
    ``np.corrcoef``'s own.
    """
    n = len(x)
    lags = np.arange(0, min(max_lag, n - 1) + 1) if n else np.zeros(0, dtype=np.int64)
    if not len(lags):
        return 0.0, 0
    # a slice of whole numbers has a zero std exactly when it is constant
    dx, dy = np.flatnonzero(x != x[0]), np.flatnonzero(y != y[-1])
    fx = int(dx[0]) if len(dx) else n  # x[:m] is constant iff m <= fx
    ly = int(dy[-1]) if len(dy) else -1  # y[lag:] is constant iff lag > ly
    m = n - lags
    valid = (m > fx) & (lags <= ly)
    if not valid.any():
        return 0.0, 0
    sx, sy = x / max(float(np.abs(x).max()), 1.0), y / max(float(np.abs(y).max()), 1.0)
    cx, cxx = np.cumsum(sx), np.cumsum(sx * sx)
    sum_x, sum_xx = cx[m - 1], cxx[m - 1]  # over x[: n - lag]
    ry, ryy = np.cumsum(sy[::-1])[::-1], np.cumsum((sy * sy)[::-1])[::-1]
    sum_y, sum_yy = ry[lags], ryy[lags]  # over y[lag:]
    sum_xy = np.array([float(sx[: n - k] @ sy[k:]) for k in lags.tolist()])
    mf = m.astype(float)
    vx, vy = mf * sum_xx - sum_x * sum_x, mf * sum_yy - sum_y * sum_y
    stable = valid & (vx > 1e-9 * mf * sum_xx) & (vy > 1e-9 * mf * sum_yy)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(stable, (mf * sum_xy - sum_x * sum_y) / np.sqrt(vx * vy), np.nan)
    top = float(np.nanmax(r)) if stable.any() else -np.inf
    cand = valid & (~stable | (r >= top - 1e-6))
    best, best_lag = 0.0, 0
    for lag in lags[cand].tolist():
        xa = x[: n - lag] if lag else x
        rr = float(np.corrcoef(xa, y[lag:])[0, 1])
        if rr > best:
            best, best_lag = rr, lag
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


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` delayed by ``lag`` bins (zeros shifted in)."""
    return np.concatenate([np.zeros(lag), x[: len(x) - lag]]) if lag else x


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


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
    uniq, inv = host_pairs(data)
    totals = np.bincount(inv, weights=data["plen"].astype(float))
    keep = np.flatnonzero(totals >= min_bytes)
    slot = np.full(len(uniq), -1, dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    sel = slot[inv] >= 0
    # one bincount over (pair, bin): each bin adds its packets in table order, as per pair
    mat = np.bincount(
        slot[inv][sel] * nb + idx[sel],
        weights=data["plen"][sel].astype(float),
        minlength=len(keep) * nb,
    ).reshape(len(keep), nb)
    series: dict[tuple[int, int], np.ndarray] = {
        (int(uniq[k] >> np.uint64(32)), int(uniq[k] & np.uint64(0xFFFFFFFF))): mat[i]
        for i, k in enumerate(keep.tolist())
    }
    inputs: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)  # relay → (a, a→relay)
    for (a, h2), x in series.items():
        inputs[h2].append((a, x))
    bursty = {k for k, v in series.items() if _bursts(v) >= min_bursts}
    max_lag = min(int(round(max_lag_s / bin_s)), 50)
    for (h, b), y in series.items():
        if (h, b) not in bursty:
            continue
        cands = []
        for a, x in inputs.get(h, []):
            if a == b or (a, h) not in bursty:
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
    data = _data_by_flow(packets)  # sorted once for every granularity
    for gap in burst_gaps_s:
        tr = drop_popular_sizes(_transfers_of(data, min_bytes, gap), max_repeats)
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
    events = [e for ev in evidence for e in ev.events]
    if not len(window_starts) or not events:
        return out
    t0 = float(window_starts[0])
    t, b = np.array(events, dtype=float).T
    i = ((t - t0) // window_s).astype(np.int64)
    ok = (i >= 0) & (i < len(out))
    np.add.at(out, i[ok], b[ok])  # unbuffered, in event order: the sums of the plain loop
    return out
