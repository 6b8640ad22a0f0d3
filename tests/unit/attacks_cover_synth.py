"""Synthetic captures of the cover arm, for the cover-aware attacker's tests (vectorised, seeded).

What it models, after the cover design of issue 14 (``hosts/protocol/cover.py``):
- **cover**: every tenant host sends records to every other on a Poisson schedule drawn from
  ``(seed, host)`` only (rate ``rate`` bytes/s per host, sizes uniform in ``[rmin, rmax]`` on the
  wire, peers uniform), over TCP connections to port 8443 that the sender opens (SYN, a
  three-record handshake sized like records) and closes after a byte budget drawn from the
  web-search flow-size CDF; records cut into MSS segments at the link's rate, delayed ACKs back;
- **background**: tenant request/response flows on 8080 (``attacks_synth.background``);
- **a migration**, ``kind`` says how it is carried:
  - ``"ideal"``: relay bytes replace padding inside the scheduled records: the packets are those
    of the run without a migration, bit for bit (the design's claim);
  - ``"additive"``: relay records sent on top of the schedule (source → intermediates →
    leader → destination), the naive implementation;
  - ``"immediate"``: relays forward at once: every record the source sends an intermediate
    during the migration makes that intermediate send its next scheduled record to the leader a
    few ms later, and the leader likewise to the destination (volume per window unchanged; only
    timing betrays it);
  - ``"backlog"``: the source sends its scheduled records in back-to-back groups (a sender with
    more data filling slots early; volume per window unchanged).

Traffic starts before and ends after the captured ``duration`` (no start-up transient), and the
migration starts anywhere in it, so a window's position says nothing.
"""

from __future__ import annotations

import numpy as np

from attacks.capture import PACKET_DTYPE, ip_to_int
from attacks.truth import TrialTruth
from tests.unit.attacks_synth import BASE_EPOCH, HDR, MSS, SynthTrial, Traffic, background, host_ip

COVER_PORT = 8443
WEBSEARCH = [(1, 0.0), (6, 0.15), (13, 0.2), (19, 0.3), (33, 0.4), (53, 0.53), (133, 0.6),
             (667, 0.7), (1333, 0.8), (3333, 0.9), (6667, 0.97), (20000, 1.0)]
KINDS = ("ideal", "additive", "immediate", "backlog")
LINK_BPS = 100e6
WARM_S = 10.0


def _budgets(rng: np.random.Generator, n: int, cap: int = 1_000_000) -> np.ndarray:
    x, p = np.array([a for a, _ in WEBSEARCH]), np.array([b for _, b in WEBSEARCH])
    return np.clip(np.interp(rng.random(n), p, x) * 1460, 64, cap)


def schedule(seed: int, n_hosts: int, t0: float, duration: float, rate: float,
             rmin: int, rmax: int) -> dict[str, np.ndarray]:
    """Every host's cover records: times, sender, receiver, size (from ``(seed, host)`` only)."""
    parts = []
    lam = rate / ((rmin + rmax) / 2)
    for h in range(n_hosts):
        rng = np.random.default_rng([seed, h, 77])
        n = int(lam * duration * 1.5) + 20
        t = t0 + np.cumsum(rng.exponential(1 / lam, n))
        t = t[t < t0 + duration]
        peer = rng.integers(0, n_hosts - 1, len(t))
        peer = peer + (peer >= h)
        size = rng.integers(rmin, rmax + 1, len(t))
        parts.append((t, np.full(len(t), h), peer, size))
    cat = [np.concatenate(c) for c in zip(*parts, strict=True)]
    order = np.argsort(cat[0], kind="stable")
    return {"t": cat[0][order], "src": cat[1][order], "dst": cat[2][order],
            "size": cat[3][order]}


def _poisson_records(rng, t0, t1, rate, a, b, rmin, rmax) -> list[np.ndarray]:
    lam = rate / ((rmin + rmax) / 2)
    n = rng.poisson(lam * (t1 - t0))
    t = np.sort(rng.uniform(t0, t1, n))
    return [t, np.full(n, a), np.full(n, b), rng.integers(rmin, rmax + 1, n)]


