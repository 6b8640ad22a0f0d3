"""Per-window traffic features: what a passive attacker measures in each time window.

``window_features`` cuts a packet table (see ``attacks.capture``) into fixed windows and returns one
row of features per window: volume (bytes, packets, packet sizes), flows (active, new, the biggest
flow and host pair, long-lived flows), per-host spread (the busiest sender and receiver, the largest
net inflow, fan-in and fan-out) and timing (inter-packet gaps). Byte-like features are ``log1p``'d.

``robust_z`` then expresses each feature against the same capture's own typical window (median and
MAD), so that a model trained on one run transfers to another run with a different background load.

All of it is numpy over the whole table (bincounts, one sort by flow, dense counts where the
(window, key) space is small); ``host_pairs`` and ``flow_order`` serve ``attacks.evidence`` and
``attacks.relaygraph`` too.

Callers: ``attacks.detection`` (detectors), ``attacks.identify`` (host matrices),
``attacks.evidence``, ``attacks.relaygraph``, the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from attacks.capture import TCP_ACK, TCP_SYN

FEATURE_NAMES = [
    "bytes",
    "packets",
    "mean_pkt_size",
    "frac_full_size",
    "flows_active",
    "flows_new",
    "top_flow_bytes",
    "top_flow_share",
    "top_flow_total",
    "top_pair_bytes",
    "max_host_out",
    "max_host_in",
    "max_host_net_in",
    "max_fan_out",
    "max_fan_in",
    "dst_entropy",
    "gap_mean_log",
    "gap_std_log",
    "long_flow_bytes",
    "long_flow_count",
    "oldest_flow_age",
]
# Features that grow with the time since the *capture* began (flow ages, bytes a flow carried so
# far, long-lived flows): a window's position in the testbed's capture, which an attacker who
# watches all the time does not have. A classifier rehearsed on other trials learns from them
# when a migration usually runs in a trial, not what it looks like (a cover migration that left
# no trace scored AUC 0.93 so); ``attacks.detection.context_matrix`` leaves them out.
CAPTURE_RELATIVE = ("top_flow_total", "long_flow_bytes", "long_flow_count", "oldest_flow_age")
LOG_FEATURES = {
    "top_flow_total",
    "bytes",
    "packets",
    "top_flow_bytes",
    "top_pair_bytes",
    "max_host_out",
    "max_host_in",
    "max_host_net_in",
    "long_flow_bytes",
}
_FLOORS = np.array(
    [
        0.5
        if n in LOG_FEATURES
        else 1.0
        if n.startswith(("flows_", "max_fan", "long_flow_count"))
        else 0.0
        for n in FEATURE_NAMES
    ]
)
LONG_FLOW_S = 1.0  # a flow older than this inside a window counts as long-lived


@dataclass
class Windows:
    """A packet table cut into windows of ``window_s`` seconds starting at ``t0``."""

    t0: float
    window_s: float
    count: int
    index: np.ndarray  # window index of every packet

    @property
    def starts(self) -> np.ndarray:
        return self.t0 + self.window_s * np.arange(self.count)


def make_windows(
    packets: np.ndarray, window_s: float, t0: float | None = None, t1: float | None = None
) -> Windows:
    """Assign every packet to a window; ``t0``/``t1`` default to the capture's first/last packet."""
    ts = packets["ts"]
    if t0 is None:
        t0 = float(ts.min()) if len(ts) else 0.0
    if t1 is None:
        t1 = float(ts.max()) if len(ts) else t0
    count = max(1, int(np.floor((t1 - t0) / window_s)) + 1)
    idx = np.floor((ts - t0) / window_s).astype(np.int64)
    return Windows(t0=t0, window_s=window_s, count=count, index=np.clip(idx, 0, count - 1))


# a (window, key) space up to this size is counted with a dense bincount instead of a sort
_DENSE_MAX = 1 << 22


def _is_sorted(values: np.ndarray) -> bool:
    return bool(len(values) < 2 or (values[1:] >= values[:-1]).all())


def flow_order(
    packets: np.ndarray | Mapping[str, np.ndarray],
) -> tuple[np.ndarray, int, np.ndarray]:
    """``flow_ids`` plus the packets' order by flow, then time (``np.lexsort([ts, ids])``).
    ``packets`` is a packet table or a mapping of some of its columns (5-tuple and ``ts``)."""
    if not len(packets["ts"]):
        return np.zeros(0, dtype=np.int64), 0, np.zeros(0, dtype=np.int64)
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
    # lexsort is stable: on a table sorted by time its order already is flow, then time
    if not _is_sorted(packets["ts"]):
        order = np.lexsort([packets["ts"], ids])
    return ids, int(new.sum()), order


def flow_ids(packets: np.ndarray) -> tuple[np.ndarray, int]:
    """A dense id per 5-tuple (direction matters) and the number of flows."""
    ids, n, _ = flow_order(packets)
    return ids, n


