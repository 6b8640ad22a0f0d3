"""Synthetic traffic for the attacker tests: background flows plus a migration, written as pcaps.

What it models (all seeded):
- **background**: request/response TCP flows between random host pairs (a few busy servers draw more
  requests), Poisson arrivals, heavy-tailed response sizes (a mixture shaped like DCTCP's web-search
  CDF: mostly small, a long tail to several MB), per-flow rates 2-40 Mbit/s with jitter, delayed
  ACKs, handshakes and FINs; plus occasional **backups**, bulk transfers of 6-20 MB at 12-30 Mbit/s,
  so that a big flow alone does not mean "migration";
- **direct migration**: one TCP connection source → destination carrying pre-copy rounds (full
  memory then shrinking dirty rounds, short pauses between) at 40-90 Mbit/s;
- **relay migration** (the stealth pattern, over one persistent connection per hop as ``hosts``
  runs it): chunk sizes drawn from the background's size mix leave source → intermediates (round
  robin) with exponential gaps; each intermediate forwards a chunk to the leader a few ms after it
  has it; the leader forwards in order to the destination (optionally through a virtual address
  rewritten only at the destination's edge); padded key shares take the same hops, and padded
  acks travel back leader → intermediates → source.
- **the protocol's own marks**, off unless asked (``make_trial(relay_port=...,
  handshake_kind=..., ack_record=...)``): hops on a relay port, a handshake first (Noise IK's
  messages or the hello they replaced, sized as in ``hosts/channel.py``), ACK records of their
  exact size; with them the relay looks as ``hosts`` runs it today, without them it uses the
  tenants' port and shapes.

Frames are built with scapy once per connection direction (Ether/IP/TCP header template) and
patched per packet (IP length, id, checksum, TCP seq and flags); the pcap keeps only headers
(snap length 54) with the true wire length, as ``tcpdump -s 54`` would. That keeps the tests fast
while the files stay valid pcaps that Wireshark opens.
"""

from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from attacks.capture import PACKET_DTYPE, ip_to_int
from attacks.truth import RunTruth, TrialTruth, write_truth

MSS = 1448
HDR = 52  # IP 20 + TCP 32 (timestamps)
BASE_EPOCH = 1_790_000_000.0


def host_ip(i: int) -> str:
    return f"10.0.0.{i}"


@dataclass
class Conn:
    c: int
    s: int
    cport: int
    dport: int
    cseq: int
    sseq: int
    rtt: float