def migrate(rec: dict[str, np.ndarray], kind: str, rng: np.random.Generator, start: float,
            end: float, src: int, inters: list[int], leader: int, dst: int, rmin: int,
            rmax: int, extra_rate: float) -> dict[str, np.ndarray]:
    """The schedule as the migration ``kind`` changes it (``KINDS``)."""
    if kind == "ideal":
        return rec
    rec = {k: v.copy() for k, v in rec.items()}
    if kind == "additive":
        extra = [_poisson_records(rng, start, end, extra_rate / len(inters), src, i, rmin, rmax)
                 for i in inters]
        extra += [_poisson_records(rng, start, end, extra_rate / len(inters), i, leader, rmin,
                                   rmax) for i in inters]
        extra.append(_poisson_records(rng, start, end, extra_rate, leader, dst, rmin, rmax))
        cat = [np.concatenate([rec[k]] + [e[j] for e in extra])
               for j, k in enumerate(("t", "src", "dst", "size"))]
        order = np.argsort(cat[0], kind="stable")
        return {k: c[order] for k, c in zip(("t", "src", "dst", "size"), cat, strict=True)}
    moved = np.zeros(len(rec["t"]), dtype=bool)
    if kind == "immediate":
        def forward(frm: list[int], relay: int, to: int) -> None:
            arrivals = np.nonzero(np.isin(rec["src"], frm) & (rec["dst"] == relay)
                                  & (rec["t"] >= start) & (rec["t"] <= end))[0]
            for k in arrivals:
                t_arr = rec["t"][k] + rec["size"][k] * 8 / LINK_BPS
                nxt = np.nonzero((rec["src"] == relay) & (rec["t"] > t_arr) & ~moved)[0]
                if not len(nxt):
                    continue
                j = nxt[0]
                rec["t"][j] = t_arr + rng.uniform(0.0005, 0.004)
                rec["dst"][j] = to
                moved[j] = True
        for i in inters:
            forward([src], i, leader)
        forward(inters, leader, dst)
    elif kind == "backlog":
        mine = np.nonzero((rec["src"] == src) & (rec["t"] >= start) & (rec["t"] <= end))[0]
        for g in range(0, len(mine) - 3, 4):
            grp = mine[g:g + 4]
            t = rec["t"][grp[0]]
            for j in grp:
                rec["t"][j] = t
                t += rec["size"][j] * 8 / LINK_BPS + 0.0001
    else:
        raise ValueError(f"migration kind {kind!r}: use one of {KINDS}")
    order = np.argsort(rec["t"], kind="stable")
    return {k: v[order] for k, v in rec.items()}


def _rows(n: int) -> np.ndarray:
    a = np.zeros(n, dtype=PACKET_DTYPE)
    a["proto"], a["ttl"] = 6, 64
    return a


