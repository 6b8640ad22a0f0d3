"""The cover-aware attacker: an adversary who has read the cover arm's design (issue 14).

It knows that every tenant VM sends encrypted records to every other over TCP port 8443 on a
Poisson schedule fixed in advance (a rate per VM, record sizes uniform on the wire, peers
uniform), over connections that close and reopen after a flow-size budget, each opened by a
handshake; and that a migration is meant to change nothing of it. So it measures, per host and
per window, everything the schedule fixes, against the same host's other windows:

1. **records** (``cover_records``): a cover connection's data segments cut into records where a
   direction goes quiet for ``GAP_S`` (records are written whole; the schedule spaces them far
   apart), retransmitted segments counted aside. Per (window, host): records and record bytes
   sent and received, the net of the two (a source loses bytes, a destination gains them), and
   records missing (slots skipped by a loaded link);
2. **churn**: cover connections opened (SYNs) by and towards the host — more bytes through the
   budgeted connections mean more of them;
3. **bursts**: records larger than the largest the design sends (back-to-back records merged on
   one connection: a backlogged sender), and records that start within ``B2B_S`` of the host's
   previous one ended (a sender with more data filling its slots early);
4. **forwarding**: received records that the host follows with a record of its own within
   ``FORWARD_S``, in excess of what independent schedules give at that window's rates (relays
   that forward at once);
5. **sizes**: the mean record size a host sends, as a z-score against the trial's record sizes;
6. **retransmissions** of cover segments (a link loaded past its share).

Each host's series is a robust z-score against its own windows (median, MAD, floored by the
Poisson noise of a count), so the unknown rate and load cancel. ``detections``: per family the
mean of the two largest host z-scores per window, and ``cover`` their maximum, the primary
detector without rehearsal; with rehearsal labels, ``classifier``, a random forest over these
window statistics plus the passive window features but those that tell a window's position in
the capture (``attacks.features.CAPTURE_RELATIVE``, as for every classifier: one that learns
when a migration usually runs scores a migration that left no trace at all;
``attacks.detection.leave_one_seed_out``: never trained on the trial's own seed, and only on
trials of the same arm: with cover traffic or without). Alarms of ``cover`` use the 99th
percentile of the other seeds' normal windows.

**Tracing** (``rank_and_trace``): in the suspect windows (``attacks.identify.suspect_windows`` of
the primary detection) each directed host pair's cover bytes and forwarding count are z-scored
against that pair's other windows; pairs above ``EDGE_Z`` are the path. The destination ranking
is each host's excess inbound minus outbound (records, bytes, path edges), less its forwarding
(relays pass bytes on, a destination keeps them), plus how much its tenant connections grew: at
the capture's one moment where a host's connections went over to another (``tenant_move``, when
that stands out: a VM that answers at its new host's address takes its traffic there), else
from before the suspect windows to after them (``tenant_shift``); the source ranking the
reverse. When nothing stands out the rankings are those sums over noise, which is chance.

A capture without cover traffic leaves every cover statistic at 0 (notes say so); the
classifier then still sees the passive features. The cover design's constants are copied below
with the file they come from (``attacks`` must not import ``hosts``);
``tests/unit/test_attacks_coveraware.py`` checks them against the project.

Registered in ``attacks.pipeline.ATTACKERS`` as ``"cover-aware"``. Callers: the pipeline, tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks import designaware
from attacks.capture import TCP_ACK, TCP_SYN, int_to_ip
from attacks.designaware import COVER_PORT  # the cover port, copied there from the project
from attacks.detection import Detection, WindowFeatures, leave_one_seed_out
from attacks.evidence import transfers
from attacks.identify import HostRanking, suspect_windows
from attacks.relaygraph import RelayGraph
from attacks.view import AttackContext, AttackerView, AttackResult

# --- the cover design as published (copied; tests/unit/test_attacks_coveraware.py compares) ---
RECORD_MIN, RECORD_MAX = 1024, 16384  # hosts/protocol/cover.py CoverSettings record sizes
FLOW_CAP_BYTES = 1_000_000  # hosts/protocol/cover.py CoverSettings.flow_cap_bytes
FLOW_MSS = 1460  # hosts/workload.py MSS: the flow-size CDFs count packets of this size
# hosts/workload.py CDFS["websearch"] (CoverSettings.flow_cdf): (packets, cumulative probability)
WEBSEARCH_CDF = ((1, 0.0), (6, 0.15), (13, 0.2), (19, 0.3), (33, 0.4), (53, 0.53), (133, 0.6),
                 (667, 0.7), (1333, 0.8), (3333, 0.9), (6667, 0.97), (20000, 1.0))

# --- the attacker's own choices -----------------------------------------------------------
GAP_S = 0.002  # a direction quiet this long ends a record
B2B_S = 0.001  # a record starting this soon after the sender's previous one is back-to-back
FORWARD_S = 0.005  # a record sent this soon after one was received is a forward
OVERSIZE = 1.1  # records above this times the largest the design sends are merged ones
EDGE_Z = 3.0  # a host pair whose suspect-window excess is above this is a path edge
MAX_EDGES = 12
MOVE_Z = 5.0  # a rise plus a drop of tenant connections at one split this large is a move
DEFAULT_THRESHOLD = 4.0  # the cover statistic's alarm threshold without rehearsal
FAMILIES = {  # detector name → the host features it reads
    "volume": ("out_bytes", "in_bytes", "out_records", "in_records", "net", "missing"),
    "churn": ("opens_out", "opens_in"),
    "burst": ("oversize", "b2b"),
    "forward": ("forward",),
    "size": ("size",),
    "retrans": ("retrans",),
}
TWO_SIDED = {"net", "size"}
def cover_records(packets: np.ndarray, port: int = COVER_PORT) -> tuple[np.ndarray, np.ndarray]:
    """The cover records of a capture and its retransmitted cover segments (rows of
    ``packets``): data segments on ``port``, each direction of a connection cut where it is
    quiet for ``GAP_S``; a segment whose (connection direction, seq) was seen before is a
    retransmission and not part of a record."""
    on = (packets["proto"] == 6) & (packets["plen"] > 0) & (
        (packets["sport"] == port) | (packets["dport"] == port))
    p = packets[on]
    if not len(p):
        return transfers(p), p
    hosts = p["src"].astype(np.uint64) << np.uint64(32) | p["dst"].astype(np.uint64)
    ports = p["sport"].astype(np.uint64) << np.uint64(16) | p["dport"].astype(np.uint64)
    order = np.lexsort([p["ts"], p["seq"], ports, hosts])
    h, q, s = hosts[order], ports[order], p["seq"][order]
    dup = np.zeros(len(p), dtype=bool)
    dup[1:] = (h[1:] == h[:-1]) & (q[1:] == q[:-1]) & (s[1:] == s[:-1])
    retrans = p[order[dup]]
    # the records: each connection direction's bursts (attacks.evidence), by start time
    return transfers(p[np.sort(order[~dup])], burst_gap_s=GAP_S), retrans


@dataclass
class CoverFeatures:
    """Per (window, host) cover features of one view (``raw``), their robust z-scores (``z``),
    and the per-(window, pair) matrices the tracing reads."""

    hosts: np.ndarray  # sorted integer addresses
    raw: dict[str, np.ndarray]  # name → (windows, hosts)
    z: dict[str, np.ndarray]
    pairs: np.ndarray  # (src index, dst index) per pair column
    pair_bytes: np.ndarray  # (windows, pairs)
    pair_forward: np.ndarray  # (windows, pairs): forwards whose in- or out-record is that pair
    pair_expected: np.ndarray  # (windows, pairs): those forwards' count under independence
    n_records: int
    tenant: np.ndarray  # (windows, hosts): tenant connections opened, either end


def _index(hosts: np.ndarray, ips: np.ndarray) -> np.ndarray:
    return np.searchsorted(hosts, ips)


def _matrix(win: np.ndarray, host: np.ndarray, nw: int, nh: int,
            weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(win * nh + host, weights=weights, minlength=nw * nh)[: nw * nh].reshape(
        nw, nh).astype(float)


def host_z(m: np.ndarray, unit: float = 1.0) -> np.ndarray:
    """Each host's column against its own windows: ``(x − median) / scale``, the scale
    1.4826·MAD floored by the Poisson noise of a count of ``unit``-sized items at the median."""
    med = np.median(m, axis=0)
    mad = 1.4826 * np.median(np.abs(m - med), axis=0)
    floor = np.sqrt(np.abs(med) * unit) + 0.5 * unit
    return (m - med) / np.maximum(mad, floor)


def cover_features(view: AttackerView, port: int = COVER_PORT) -> CoverFeatures:
    """The cover features of one view (see the module docstring)."""
    f, pk = view.features, view.packets
    nw = len(f.window_starts)
    t0, w = float(f.window_starts[0]) if nw else 0.0, f.window_s
    hosts = np.union1d(pk["src"], pk["dst"]) if len(pk) else np.zeros(0, dtype=np.uint32)
    nh = len(hosts)
    rec, retrans = cover_records(pk, port)
    names = [n for fam in FAMILIES.values() for n in fam]

    def widx(t: np.ndarray) -> np.ndarray:
        return np.clip(((t - t0) // w).astype(np.int64), 0, nw - 1)

    # the tenants' own connections (opened off the cover port, at either end), for tracing only:
    # counts, not bytes, which one big flow would swamp
    ten = (pk["proto"] == 6) & ((pk["flags"] & (TCP_SYN | TCP_ACK)) == TCP_SYN) & (
        pk["sport"] != port) & (pk["dport"] != port)
    tw = widx(pk["ts"][ten])
    tenant = (_matrix(tw, _index(hosts, pk["src"][ten]), nw, nh)
              + _matrix(tw, _index(hosts, pk["dst"][ten]), nw, nh)) if nh else np.zeros((nw, 0))
    if not len(rec) or not nh:
        zero = {n: np.zeros((nw, nh)) for n in names}
        return CoverFeatures(hosts, zero, dict(zero), np.zeros((0, 2), dtype=np.int64),
                             np.zeros((nw, 0)), np.zeros((nw, 0)), np.zeros((nw, 0)), 0, tenant)

    s, d, rw = _index(hosts, rec["src"]), _index(hosts, rec["dst"]), widx(rec["start"])
    size = rec["bytes"]
    raw: dict[str, np.ndarray] = {
        "out_bytes": _matrix(rw, s, nw, nh, size), "in_bytes": _matrix(rw, d, nw, nh, size),
        "out_records": _matrix(rw, s, nw, nh), "in_records": _matrix(rw, d, nw, nh),
    }
    raw["net"] = raw["out_bytes"] - raw["in_bytes"]
    raw["missing"] = -raw["out_records"]  # skipped slots (a link whose queue is full skips)
    syn = (pk["proto"] == 6) & ((pk["flags"] & (TCP_SYN | TCP_ACK)) == TCP_SYN) & (
        pk["dport"] == port)
    sw = widx(pk["ts"][syn])
    raw["opens_out"] = _matrix(sw, _index(hosts, pk["src"][syn]), nw, nh)
    raw["opens_in"] = _matrix(sw, _index(hosts, pk["dst"][syn]), nw, nh)
    biggest = max(RECORD_MAX, float(np.quantile(size, 0.95))) * OVERSIZE
    big = size > biggest
    raw["oversize"] = _matrix(rw[big], s[big], nw, nh)
    # back-to-back: the sender's records in time order, a start close after the previous end
    o = np.lexsort([rec["start"], s])
    b2b = np.zeros(len(rec), dtype=bool)
    b2b[o[1:]] = (s[o[1:]] == s[o[:-1]]) & (rec["start"][o[1:]] - rec["end"][o[:-1]] < B2B_S)
    raw["b2b"] = _matrix(rw[b2b], s[b2b], nw, nh)
    # forwarding: a received record's end, then the receiver's next record start within FORWARD_S
    span = float(rec["end"].max() - rec["start"].min()) + 10.0
    base = float(rec["start"].min())
    out_key = s[o] * span + (rec["start"][o] - base)
    q = d * span + (rec["end"] - base)
    j = np.searchsorted(out_key, q, side="left")
    ok = j < len(o)
    jj = o[np.minimum(j, len(o) - 1)]
    ok &= (s[jj] == d) & (rec["start"][jj] - rec["end"] < FORWARD_S)
    fwd_w = widx(rec["end"][ok])
    count = _matrix(fwd_w, d[ok], nw, nh)
    rate_out = raw["out_records"] / w
    expected = raw["in_records"] * (1.0 - np.exp(-rate_out * FORWARD_S))
    raw["forward"] = count - expected
    # record sizes: each host-window's mean against the trial's sizes (a z-score already)
    mu, sd = float(np.median(size)), float(np.std(size)) or 1.0
    n = raw["out_records"]
    with np.errstate(invalid="ignore", divide="ignore"):
        raw["size"] = np.where(n > 0, (raw["out_bytes"] / np.maximum(n, 1) - mu)
                               / (sd / np.sqrt(np.maximum(n, 1))), 0.0)
    rt = retrans
    raw["retrans"] = _matrix(widx(rt["ts"]), _index(hosts, rt["src"]), nw, nh)
    mean_size = float(size.mean())
    z = {}
    for name, m in raw.items():
        if name == "size":
            z[name] = m
        else:
            z[name] = host_z(m, mean_size if name in ("out_bytes", "in_bytes", "net") else 1.0)
    # pairs: bytes per (window, src → dst), and forwards charged to both of their pairs
    key = s.astype(np.int64) * nh + d
    pair_keys, pcol = np.unique(key, return_inverse=True)
    npair = len(pair_keys)
    pair_bytes = _matrix(rw, pcol, nw, npair, size)
    fk = np.concatenate([pcol[ok], pcol[jj[ok]]])
    pair_forward = _matrix(np.concatenate([fwd_w, fwd_w]), fk, nw, npair)
    pairs = np.stack([pair_keys // nh, pair_keys % nh], axis=1)
    # what independent schedules give: a received record meets one of the receiver's own within
    # FORWARD_S with probability p (its out-rate in the window), charged to its pair and,
    # by the out-pairs' shares, to those
    pr = _matrix(rw, pcol, nw, npair)
    p_hit = 1.0 - np.exp(-rate_out * FORWARD_S)  # (windows, hosts)
    a, b = pairs[:, 0], pairs[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(raw["out_records"][:, a] > 0, pr / np.maximum(raw["out_records"][:, a],
                                                                          1), 0.0)
    pair_expected = pr * p_hit[:, b] + raw["in_records"][:, a] * p_hit[:, a] * share
    return CoverFeatures(hosts, raw, z, pairs, pair_bytes, pair_forward, pair_expected, len(rec),
                         tenant)


def window_stats(cf: CoverFeatures) -> dict[str, np.ndarray]:
    """Per feature and window: ``<name>:top`` (the largest host z), ``<name>:top2`` (mean of the
    two largest) and ``<name>:sum`` (the hosts' sum over √hosts); two-sided features by size."""
    out = {}
    for name, zm in cf.z.items():
        zp = np.abs(zm) if name in TWO_SIDED else np.clip(zm, 0, None)
        nw, nh = zp.shape
        if not nh:
            top = top2 = tot = np.zeros(nw)
        else:
            srt = -np.sort(-zp, axis=1)
            top, top2 = srt[:, 0], srt[:, :2].mean(axis=1)
            tot = zm.sum(axis=1) / np.sqrt(nh)
        out[f"{name}:top"], out[f"{name}:top2"], out[f"{name}:sum"] = top, top2, tot
    return out


def _window_z(x: np.ndarray) -> np.ndarray:
    med = np.median(x) if len(x) else 0.0
    mad = 1.4826 * np.median(np.abs(x - med)) if len(x) else 0.0
    return (x - med) / max(mad, 0.5)


def family_scores(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per detector family: the largest of its features' ``top2`` statistics, each against the
    trial's own windows; ``cover``: the largest over families."""
    out = {}
    for fam, names in FAMILIES.items():
        parts = [_window_z(stats[f"{n}:top2"]) for n in names]
        parts += [_window_z(np.abs(stats[f"{n}:sum"])) for n in names if n not in TWO_SIDED]
        out[fam] = np.clip(np.max(parts, axis=0), 0, None)
    out["cover"] = np.max([out[f] for f in FAMILIES], axis=0)
    return out


def is_virtual(ip: int) -> bool:
    """``designaware.is_virtual`` for an address as the packet table holds it (an int)."""
    return designaware.is_virtual(int_to_ip(int(ip)))


def _excess_z(m: np.ndarray, suspect: np.ndarray, unit: float) -> np.ndarray:
    """Per column: the suspect windows' total against the other windows' rate, as a Poisson
    z-score of ``unit``-sized items (all windows are the reference when none is left)."""
    rest = ~suspect if (~suspect).any() else np.ones(len(suspect), dtype=bool)
    expected = m[rest].mean(axis=0) * suspect.sum()
    return (m[suspect].sum(axis=0) - expected) / np.sqrt((np.abs(expected) + unit) * unit)


def tenant_shift(tenant: np.ndarray, suspect: np.ndarray) -> np.ndarray:
    """Per host: its tenant connections per window after the suspect windows minus before
    them, as a Poisson z-score (a VM that answers at its new host's address moves its
    connections there; 0 without windows on both sides)."""
    nw = len(suspect)
    if not suspect.any() or not tenant.size:
        return np.zeros(tenant.shape[1])
    on = np.nonzero(suspect)[0]
    before, after = np.arange(nw) < on[0], np.arange(nw) > on[-1]
    if not before.any() or not after.any():
        return np.zeros(tenant.shape[1])
    a, b = tenant[after].sum(axis=0), tenant[before].sum(axis=0)
    na, nb = after.sum(), before.sum()
    rate = (a + b + 1.0) / (na + nb)  # connections per window, pooled (Poisson)
    return (a / na - b / nb) / np.sqrt(rate * (1.0 / na + 1.0 / nb))


def tenant_move(tenant: np.ndarray, margin: int = 3) -> tuple[np.ndarray, float]:
    """The capture's best split point for a VM taking its tenant connections from one host to
    another: per split, each host's Poisson z of after − before (``tenant_shift``'s statistic);
    the split where the largest rise plus the largest drop peaks. Returns each host's z there
    and that peak (0 and zeros when the capture is too short)."""
    nw, nh = tenant.shape
    if nh < 2 or nw < 2 * margin + 1:
        return np.zeros(nh), 0.0
    cum = np.cumsum(tenant, axis=0)
    total = cum[-1]
    k = np.arange(margin, nw - margin)  # split after window k - 1
    nb = k[:, None].astype(float)
    na = nw - nb
    b = cum[k - 1]
    a = total - b
    rate = (total + 1.0) / nw
    z = (a / na - b / nb) / np.sqrt(rate * (1.0 / na + 1.0 / nb))
    joint = z.max(axis=1) - z.min(axis=1)
    best = int(np.argmax(joint))
    return z[best], float(joint[best])


def rank_and_trace(cf: CoverFeatures, suspect: np.ndarray, candidates: set[int] | None,
                   rng: np.random.Generator) -> tuple[HostRanking, list[tuple[str, str]]]:
    """Destination and source rankings and the path edges from the suspect windows."""
    hosts = cf.hosts
    keep = np.array([not is_virtual(h) and (candidates is None or int(h) in candidates)
                     for h in hosts], dtype=bool)
    nh = len(hosts)
    if not nh or not keep.any():
        return HostRanking([], []), []
    S = suspect if suspect.any() else np.ones(len(suspect), dtype=bool)
    root = np.sqrt(S.sum())

    def excess(name: str) -> np.ndarray:
        return np.clip(cf.z[name][S], 0, None).sum(axis=0) / root

    gain = excess("in_bytes") + excess("in_records") - cf.z["net"][S].sum(axis=0) / root
    loss = excess("out_bytes") + excess("out_records") + cf.z["net"][S].sum(axis=0) / root
    loss += excess("b2b") + excess("oversize")
    fwd = excess("forward")
    zmove, joint = tenant_move(cf.tenant)
    # one host's tenant connections went over to another at one moment: that moment rules;
    # else the change across the suspect windows
    moved = 3.0 * zmove if joint > MOVE_Z else tenant_shift(cf.tenant, S)
    edges: list[tuple[str, str]] = []
    e_in, e_out = np.zeros(nh), np.zeros(nh)
    if len(cf.pairs):
        unit = float(max(cf.pair_bytes.sum(), 1.0) / max(cf.n_records, 1))
        score = (np.clip(_excess_z(cf.pair_bytes, S, unit), 0, None)
                 + np.clip((cf.pair_forward[S].sum(axis=0) - cf.pair_expected[S].sum(axis=0))
                           / np.sqrt(cf.pair_expected[S].sum(axis=0) + 1.0), 0, None))
        strong = np.clip(score - EDGE_Z, 0, None)
        np.add.at(e_out, cf.pairs[:, 0], strong)
        np.add.at(e_in, cf.pairs[:, 1], strong)
        top = np.argsort(-score, kind="stable")[:MAX_EDGES]
        for k in top[score[top] > EDGE_Z]:
            a, b = int(cf.pairs[k, 0]), int(cf.pairs[k, 1])
            if keep[a] and keep[b]:
                edges.append((int_to_ip(hosts[a]), int_to_ip(hosts[b])))
    jitter = rng.random(nh) * 1e-9  # ties (nothing stands out): a seeded random order
    # the path's ends: a sink (edges in, none out) is a destination, a root a source
    dst = gain - loss - fwd + e_in - e_out + np.where(e_out == 0, e_in, 0.0) + moved + jitter
    src = loss - gain - fwd + e_out - e_in + np.where(e_in == 0, e_out, 0.0) - moved + jitter
    idx = np.nonzero(keep)[0]
    d_ord = idx[np.argsort(-dst[idx], kind="stable")]
    s_ord = idx[np.argsort(-src[idx], kind="stable")]
    ranking = HostRanking([(int_to_ip(hosts[i]), float(src[i])) for i in s_ord],
                          [(int_to_ip(hosts[i]), float(dst[i])) for i in d_ord])
    if not edges and len(s_ord) and len(d_ord):
        s0 = int_to_ip(hosts[s_ord[0]])
        d0 = next((int_to_ip(hosts[i]) for i in d_ord if i != s_ord[0]), None)
        edges = [(s0, d0)] if d0 else []
    return ranking, sorted(set(edges))


def _stat_matrix(stats: dict[str, np.ndarray], nw: int) -> np.ndarray:
    cols = [stats[k] for k in sorted(stats)]
    return np.column_stack(cols) if cols else np.zeros((nw, 0))


def attack(views: list[AttackerView], ctx: AttackContext) -> list[AttackResult]:
    """The cover-aware attacker on one vantage point's views of every trial."""
    cfs = [cover_features(v) for v in views]
    stats = [window_stats(cf) for cf in cfs]
    fams = [family_scores(s) for s in stats]
    has_cover = [cf.n_records > 0 for cf in cfs]
    labels = list(ctx.labels) if ctx.labels else [None] * len(views)
    groups = list(ctx.groups) if ctx.groups else [f"view:{i}" for i in range(len(views))]
    rehearsed = any(y is not None for y in labels)
    # the classifier: trained within the arm (cover traffic or none), never on its own seed
    trained: dict[int, Detection | str] = {}
    if rehearsed:
        for arm in (True, False):
            idx = [i for i in range(len(views)) if has_cover[i] == arm]
            if not idx:
                continue
            feats = []
            for i in idx:
                f = views[i].features
                extra = np.clip(_stat_matrix(stats[i], len(f.window_starts)), 0, None)
                if f.extra is not None:
                    extra = np.hstack([extra, np.asarray(f.extra).reshape(len(extra), -1)])
                # context_matrix leaves out the capture-relative features
                feats.append(WindowFeatures(f.window_starts, f.window_s, f.X, f.Z, f.windows,
                                            extra))
            ys = [labels[i] if labels[i] is not None
                  else np.zeros(len(views[i].features.window_starts), dtype=bool) for i in idx]
            res = leave_one_seed_out(feats, ys, [groups[i] for i in idx], seed=ctx.seed)
            trained.update(dict(zip(idx, res, strict=True)))
    results = []
    for i, (v, cf) in enumerate(zip(views, cfs, strict=True)):
        f = v.features
        # the cover statistic's threshold: the other seeds' normal windows of the same arm
        negs = [fams[j]["cover"][~y] for j, y in enumerate(labels)
                if y is not None and groups[j] != groups[i] and has_cover[j] == has_cover[i]]
        negs = [n for n in negs if len(n)]
        thr = float(np.quantile(np.concatenate(negs), 0.99)) if negs else DEFAULT_THRESHOLD
        thr = max(thr, 1.0)
        notes = [f"cover records={cf.n_records}", f"threshold={thr:.3g}"]
        if not cf.n_records:
            notes.append(f"no cover traffic on port {COVER_PORT}: every cover statistic is 0")
        dets = {name: Detection(name, f.window_starts, f.window_s, sc, sc > thr, thr)
                for name, sc in fams[i].items()}
        dets["cover"].notes.extend(notes)
        k = trained.get(i)
        if isinstance(k, Detection):
            dets["classifier"] = k
            primary = k
        else:
            if isinstance(k, str):
                dets["cover"].notes.append(k)
            primary = dets["cover"]
        rng = np.random.default_rng([ctx.seed, v.trial, 11])
        ranking, edges = rank_and_trace(cf, suspect_windows(primary), ctx.candidates, rng)
        results.append(AttackResult(
            attacker=ctx.name, trial=v.trial, detection=primary, detections=dets,
            ranking=ranking, graph=RelayGraph(edges=edges),
            aliases={int_to_ip(a): int_to_ip(b) for a, b in v.aliases.items()},
        ))
    return results
