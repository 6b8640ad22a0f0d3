"""Normal-traffic profiles: the samples a migration's chunks are drawn from (Alg 3).

The source measures the normal traffic on its interface over a window (``measure_sniff``, needs
root and scapy), or reads a pcap (``from_pcap``), or is given a profile in the plan
(``profile_from_settings`` picks which). A ``TrafficProfile`` keeps samples of packet sizes,
flow sizes (bytes per 5-tuple), message sizes (bytes between pauses of a flow), gaps between
messages, and the mean rate. The profile chunk policy (``hosts.chunk_policy``) draws each
chunk's size and send time from it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_CHUNK = 512  # bytes: the smallest and largest chunk (or synthetic message) there is
MAX_CHUNK = 4 << 20
MESSAGE_GAP_S = 0.05  # a pause longer than this ends one message of a flow


@dataclass
class TrafficProfile:
    """Samples of normal traffic, as seen on one interface over ``duration_s``."""

    packet_sizes: list[int] = field(default_factory=list)
    flow_sizes: list[int] = field(default_factory=list)
    message_sizes: list[int] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    rate_bps: float = 0.0  # bytes per second, all normal traffic together
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrafficProfile:
        return cls(
            packet_sizes=[int(x) for x in d.get("packet_sizes", [])],
            flow_sizes=[int(x) for x in d.get("flow_sizes", [])],
            message_sizes=[int(x) for x in d.get("message_sizes", [])],
            gaps_s=[float(x) for x in d.get("gaps_s", [])],
            rate_bps=float(d.get("rate_bps", 0.0)),
            duration_s=float(d.get("duration_s", 0.0)),
        )

    @classmethod
    def synthetic(cls, seed: int = 0, samples: int = 500) -> TrafficProfile:
        """A web-like profile (log-normal message sizes, exponential gaps) for no measurement."""
        rng = random.Random(seed)
        msgs = [
            int(min(MAX_CHUNK, max(MIN_CHUNK, rng.lognormvariate(10.0, 1.2))))
            for _ in range(samples)
        ]
        gaps = [rng.expovariate(200.0) for _ in range(samples)]
        return cls(
            packet_sizes=[rng.choice([66, 1514, 1514, 583]) for _ in range(samples)],
            flow_sizes=msgs,
            message_sizes=msgs,
            gaps_s=gaps,
            rate_bps=sum(msgs) / max(sum(gaps), 1e-6),
            duration_s=sum(gaps),
        )


def from_packets(packets: Iterable[tuple[float, int, tuple[Any, ...]]]) -> TrafficProfile:
    """Build a profile from (time, wire length, flow key) triples, in time order."""
    pkts = sorted(packets, key=lambda p: p[0])
    if not pkts:
        return TrafficProfile()
    flows: dict[tuple[Any, ...], int] = {}
    last_seen: dict[tuple[Any, ...], float] = {}
    msg_open: dict[tuple[Any, ...], int] = {}
    messages: list[int] = []
    msg_starts: list[float] = []
    sizes: list[int] = []
    for t, length, key in pkts:
        sizes.append(length)
        flows[key] = flows.get(key, 0) + length
        if key in last_seen and t - last_seen[key] <= MESSAGE_GAP_S:
            msg_open[key] += length
        else:
            if key in msg_open:
                messages.append(msg_open[key])
            msg_open[key] = length
            msg_starts.append(t)
        last_seen[key] = t
    messages += list(msg_open.values())
    msg_starts.sort()
    gaps = [b - a for a, b in zip(msg_starts, msg_starts[1:], strict=False)]
    duration = max(pkts[-1][0] - pkts[0][0], 1e-6)
    return TrafficProfile(
        packet_sizes=sizes,
        flow_sizes=list(flows.values()),
        message_sizes=messages,
        gaps_s=gaps,
        rate_bps=sum(sizes) / duration,
        duration_s=duration,
    )


def _scapy_triples(pkts: Iterable[Any]) -> list[tuple[float, int, tuple[Any, ...]]]:
    from scapy.layers.inet import IP, TCP, UDP  # lazy: scapy is heavy
    from scapy.layers.l2 import Ether

    out = []
    for p in pkts:
        if IP not in p:  # e.g. Linux "lo", which scapy cannot type: re-read as Ethernet
            q = Ether(bytes(p))
            q.time = p.time
            p = q
        if IP not in p:
            continue
        ip = p[IP]
        l4 = TCP if TCP in p else UDP if UDP in p else None
        sport = int(p[l4].sport) if l4 else 0
        dport = int(p[l4].dport) if l4 else 0
        key = tuple(sorted([(ip.src, sport), (ip.dst, dport)])) + (int(ip.proto),)
        out.append((float(p.time), len(p), key))
    return out


def from_pcap(path: str) -> TrafficProfile:
    """Profile of the normal traffic stored in a pcap."""
    from scapy.utils import rdpcap

    return from_packets(_scapy_triples(rdpcap(path)))


def iface_of(ip: str) -> str | None:
    """The interface that holds ``ip`` (from ``ip -o -4 addr``), e.g. ``h1-eth0`` in Mininet."""
    import subprocess

    try:
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3].split("/")[0] == ip:
            return parts[1]
    if ip.startswith("127."):
        return "lo"
    return None


def measure_sniff(iface: str, seconds: float, bpf: str | None = None) -> TrafficProfile:
    """Sniff ``iface`` for ``seconds`` (needs root) and profile what passed."""
    from scapy.sendrecv import sniff

    pkts = sniff(iface=iface, timeout=seconds, filter=bpf, store=True)
    return from_packets(_scapy_triples(pkts))


def profile_from_settings(settings: dict[str, Any], seed: int = 0,
                          ip: str | None = None) -> TrafficProfile:
    """The profile a ``{"kind": "profile", ...}`` chunk policy names, from the first source set:
    ``"profile": {...}`` (given), ``"pcap": PATH``, ``"sniff_iface": IFACE`` or ``"auto"`` (the
    interface of ``ip``; needs root) with ``"sniff_s": S, "bpf": FILTER``; none set: a synthetic
    web-like profile seeded by ``seed``."""
    if settings.get("profile"):
        return TrafficProfile.from_dict(settings["profile"])
    if settings.get("pcap"):
        return from_pcap(str(settings["pcap"]))
    if settings.get("sniff_iface"):
        iface = str(settings["sniff_iface"])
        if iface == "auto":  # the interface of the sender's own address
            iface = (iface_of(ip) if ip else None) or ""
            if not iface:
                raise ValueError(f"no interface holds {ip}: cannot sniff normal traffic")
        return measure_sniff(iface, float(settings.get("sniff_s", 5.0)), settings.get("bpf"))
    return TrafficProfile.synthetic(seed)