@dataclass
class Traffic:
    """Packet rows (PACKET_DTYPE without meaningful ``vp``) being assembled."""

    rng: np.random.Generator
    parts: list[np.ndarray] = field(default_factory=list)
    next_port: int = 33000

    def port(self) -> int:
        self.next_port += 1
        return self.next_port

    def _rows(self, ts, src, dst, sport, dport, flags, plen, seq) -> np.ndarray:
        ts, plen = np.asarray(ts, dtype=float), np.asarray(plen, dtype=np.int64)
        n = len(ts)
        a = np.zeros(n, dtype=PACKET_DTYPE)
        a["ts"], a["src"], a["dst"] = ts, src, dst
        a["sport"], a["dport"], a["proto"] = sport, dport, 6
        a["flags"], a["plen"], a["length"] = flags, plen, plen + HDR
        a["seq"], a["ttl"] = seq, 64
        a["ipid"] = (self.rng.integers(0, 65536) + np.arange(n)) & 0xFFFF
        return a

    def connect(self, t: float, client: str, server: str, dport: int) -> Conn:
        """Open a TCP connection (three-way handshake at ``t``)."""
        rng = self.rng
        conn = Conn(
            ip_to_int(client),
            ip_to_int(server),
            self.port(),
            dport,
            int(rng.integers(0, 2**31)),
            int(rng.integers(0, 2**31)),
            float(rng.uniform(0.0002, 0.001)),
        )
        self.parts += [
            self._rows([t], conn.c, conn.s, conn.cport, dport, 0x02, [0], [conn.cseq]),
            self._rows(
                [t + conn.rtt / 2], conn.s, conn.c, dport, conn.cport, 0x12, [0], [conn.sseq]
            ),
            self._rows(
                [t + conn.rtt], conn.c, conn.s, conn.cport, dport, 0x10, [0], [conn.cseq + 1]
            ),
        ]
        conn.cseq += 1
        conn.sseq += 1
        return conn

    def send(
        self,
        conn: Conn,
        t: float,
        nbytes: int,
        rate_bps: float,
        from_client: bool = True,
        psh_only: bool = False,
    ) -> float:
        """``nbytes`` of payload in MSS segments paced at ``rate_bps`` (jittered) with delayed
        ACKs back; returns the time of the last data packet."""
        rng = self.rng
        if from_client:
            snd, rcv, sp, rp, isn = conn.c, conn.s, conn.cport, conn.dport, conn.cseq
        else:
            snd, rcv, sp, rp, isn = conn.s, conn.c, conn.dport, conn.cport, conn.sseq
        nbytes = max(int(nbytes), 1)
        n = -(-nbytes // MSS)
        sizes = np.full(n, MSS, dtype=np.int64)
        sizes[-1] = nbytes - MSS * (n - 1)
        gaps = (MSS * 8 / rate_bps) * rng.gamma(4.0, 0.25, size=n)  # jittered pacing
        gaps[0] = 0.0
        ts = t + np.cumsum(gaps)
        seq = (isn + np.concatenate([[0], np.cumsum(sizes)[:-1]])) & 0xFFFFFFFF
        self.parts.append(self._rows(ts, snd, rcv, sp, rp, 0x18 if psh_only else 0x10, sizes, seq))
        ack_ts = np.concatenate([ts[1::2], ts[-1:]]) + conn.rtt / 2
        self.parts.append(self._rows(ack_ts, rcv, snd, rp, sp, 0x10, np.zeros(len(ack_ts)), 0))
        if from_client:
            conn.cseq = (isn + nbytes) & 0xFFFFFFFF
        else:
            conn.sseq = (isn + nbytes) & 0xFFFFFFFF
        return float(ts[-1])

    def close(self, conn: Conn, t: float) -> None:
        self.parts += [
            self._rows(
                [t + conn.rtt], conn.c, conn.s, conn.cport, conn.dport, 0x11, [0], [conn.cseq]
            ),
            self._rows(
                [t + 2 * conn.rtt], conn.s, conn.c, conn.dport, conn.cport, 0x11, [0], [conn.sseq]
            ),
        ]

    def transfer(
        self,
        t: float,
        client: str,
        server: str,
        nbytes: int,
        rate_bps: float,
        request: int = 300,
        upload: bool = False,
        dport: int = 80,
    ) -> float:
        """One short TCP connection; returns the time its last data packet leaves.

        Without ``upload`` the client sends ``request`` bytes and the server answers ``nbytes``;
        with ``upload`` the client itself sends ``nbytes`` (a push: a backup).
        """
        conn = self.connect(t, client, server, dport)
        t0 = t + conn.rtt
        if upload:
            end = self.send(conn, t0, nbytes, rate_bps)
        else:
            t0 = self.send(conn, t0, request, rate_bps) + conn.rtt
            end = self.send(conn, t0, nbytes, rate_bps, from_client=False)
        self.close(conn, end)
        return end

    def table(self) -> np.ndarray:
        a = np.concatenate(self.parts)
        return a[np.argsort(a["ts"], kind="stable")]


def flow_size(rng: np.random.Generator) -> int:
    """Heavy-tailed response size: web-search-like mixture, 1 KB .. 6 MB."""
    u = rng.random()
    if u < 0.55:
        size = rng.lognormal(np.log(8e3), 0.9)
    elif u < 0.88:
        size = rng.lognormal(np.log(120e3), 0.8)
    else:
        size = 400e3 * (1 - rng.random()) ** (-1 / 1.2)  # Pareto tail
    return int(min(max(size, 1000), 6e6))


def background(
    tr: Traffic,
    hosts: list[str],
    t_start: float,
    duration: float,
    flows_per_s: float,
    backups: int,
    service_port: int = 80,
) -> None:
    rng = tr.rng
    weights = rng.pareto(1.5, size=len(hosts)) + 0.3  # a few busy servers
    weights /= weights.sum()
    t = t_start
    while True:
        t += rng.exponential(1 / flows_per_s)
        if t > t_start + duration:
            break
        server = hosts[rng.choice(len(hosts), p=weights)]
        client = hosts[rng.integers(len(hosts))]
        if client == server:
            continue
        tr.transfer(t, client, server, flow_size(rng), rng.uniform(2e6, 40e6), dport=service_port)
    for _ in range(backups):
        a, b = rng.choice(len(hosts), size=2, replace=False)
        tb = t_start + rng.uniform(0, duration - 8)
        tr.transfer(
            tb,
            hosts[a],
            hosts[b],
            int(rng.uniform(6e6, 20e6)),
            rng.uniform(12e6, 30e6),
            upload=True,
            dport=873,
        )


# the hop handshake's wire sizes (u32 length prefix included), as hosts/channel.py sends them:
# the old hello = eph 32 + static 32 + padding; Noise IK msg1 = e 32 + encrypted s 48 + tag 16
# + padding, msg2 = e 32 + tag 16 + padding, then a padding-only record (tag 16); padding 4*r
HANDSHAKES = {"hello": [("c", 4 + 64)], "noise": [("c", 4 + 96), ("s", 4 + 48), ("c", 4 + 16)]}


def handshake(tr: Traffic, conn: Conn, t: float, kind: str | None) -> float:
    """The hop handshake on a fresh connection (nothing for None); returns when it is done."""
    if kind is None:
        return t
    for side, size in HANDSHAKES[kind]:
        pad = 4 * int(tr.rng.integers(0, 256))
        t = tr.send(conn, t, size + pad, 50e6, from_client=side == "c", psh_only=True) + conn.rtt
    return t


def direct_migration(
    tr: Traffic,
    t: float,
    src: str,
    dst: str,
    vm_bytes: int,
    port: int = 7200,
    handshake_kind: str | None = None,
) -> float:
    """Pre-copy rounds (full memory, then shrinking dirty rounds) over one connection."""
    rng = tr.rng
    rate = rng.uniform(40e6, 90e6)
    conn = tr.connect(t, src, dst, port)
    t = handshake(tr, conn, t + conn.rtt, handshake_kind)
    for nbytes in [vm_bytes] + [int(vm_bytes * f) for f in (0.12, 0.04, 0.01)]:
        t = tr.send(conn, t, nbytes, rate) + rng.uniform(0.05, 0.2)
    tr.close(conn, t)
    return t


def relay_migration(
    tr: Traffic,
    t: float,
    src: str,
    intermediates: list[str],
    leader: str,
    dst_wire: str,
    vm_bytes: int,
    mean_gap_s: float = 0.1,
    ack_every: int = 4,
    port: int = 7100,
    handshake_kind: str | None = None,
    ack_record: int | None = None,
) -> tuple[float, list[tuple[str, str]]]:
    """The stealth pattern over persistent hop connections (as ``hosts`` runs it); returns the end
    time and the (from, to) hops used.

    Chunk sizes come from the background's size mix and leave with exponential gaps; an
    intermediate forwards each record a few ms after it has it; the leader forwards chunks in
    order as they become available; every ``ack_every`` chunks the leader sends a padded ack back
    through every intermediate to the source (relaying in the other direction). ``port`` is
    every hop's server port, ``handshake_kind`` opens each hop (see ``handshake``), and
    ``ack_record`` makes every ack exactly that many bytes (the protocol's ACK record).
    """
    rng = tr.rng
    up = {i: tr.connect(t, src, i, port) for i in intermediates}
    down = {i: tr.connect(t + 0.002, i, leader, port) for i in intermediates}
    out = tr.connect(t + 0.004, leader, dst_wire, port)
    t += 0.01
    if handshake_kind is not None:
        t = max(handshake(tr, c, t, handshake_kind) for c in (*up.values(), *down.values(), out))
    for inter in intermediates:  # key shares, padded to a policy-drawn size
        size = int(min(flow_size(rng), 50e3))
        t_share = tr.send(up[inter], t, size, 30e6)
        tr.send(down[inter], t_share + rng.uniform(0.001, 0.01), size + 24, 30e6)
        t += rng.exponential(mean_gap_s)
    sent, j, leader_free, end = 0, 0, t, t
    arrivals: dict[int, float] = {}
    while sent < vm_bytes:
        size = int(min(max(flow_size(rng), 2e3), 400e3, vm_bytes - sent))
        inter = intermediates[j % len(intermediates)]
        t_in = tr.send(up[inter], t, size, rng.uniform(20e6, 60e6))
        t_fwd = tr.send(
            down[inter], t_in + rng.uniform(0.001, 0.01), size + 24, rng.uniform(20e6, 60e6)
        )
        arrivals[j] = t_fwd
        t_l = max(t_fwd + rng.uniform(0.001, 0.01), leader_free)
        leader_free = tr.send(out, t_l, size - 16, rng.uniform(20e6, 60e6))
        end = max(end, leader_free)
        if j % ack_every == ack_every - 1:
            ack = int(min(flow_size(rng), 20e3)) if ack_record is None else ack_record
            fwd = ack + 24 if ack_record is None else ack_record
            for i in intermediates:
                t_ack = tr.send(down[i], leader_free + 0.001, ack, 30e6, from_client=False)
                tr.send(up[i], t_ack + rng.uniform(0.001, 0.01), fwd, 30e6, from_client=False)
        sent += size
        j += 1
        t += rng.exponential(mean_gap_s)
    for conn in (*up.values(), *down.values(), out):
        tr.close(conn, end + 0.01)
    edges = {(src, i) for i in intermediates} | {(i, leader) for i in intermediates}
    edges.add((leader, dst_wire))
    return end, sorted(edges)


def write_pcap(path: Path, table: np.ndarray) -> None:
    """Rows → a valid Ethernet pcap with header-only frames and true wire lengths.

    Built as one numpy record array (a pcap record header and a 54-byte Ethernet/IPv4/TCP header
    per row), the bytes scapy would write for ``Ether / IP(ttl=64, flags="DF") / TCP`` with the
    row's fields in place: a per-row Python loop spent seconds on each synthetic trial."""
    rec = np.zeros(len(table), dtype=_RECORD)
    ts = table["ts"].astype(np.float64)
    sec = np.floor(ts)
    usec = np.round((ts - sec) * 1e6)
    carry = usec >= 1_000_000
    sec, usec = sec + carry, usec - carry * 1_000_000
    src = table["src"].astype(np.uint32)
    dst = table["dst"].astype(np.uint32)
    length = table["length"].astype(np.uint32)
    sport = table["sport"].astype(np.uint32)
    dport = table["dport"].astype(np.uint32)
    rec["sec"], rec["usec"], rec["incl"], rec["orig"] = sec, usec, 54, 14 + length
    rec["eth_dst"][:, 5], rec["eth_src"][:, 5] = dst & 0xFF, src & 0xFF
    rec["ethertype"], rec["ver_ihl"], rec["frag"] = 0x0800, 0x45, 0x4000  # IPv4, DF
    rec["ttl"], rec["proto"] = 64, 6
    rec["ip_len"], rec["ipid"], rec["src"], rec["dst"] = length, table["ipid"], src, dst
    words = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    rec["ip_sum"] = _fold(0x4500 + 0x4000 + (64 << 8 | 6) + length + table["ipid"] + words)
    # the TCP checksum stays the one scapy computed for the template (seq 0, flags S, window 8192,
    # no payload), as the frames were always written
    rec["sport"], rec["dport"], rec["seq"] = sport, dport, table["seq"]
    rec["off"], rec["flags"], rec["win"] = 0x80, table["flags"], 8192  # data offset 8 words
    rec["tcp_sum"] = _fold(words + 6 + 20 + sport + dport + 0x5002 + 8192)
    with open(path, "wb") as f:
        f.write(pcap_header(snaplen=54))
        f.write(rec.tobytes())


def _fold(s: np.ndarray) -> np.ndarray:
    """The one's-complement of a 16-bit one's-complement sum."""
    s = s.astype(np.uint64)
    while (s >> 16).any():
        s = (s & 0xFFFF) + (s >> 16)
    return ~s.astype(np.uint16)


def pcap_header(snaplen: int, linktype: int = 1) -> bytes:
    """The global header of a classic pcap (microsecond timestamps, version 2.4), little-endian
    as scapy's RawPcapWriter writes it by default; ``linktype`` 1 is Ethernet."""
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


_RECORD = np.dtype([
    ("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
    ("eth_dst", "u1", 6), ("eth_src", "u1", 6), ("ethertype", ">u2"),
    ("ver_ihl", "u1"), ("tos", "u1"), ("ip_len", ">u2"), ("ipid", ">u2"), ("frag", ">u2"),
    ("ttl", "u1"), ("proto", "u1"), ("ip_sum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
    ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"),
    ("off", "u1"), ("flags", "u1"), ("win", ">u2"), ("tcp_sum", ">u2"), ("urg", ">u2"),
])


@dataclass
class SynthTrial:
    table: np.ndarray
    truth: TrialTruth
    pcap: Path | None = None


def make_trial(
    trial: int,
    mode: str,
    seed: int,
    n_hosts: int = 16,
    duration: float = 30.0,
    flows_per_s: float = 6.0,
    vm_bytes: int = 16_000_000,
    virtual_ip: bool = False,
    backups: int = 1,
    service_port: int = 80,
    relay_port: int | None = None,
    handshake_kind: str | None = None,
    ack_record: int | None = None,
) -> SynthTrial:
    """One trial. ``mode`` is "direct", "stealth" (relay) or "background" (no migration).

    ``service_port`` is the background's server port; ``relay_port`` (default 7100 for a relay,
    7200 direct), ``handshake_kind`` and ``ack_record`` give the migration the protocol's marks
    (see ``relay_migration``)."""
    rng = np.random.default_rng(seed)
    tr = Traffic(rng)
    hosts = [host_ip(i) for i in range(1, n_hosts + 1)]
    t0 = BASE_EPOCH + 1000 * trial
    background(tr, hosts, t0, duration, flows_per_s, backups, service_port)
    names = {ip: f"h{ip.rsplit('.', 1)[1]}" for ip in hosts}
    truth: dict = {
        "trial": trial,
        "mode": mode,
        "hosts": [{"host": names[ip], "ip": ip} for ip in hosts],
        "virtual_ip": None,
        "intermediates": [],
        "leader": None,
    }
    start = t0 + rng.uniform(0.3, 0.6) * duration
    if mode == "direct":
        src, dst = (
            (hosts[0], hosts[8])
            if seed % 2 == 0
            else tuple(rng.choice(hosts, size=2, replace=False))
        )
        end = direct_migration(
            tr, start, src, dst, vm_bytes, relay_port or 7200, handshake_kind
        )
        paths = [(src, dst)]
    elif mode == "stealth":
        pick = [str(x) for x in rng.choice(hosts, size=6, replace=False)]
        src, inters, leader, dst = pick[0], pick[1:4], pick[4], pick[5]
        wire_dst = "10.255.0.1" if virtual_ip else dst
        end, edges = relay_migration(
            tr,
            start,
            src,
            inters,
            leader,
            wire_dst,
            vm_bytes // 2,
            port=relay_port or 7100,
            handshake_kind=handshake_kind,
            ack_record=ack_record,
        )
        paths = [(a, dst if b == wire_dst else b) for a, b in edges]
        truth["intermediates"] = [{"host": names[i], "ip": i} for i in inters]
        truth["leader"] = {"host": names[leader], "ip": leader}
        truth["virtual_ip"] = wire_dst if virtual_ip else None
    elif mode == "background":
        src = dst = None
        end = start
        paths = []
    else:
        raise ValueError(mode)
    table = tr.table()
    table = table[table["ts"] <= t0 + duration + 5]
    if mode == "background":
        truth.update(
            mode="background",
            migration_start=None,
            migration_end=None,
            source=None,
            destination=None,
            paths=[],
        )
    else:
        truth.update(
            migration_start=float(start),
            migration_end=float(end),
            source={"host": names[src], "ip": src},
            destination={"host": names[dst], "ip": dst},
            paths=[{"from": names[a], "to": names[b], "switches": []} for a, b in paths],
        )
    return SynthTrial(table=table, truth=TrialTruth.from_dict(truth))


def split_vip_views(table: np.ndarray, vip: str, real: str) -> tuple[np.ndarray, np.ndarray]:
    """Two vantage views of one trial: a core switch (sees the virtual address) and the
    destination's edge switch (sees the real address, 1 ms later, only traffic to/from it)."""
    v, r = ip_to_int(vip), ip_to_int(real)
    core = table.copy()
    edge_mask = (
        (table["dst"] == v) | (table["src"] == v) | (table["dst"] == r) | (table["src"] == r)
    )
    edge = table[edge_mask].copy()
    edge["dst"][edge["dst"] == v] = r
    edge["src"][edge["src"] == v] = r
    to_edge = edge["dst"] == r
    edge["ts"][to_edge] += 0.001
    edge["ts"][~to_edge] -= 0.001
    return core, edge[np.argsort(edge["ts"], kind="stable")]


_TMP = Path(tempfile.mkdtemp(prefix="attacks-synth-"))


@lru_cache(maxsize=64)
def trial_pcap(trial: int, mode: str, seed: int, virtual_ip: bool = False) -> SynthTrial:
    """Build (once per test session) one trial's pcap and ground truth on disk."""
    st = make_trial(trial, mode, seed, virtual_ip=virtual_ip)
    st.pcap = _TMP / f"trial{trial}-{mode}-{seed}-all.pcap"
    write_pcap(st.pcap, st.table)
    return st


def write_ground_truth(path: Path, trials: list[SynthTrial]) -> None:
    write_truth(path, RunTruth([t.truth for t in trials]))


@lru_cache(maxsize=8)
def synthetic_run(
    n_direct: int = 6, n_background: int = 2, n_stealth: int = 0, base_seed: int = 1000
) -> Path:
    """A run folder like the runner's: ``pcaps/trial<N>-all.pcap`` and ``ground_truth.json``."""
    run = _TMP / f"run-{n_direct}-{n_background}-{n_stealth}-{base_seed}"
    (run / "pcaps").mkdir(parents=True, exist_ok=True)
    modes = ["direct"] * n_direct + ["background"] * n_background + ["stealth"] * n_stealth
    trials = []
    for i, mode in enumerate(modes):
        st = make_trial(i, mode, base_seed + i)
        st.pcap = run / "pcaps" / f"trial{i}-all.pcap"
        write_pcap(st.pcap, st.table)
        trials.append(st)
    write_ground_truth(run / "ground_truth.json", trials)
    return run