def packets(rec: dict[str, np.ndarray], ips: np.ndarray, seed: int, rmin: int,
            rmax: int) -> np.ndarray:
    """Records → TCP packets: connections per (sender, receiver) that close after a budget."""
    rng = np.random.default_rng([seed, 991])
    n = len(rec["t"])
    pair = rec["src"] * 1000 + rec["dst"]
    order = np.lexsort([rec["t"], pair])
    conn = np.zeros(n, dtype=np.int64)
    p_sorted = pair[order]
    starts = np.r_[0, np.nonzero(np.diff(p_sorted))[0] + 1, n]
    next_conn = 0
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        idx = order[a:b]
        before = np.concatenate([[0], np.cumsum(rec["size"][idx])[:-1]])
        bounds = np.cumsum(_budgets(rng, len(idx) + 1))
        conn[idx] = next_conn + np.searchsorted(bounds, before, side="right")
        next_conn += len(idx) + 1
    cid, conn = np.unique(conn, return_inverse=True)
    nc = len(cid)
    first = np.full(nc, np.inf)
    np.minimum.at(first, conn, rec["t"])
    last = np.full(nc, -np.inf)
    np.maximum.at(last, conn, rec["t"] + rec["size"] * 8 / LINK_BPS)
    c_host = np.zeros(nc, dtype=np.int64)
    s_host = np.zeros(nc, dtype=np.int64)
    c_host[conn], s_host[conn] = rec["src"], rec["dst"]
    cport = 20000 + (np.arange(nc) % 40000)
    rtt = rng.uniform(0.0002, 0.001, nc)
    # the handshake: three records (client, server, client) sized like records, before the first
    hs_t = first[:, None] - np.array([0.03, 0.02, 0.01])[None, :]
    hs_from_c = np.array([True, False, True])
    # every message: time, connection, from client, size
    m_t = np.concatenate([hs_t.ravel(), rec["t"]])
    m_c = np.concatenate([np.repeat(np.arange(nc), 3), conn])
    m_fc = np.concatenate([np.tile(hs_from_c, nc), np.ones(n, dtype=bool)])
    m_size = np.concatenate([rng.integers(rmin, rmax + 1, 3 * nc), rec["size"]])
    # segments
    nseg = -(-m_size // MSS)
    seg_m = np.repeat(np.arange(len(m_t)), nseg)
    k = np.arange(len(seg_m)) - np.repeat(np.cumsum(nseg) - nseg, nseg)
    seg_len = np.where(k < nseg[seg_m] - 1, MSS, m_size[seg_m] - MSS * (nseg[seg_m] - 1))
    seg_t = m_t[seg_m] + k * (MSS + HDR) * 8 / LINK_BPS
    seg_c, seg_fc = m_c[seg_m], m_fc[seg_m]
    # sequence numbers per connection direction, in time order
    o = np.lexsort([seg_t, seg_fc, seg_c])
    d_key = seg_c[o] * 2 + seg_fc[o]
    cum = np.cumsum(seg_len[o])
    grp_start = np.r_[True, d_key[1:] != d_key[:-1]]
    base = np.maximum.accumulate(np.where(grp_start, cum - seg_len[o], 0))
    seq = np.zeros(len(o), dtype=np.int64)
    seq[o] = 1 + cum - seg_len[o] - base
    ack_t = seg_t[k % 2 == 1] + rtt[seg_c[k % 2 == 1]] / 2
    ack_c, ack_fc = seg_c[k % 2 == 1], ~seg_fc[k % 2 == 1]
    data = _rows(len(seg_t))
    data["ts"], data["plen"], data["seq"] = seg_t, seg_len, seq
    data["flags"] = np.where(k == nseg[seg_m] - 1, 0x18, 0x10)
    acks = _rows(len(ack_t))
    acks["ts"], acks["flags"] = ack_t, 0x10
    ctl = _rows(5 * nc)
    open_t = hs_t[:, 0] - rtt
    ctl["ts"] = np.concatenate([open_t - rtt, open_t - rtt / 2, open_t, last + 0.001,
                                last + 0.001 + rtt])
    ctl["flags"] = np.repeat([0x02, 0x12, 0x10, 0x11, 0x11], nc)
    ctl_c = np.tile(np.arange(nc), 5)
    ctl_fc = np.repeat([True, False, True, True, False], nc)
    out = []
    for rows, c, fc in ((data, seg_c, seg_fc), (acks, ack_c, ack_fc), (ctl, ctl_c, ctl_fc)):
        cl, sv = ips[c_host[c]], ips[s_host[c]]
        rows["src"], rows["dst"] = np.where(fc, cl, sv), np.where(fc, sv, cl)
        rows["sport"] = np.where(fc, cport[c], COVER_PORT)
        rows["dport"] = np.where(fc, COVER_PORT, cport[c])
        rows["length"] = rows["plen"] + HDR
        rows["ipid"] = rng.integers(0, 65536, len(rows))
        out.append(rows)
    a = np.concatenate(out)
    return a[np.argsort(a["ts"], kind="stable")]


def cover_trial(trial: int, mode: str, seed: int, kind: str = "ideal", n_hosts: int = 10,
                duration: float = 30.0, rate: float = 200e3, rmin: int = 1024,
                rmax: int = 16384, extra_rate: float = 400e3, flows_per_s: float = 4.0,
                migration_s: float = 8.0, moved: bool = False,
                start_s: float | None = None) -> SynthTrial:
    """One trial of the cover arm: ``mode`` "stealth" (a migration carried as ``kind`` says) or
    "background" (none). Trials of one ``seed`` share their cover schedule and background, and
    the migration's roles and time (drawn from the seed too). With ``moved``, the source's
    tenant traffic after the migration is the destination's (a VM that answers at its host's
    address). ``start_s`` starts the migration that long into the capture in every trial
    (default: anywhere, drawn from the seed)."""
    if kind not in KINDS:
        raise ValueError(f"migration kind {kind!r}: use one of {KINDS}")
    rng = np.random.default_rng(seed)
    hosts = [host_ip(i) for i in range(1, n_hosts + 1)]
    ips = np.array([ip_to_int(h) for h in hosts], dtype=np.uint32)
    t0 = BASE_EPOCH + 1000 * trial
    tr = Traffic(np.random.default_rng([seed, 5]))
    # traffic runs before and after the capture: no start-up transient inside it
    background(tr, hosts, t0 - WARM_S, duration + 2 * WARM_S, flows_per_s, 0, service_port=8080)
    rec = schedule(seed, n_hosts, t0 - WARM_S, duration + 2 * WARM_S, rate, rmin, rmax)
    pick = [int(x) for x in rng.permutation(n_hosts)[:6]]
    src, inters, leader, dst = pick[0], pick[1:4], pick[4], pick[5]
    start = t0 + rng.uniform(0.05, 0.95) * (duration - migration_s)
    if start_s is not None:  # the runner's way: the migration a fixed time into the capture
        start = t0 + start_s
    end = start + migration_s
    if mode == "stealth":
        rec = migrate(rec, kind, np.random.default_rng([seed, 3]), start, end, src, inters,
                      leader, dst, rmin, rmax, extra_rate)
    elif mode != "background":
        raise ValueError(mode)
    tenant = tr.table()
    if moved and mode == "stealth":  # the VM answers at its new host's address after the move
        a, b = ips[src], ips[dst]
        after = tenant["ts"] > end
        for col in ("src", "dst"):
            tenant[col][after & (tenant[col] == a)] = b
        tenant = tenant[tenant["src"] != tenant["dst"]]
    table = np.concatenate([tenant, packets(rec, ips, seed, rmin, rmax)])
    table = table[np.argsort(table["ts"], kind="stable")]
    table = table[(table["ts"] >= t0) & (table["ts"] < t0 + duration)]
    names = {ip: f"h{ip.rsplit('.', 1)[1]}" for ip in hosts}
    truth: dict = {"trial": trial, "mode": mode, "seed": seed,
                   "hosts": [{"host": names[ip], "ip": ip} for ip in hosts],
                   "virtual_ip": None, "intermediates": [], "leader": None,
                   "migration_start": None, "migration_end": None, "source": None,
                   "destination": None, "paths": []}
    if mode == "stealth":
        edges = [(src, i) for i in inters] + [(i, leader) for i in inters] + [(leader, dst)]
        h = [hosts[x] for x in range(n_hosts)]
        truth.update(
            migration_start=float(start), migration_end=float(end),
            source={"host": names[h[src]], "ip": h[src]},
            destination={"host": names[h[dst]], "ip": h[dst]},
            intermediates=[{"host": names[h[i]], "ip": h[i]} for i in inters],
            leader={"host": names[h[leader]], "ip": h[leader]},
            paths=[{"from": names[h[a]], "to": names[h[b]], "switches": []} for a, b in edges])
    return SynthTrial(table=table, truth=TrialTruth.from_dict(truth))
