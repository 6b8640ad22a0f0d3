"""Captures: pcap files (and live packets) turned once into a compact packet table.

A capture is what one vantage point saw: a compromised switch's mirror port, every switch port for
the global passive adversary, or an attacker host's own interface. Everything downstream (features,
detection, identification, path tracing) works on the table this module builds, never on scapy
packets, so that pcaps of hundreds of MB are read once, streaming, at a few microseconds a packet.

The table is a numpy structured array, one row per IPv4 packet (ARP requests and replies are kept
aside: they tell which addresses belong to real hosts):

    ts      float64  capture time, epoch seconds
    src     uint32   IPv4 source (network order as an integer; see ``ip_to_int``)
    dst     uint32   IPv4 destination
    sport   uint16   TCP/UDP source port (0 for other protocols)
    dport   uint16   TCP/UDP destination port
    proto   uint8    IP protocol number (6 TCP, 17 UDP, 1 ICMP)
    flags   uint8    TCP flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10)
    length  uint32   IP total length, bytes (the snap length of the capture does not matter)
    plen    uint32   transport payload length, bytes
    ipid    uint16   IP identification
    seq     uint32   TCP sequence number
    ttl     uint8    IP time to live
    vp      uint16   index of the vantage point (see ``Capture.vantages``)

Callers: the experiments runner and ``attacks.cli`` (``read_pcap``/``read_pcaps``), the live demo
(``packet_record`` via ``attacks.live``), and the tests.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PACKET_DTYPE = np.dtype(
    [
        ("ts", "f8"),
        ("src", "u4"),
        ("dst", "u4"),
        ("sport", "u2"),
        ("dport", "u2"),
        ("proto", "u1"),
        ("flags", "u1"),
        ("length", "u4"),
        ("plen", "u4"),
        ("ipid", "u2"),
        ("seq", "u4"),
        ("ttl", "u1"),
        ("vp", "u2"),
    ]
)

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

# pcap link types this reader understands
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276  # what tcpdump -i any writes with libpcap >= 1.10

_ETH_IPV4, _ETH_ARP, _ETH_VLAN, _ETH_QINQ = 0x0800, 0x0806, 0x8100, 0x88A8
_CHUNK = 65536


def ip_to_int(ip: str) -> int:
    """``'10.0.0.1'`` → 167772161."""
    return int(ipaddress.IPv4Address(ip))


def int_to_ip(value: int) -> str:
    """167772161 → ``'10.0.0.1'``."""
    return str(ipaddress.IPv4Address(int(value)))


@dataclass
class Capture:
    """What one attacker holds after capturing: the packet table plus ARP-speaking addresses."""

    packets: np.ndarray
    vantages: list[str] = field(default_factory=list)
    arp_hosts: set[int] = field(default_factory=set)

    @property
    def t0(self) -> float:
        return float(self.packets["ts"].min()) if len(self.packets) else 0.0

    @property
    def t1(self) -> float:
        return float(self.packets["ts"].max()) if len(self.packets) else 0.0

    def hosts(self) -> np.ndarray:
        """Every IPv4 address seen as source or destination, sorted."""
        if not len(self.packets):
            return np.zeros(0, dtype="u4")
        return np.union1d(self.packets["src"], self.packets["dst"])


def parse_frame(data: bytes, linktype: int) -> tuple | None:
    """One captured frame → a row tuple without ``ts``/``vp``, ``("arp", sender)``, or None.

    Handles Ethernet (with 802.1Q/802.1ad tags), Linux cooked captures (v1 and v2, as
    ``tcpdump -i any`` writes) and raw IPv4. Truncated
    frames (a small snap length) are fine as long as the IP and TCP/UDP headers are present.
    """
    off = 0
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        (ethertype,) = struct.unpack_from("!H", data, 12)
        off = 14
        while ethertype in (_ETH_VLAN, _ETH_QINQ) and len(data) >= off + 4:
            (ethertype,) = struct.unpack_from("!H", data, off + 2)
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        (ethertype,) = struct.unpack_from("!H", data, 14)
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        (ethertype,) = struct.unpack_from("!H", data, 0)
        off = 20
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        ethertype = _ETH_IPV4 if data and data[0] >> 4 == 4 else 0
    else:
        return None
    if ethertype == _ETH_ARP:
        if len(data) >= off + 28:
            (sender,) = struct.unpack_from("!I", data, off + 14)
            return ("arp", sender)
        return None
    if ethertype != _ETH_IPV4 or len(data) < off + 20:
        return None
    vihl, _tos, total, ipid, _frag, ttl, proto, _ck, src, dst = struct.unpack_from(
        "!BBHHHBBHII", data, off
    )
    if vihl >> 4 != 4:
        return None
    ihl = (vihl & 0x0F) * 4
    l4 = off + ihl
    sport = dport = seq = flags = 0
    plen = max(total - ihl, 0)
    if proto == 6 and len(data) >= l4 + 14:
        sport, dport, seq, _ack, offflags = struct.unpack_from("!HHIIH", data, l4)
        thl = (offflags >> 12) * 4
        flags = offflags & 0xFF
        plen = max(total - ihl - thl, 0)
    elif proto == 17 and len(data) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", data, l4)
        plen = max(total - ihl - 8, 0)
    return (src, dst, sport, dport, proto, flags, total, plen, ipid, seq, ttl)


def _meta_ts(meta: object, nano: bool) -> float:
    if hasattr(meta, "sec"):  # classic pcap
        return meta.sec + meta.usec * (1e-9 if nano else 1e-6)
    # pcapng: 64-bit timestamp in units of 1/tsresol seconds
    return ((meta.tshigh << 32) + meta.tslow) / float(meta.tsresol)


def _to_array(rows: list[tuple]) -> np.ndarray:
    return np.array(rows, dtype=PACKET_DTYPE) if rows else np.zeros(0, dtype=PACKET_DTYPE)


def read_pcap(path: str | Path, vantage: str | None = None, vp: int = 0) -> Capture:
    """Stream one pcap/pcapng file into a ``Capture`` (rows sorted by time).

    ``vantage`` names the vantage point (default: the file's stem); ``vp`` is stored in every row.
    """
    from scapy.utils import RawPcapReader

    chunks: list[np.ndarray] = []
    rows: list[tuple] = []
    arp: set[int] = set()
    with RawPcapReader(str(path)) as reader:
        nano = bool(getattr(reader, "nano", False))
        default_lt = getattr(reader, "linktype", LINKTYPE_ETHERNET)
        for data, meta in reader:
            linktype = getattr(meta, "linktype", None) or default_lt
            parsed = parse_frame(data, linktype)
            if parsed is None:
                continue
            if parsed[0] == "arp":
                arp.add(parsed[1])
                continue
            rows.append((_meta_ts(meta, nano), *parsed, vp))
            if len(rows) >= _CHUNK:
                chunks.append(_to_array(rows))
                rows = []
    chunks.append(_to_array(rows))
    packets = np.concatenate(chunks)
    packets = packets[np.argsort(packets["ts"], kind="stable")]
    return Capture(packets=packets, vantages=[vantage or Path(path).stem], arp_hosts=arp)


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


def read_pcaps(paths: Iterable[str | Path], dedupe: bool = True) -> Capture:
    """Read several pcaps (one per vantage point) into one merged capture."""
    caps = [read_pcap(p, vp=0) for p in paths]
    return merge_captures(caps, dedupe=dedupe)


def packet_key(packets: np.ndarray, with_dst: bool = True) -> np.ndarray:
    """A per-packet identity that survives forwarding: 5-tuple, IP id, TCP seq, payload length."""
    fields = ["src", "sport", "dport", "proto", "ipid", "seq", "plen"]
    if with_dst:
        fields.insert(1, "dst")
    return packets[fields]


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


def packet_record(pkt: object, vp: int = 0) -> tuple | None:
    """A scapy packet (as handed out by ``sniff``/``AsyncSniffer``) → one table row, or None.

    Returns ``("arp", sender_int)`` for ARP so that live callers can track real hosts.
    """
    data = bytes(pkt)
    linktype = LINKTYPE_ETHERNET
    name = type(pkt).__name__
    if name in ("IP",):
        linktype = LINKTYPE_RAW
    elif name in ("CookedLinux",):
        linktype = LINKTYPE_LINUX_SLL
    elif name in ("CookedLinuxV2",):
        linktype = LINKTYPE_LINUX_SLL2
    parsed = parse_frame(data, linktype)
    if parsed is None or parsed[0] == "arp":
        return parsed
    return (float(getattr(pkt, "time", 0.0)), *parsed, vp)


def records_to_array(rows: Sequence[tuple]) -> np.ndarray:
    """Rows from ``packet_record`` → a packet table (sorted by time)."""
    arr = _to_array([r for r in rows if r and r[0] != "arp"])
    return arr[np.argsort(arr["ts"], kind="stable")]