def host_index(packets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted host addresses and, per packet, the index of its source and destination."""
    hosts = np.union1d(packets["src"], packets["dst"])
    return hosts, np.searchsorted(hosts, packets["src"]), np.searchsorted(hosts, packets["dst"])


def host_pairs(packets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(src << 32 | dst, return_inverse=True)``: the (source, destination) pairs as
    ``src << 32 | dst`` in increasing order and each packet's pair; counted densely over the
    hosts when that space is small."""
    if not len(packets):
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    hosts, si, di = host_index(packets)
    nh = len(hosts)
    if nh * nh > max(_DENSE_MAX, 4 * len(packets)):
        key = packets["src"].astype(np.uint64) << np.uint64(32) | packets["dst"].astype(np.uint64)
        uniq, inv = np.unique(key, return_inverse=True)
        return uniq, inv.ravel()
    combo = si * nh + di
    present = np.flatnonzero(np.bincount(combo, minlength=nh * nh))
    slot = np.zeros(nh * nh, dtype=np.int64)
    slot[present] = np.arange(len(present))
    h = hosts.astype(np.uint64)
    return h[present // nh] << np.uint64(32) | h[present % nh], slot[combo]


def _group_max(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    np.maximum.at(out, groups, values)
    return out


def _distinct(combo: np.ndarray, size: int) -> np.ndarray:
    """``np.unique(combo)`` for non-negative integers below ``size`` (dense when small)."""
    if size <= max(_DENSE_MAX, 4 * len(combo)):
        return np.flatnonzero(np.bincount(combo, minlength=size))
    return np.unique(combo)


def _pair_sums(win: np.ndarray, key: np.ndarray, weights: np.ndarray, n: int):
    """Sum ``weights`` per (window, key); return the window of each group and its sum."""
    kmax = int(key.max()) + 1 if len(key) else 1
    combo = win * kmax + key
    size = n * kmax
    if size <= max(_DENSE_MAX, 4 * len(combo)):
        # a bincount adds in table order per group, as the sorted path does: same sums
        present = np.flatnonzero(np.bincount(combo, minlength=size))
        sums = np.bincount(combo, weights=weights, minlength=size)[present]
        return (present // kmax).astype(np.int64), sums
    uniq, inv = np.unique(combo, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=weights)
    return (uniq // kmax).astype(np.int64), sums


def _host_matrix(
    windows: Windows, s: np.ndarray, d: np.ndarray, w: np.ndarray, h: int
) -> tuple[np.ndarray, np.ndarray]:
    n = windows.count
    out = np.bincount(windows.index * h + s, weights=w, minlength=n * h)
    inn = np.bincount(windows.index * h + d, weights=w, minlength=n * h)
    return out.reshape(n, h), inn.reshape(n, h)


def host_window_matrix(
    packets: np.ndarray, windows: Windows, hosts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Payload bytes sent and received per (window, host): returns ``hosts, out, in``."""
    if hosts is None:
        hosts = np.union1d(packets["src"], packets["dst"])
    s = np.searchsorted(hosts, packets["src"])
    d = np.searchsorted(hosts, packets["dst"])
    s_ok = (s < len(hosts)) & (hosts[np.minimum(s, len(hosts) - 1)] == packets["src"])
    d_ok = (d < len(hosts)) & (hosts[np.minimum(d, len(hosts) - 1)] == packets["dst"])
    n, h = windows.count, len(hosts)
    w = packets["plen"].astype(float)
    out = np.bincount(windows.index[s_ok] * h + s[s_ok], weights=w[s_ok], minlength=n * h)
    inn = np.bincount(windows.index[d_ok] * h + d[d_ok], weights=w[d_ok], minlength=n * h)
    return hosts, out.reshape(n, h), inn.reshape(n, h)


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

    fid, nflows, order = flow_order(packets)
    fw, fbytes = _pair_sums(win, fid, plen, n)
    X[:, col["flows_active"]] = np.bincount(fw, minlength=n)
    syn = (packets["flags"] & TCP_SYN).astype(bool) & ~(packets["flags"] & TCP_ACK).astype(bool)
    X[:, col["flows_new"]] = np.bincount(win[syn], minlength=n)
    top_flow = _group_max(fw, fbytes, n)
    X[:, col["top_flow_bytes"]] = top_flow
    # the biggest flow so far: bytes a flow active in the window has carried up to its end
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
    out, inn = _host_matrix(windows, si, di, plen, nh)
    X[:, col["max_host_out"]] = out.max(axis=1)
    X[:, col["max_host_in"]] = inn.max(axis=1)
    X[:, col["max_host_net_in"]] = np.clip((inn - out).max(axis=1), 0, None)

    # fan-out/fan-in: distinct peers per host per window (data-carrying packets only)
    data = plen > 0
    for name, a, b in (("max_fan_out", si, di), ("max_fan_in", di, si)):
        combo = _distinct((win[data] * nh + a[data]) * nh + b[data], n * nh * nh)
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
    first = ts[order][starts]  # the flows in id order, each one's packets by time
    age = ts - first[fid]
    X[:, col["oldest_flow_age"]] = _group_max(win, age, n)
    long = age > LONG_FLOW_S
    X[:, col["long_flow_bytes"]] = np.bincount(win[long], weights=plen[long], minlength=n)
    lw = _distinct(win[long] * max(nflows, 1) + fid[long], n * max(nflows, 1)) // max(nflows, 1)
    X[:, col["long_flow_count"]] = np.bincount(lw, minlength=n)

    for name in LOG_FEATURES:
        X[:, col[name]] = np.log1p(X[:, col[name]])
    return X


def robust_z(X: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Each column as ``(x - median) / scale`` against ``reference`` rows (default: all rows).

    ``scale`` is 1.4826·MAD, floored so that near-constant features do not explode (half a log
    unit for byte-like features, one for counts, 5 % of the median otherwise).
    """
    ref = X if reference is None else reference
    med = np.median(ref, axis=0)
    mad = 1.4826 * np.median(np.abs(ref - med), axis=0)
    floor = np.maximum(0.05 * np.abs(med), 0.05)
    if X.shape[1] == len(FEATURE_NAMES):
        floor = np.maximum(floor, _FLOORS)
    scale = np.maximum(mad, floor)
    return (X - med) / scale
