"""Normal-traffic profiles and the chunk policies drawn from them (Alg 3, "adjustable chunk size").

The source measures the normal traffic on its interface over a window (``measure_sniff``, needs
root and scapy), or reads a pcap (``from_pcap``), or is given a profile in the plan. A
``TrafficProfile`` keeps samples of packet sizes, flow sizes (bytes per 5-tuple), message sizes
(bytes between pauses of a flow), gaps between messages, and the mean rate. ``ChunkPolicy``
draws each chunk's size from the message sizes and its send time from the gaps, slowed down
when needed to stay within a rate budget; ``FixedChunkPolicy`` is the baseline (fixed size,
no pacing). Key shares are padded to sizes drawn from the same policy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_CHUNK = 512
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


class FixedChunkPolicy:
    """The baseline: every chunk ``size`` bytes, sent back to back (optionally a fixed gap)."""

    def __init__(self, size: int = 65536, gap_s: float = 0.0) -> None:
        if not MIN_CHUNK <= size <= MAX_CHUNK:
            raise ValueError(f"chunk size {size} outside [{MIN_CHUNK}, {MAX_CHUNK}]")
        self.size = size
        self.gap_s = gap_s

    def next_size(self) -> int:
        return self.size

    def next_gap(self, size: int) -> float:
        return self.gap_s

    def describe(self) -> dict[str, Any]:
        return {"kind": "fixed", "size": self.size, "gap_s": self.gap_s}

    def for_sender(self, share: float, seed: int) -> FixedChunkPolicy:
        """The policy of one of several parallel senders (a fixed gap stays per sender)."""
        return FixedChunkPolicy(self.size, self.gap_s)


class ChunkPolicy:
    """Chunk sizes and send times drawn from a measured profile, within a rate budget.

    ``rate_budget_bps`` (bytes/s, 0 = unlimited) caps the migration's own rate on this sender:
    a gap is never shorter than ``size / budget``. Sizes are clipped to [min_size, max_size].
    """

    def __init__(
        self,
        profile: TrafficProfile,
        rate_budget_bps: float = 0.0,
        seed: int = 0,
        min_size: int = MIN_CHUNK,
        max_size: int = 1 << 20,
    ) -> None:
        self.profile = profile
        self.rate_budget_bps = rate_budget_bps
        self.rng = random.Random(seed)
        self.min_size = max(MIN_CHUNK, min_size)
        self.max_size = min(MAX_CHUNK, max_size)
        self._sizes = [s for s in (profile.message_sizes or profile.flow_sizes) if s > 0]
        self._gaps = [g for g in profile.gaps_s if g >= 0]

    def next_size(self) -> int:
        if not self._sizes:
            return self.min_size
        return min(self.max_size, max(self.min_size, self.rng.choice(self._sizes)))

    def next_gap(self, size: int) -> float:
        gap = self.rng.choice(self._gaps) if self._gaps else 0.0
        if self.rate_budget_bps > 0:
            gap = max(gap, size / self.rate_budget_bps)
        return gap

    def for_sender(self, share: float, seed: int) -> ChunkPolicy:
        """The policy of one of several parallel senders: same profile, ``share`` of the budget."""
        return ChunkPolicy(
            self.profile, self.rate_budget_bps * share, seed, self.min_size, self.max_size
        )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "profile",
            "rate_budget_bps": self.rate_budget_bps,
            "sizes": len(self._sizes),
            "gaps": len(self._gaps),
        }


Policy = FixedChunkPolicy | ChunkPolicy


def policy_from_settings(
    settings: dict[str, Any], seed: int = 0, share: float = 1.0, ip: str | None = None
) -> Policy:
    """Build a policy from the plan's ``chunk_policy`` dict.

    ``{"kind": "fixed", "size": N, "gap_s": G}`` or ``{"kind": "profile", "profile": {...} |
    "pcap": PATH | "sniff_iface": IFACE or "auto" (the interface of ``ip``; needs root),
    "sniff_s": S, "bpf": FILTER, "rate_budget_bps": B, "min_size": ..,
    "max_size": ..}`` (no source of samples: a synthetic web-like profile). ``share`` divides the
    rate budget among parallel senders.
    """
    kind = settings.get("kind", "fixed")
    if kind == "fixed":
        return FixedChunkPolicy(int(settings.get("size", 65536)), float(settings.get("gap_s", 0.0)))
    if kind != "profile":
        raise ValueError(f"unknown chunk policy kind {kind!r}")
    if settings.get("profile"):
        prof = TrafficProfile.from_dict(settings["profile"])
    elif settings.get("pcap"):
        prof = from_pcap(str(settings["pcap"]))
    elif settings.get("sniff_iface"):
        iface = str(settings["sniff_iface"])
        if iface == "auto":  # the interface of the sender's own address
            iface = (iface_of(ip) if ip else None) or ""
            if not iface:
                raise ValueError(f"no interface holds {ip}: cannot sniff normal traffic")
        prof = measure_sniff(iface, float(settings.get("sniff_s", 5.0)), settings.get("bpf"))
    else:
        prof = TrafficProfile.synthetic(seed)
    budget = float(settings.get("rate_budget_bps", 0.0)) * share
    return ChunkPolicy(
        prof,
        rate_budget_bps=budget,
        seed=seed,
        min_size=int(settings.get("min_size", MIN_CHUNK)),
        max_size=int(settings.get("max_size", 1 << 20)),
    )


class Pacer:
    """Sleeps until each send time a policy asks for (monotonic clock, no drift)."""

    def __init__(self) -> None:
        self.next_t = time.monotonic()

    def wait(self, gap_s: float) -> None:
        if gap_s <= 0:
            self.next_t = time.monotonic()
            return
        self.next_t = max(self.next_t + gap_s, time.monotonic() - 1.0)
        delay = self.next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
