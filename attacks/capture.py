"""Captures: pcap files (and live packets) turned once into a compact packet table.

A capture is what one vantage point saw: a compromised switch's mirror port, every switch port for
the global passive adversary, or an attacker host's own interface. Everything downstream (features,
detection, identification, path tracing) works on the table this module builds, never on scapy
packets. ``read_pcap`` is the one reader: classic pcaps (what tcpdump writes) take a vectorised
path that finds the record offsets in one pass and pulls every header field out with numpy gathers
(the global capture holds millions of packets; scapy would cost tens of seconds per file); pcapng
and unknown link types fall back to scapy's reader, frame by frame through ``parse_frame``.

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

Callers: the experiments' analysis and ``attacks.cli`` (``read_pcap``/``read_pcaps``), the live
demo (``packet_record`` via ``attacks.live``), and the tests. A little over 400 lines: the reader's
two paths stay in one module so that a field added to the table is added to both (the tests
compare their rows); ``group_order`` (copies of a packet grouped by one hash sort, what
de-duplication and ``attacks.aliases`` need) belongs with the table's key.
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
    """Read one pcap/pcapng file into a ``Capture`` (rows sorted by time).

    ``vantage`` names the vantage point (default: the file's stem); ``vp`` is stored in every row.
    Classic pcaps of the link types above take the vectorised path; pcapng and anything it
    cannot parse fall back to scapy's reader. Both give the same rows
    (tests/unit/test_attacks_capture.py compares them).
    """
    cap = _read_classic(path, vantage, vp)
    return cap if cap is not None else _read_scapy(path, vantage, vp)


def _read_scapy(path: str | Path, vantage: str | None = None, vp: int = 0) -> Capture:
    """The general path: any pcap/pcapng scapy opens, streamed frame by frame (``parse_frame``)."""
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


# -- the fast path: classic pcap, numpy gathers ----------------------------------------------
_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
# link type → (offset of the ethertype, offset of the network header); None: raw IPv4
_L2 = {
    LINKTYPE_ETHERNET: (12, 14),
    LINKTYPE_LINUX_SLL: (14, 16),
    LINKTYPE_LINUX_SLL2: (0, 20),
    LINKTYPE_RAW: None,
    LINKTYPE_IPV4: None,
}


def _offsets(buf: bytes, endian: str) -> np.ndarray:
    """Start of every record (its 16-byte header) in ``buf`` after the 24-byte file header."""
    offs = []
    pos, n = 24, len(buf)
    unpack = struct.Struct(endian + "I").unpack_from
    append = offs.append
    while pos + 16 <= n:
        incl = unpack(buf, pos + 8)[0]
        if pos + 16 + incl > n:
            break  # a record cut short by a killed capture
        append(pos)
        pos += 16 + incl
    return np.asarray(offs, dtype=np.int64)


def _u16(a: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (a[i].astype(np.uint32) << 8) | a[i + 1]


def _u32(a: np.ndarray, i: np.ndarray) -> np.ndarray:
    return (
        (a[i].astype(np.uint32) << 24)
        | (a[i + 1].astype(np.uint32) << 16)
        | (a[i + 2].astype(np.uint32) << 8)
        | a[i + 3]
    )


def _read_classic(path: str | Path, vantage: str | None = None, vp: int = 0) -> Capture | None:
    """The fast path: a classic pcap of a known link type, every field pulled out with numpy
    gathers; None when the file is not one (pcapng, another link type)."""
    raw = Path(path).read_bytes()
    if len(raw) < 24 or raw[:4] not in _MAGIC:
        return None
    endian, tick = _MAGIC[raw[:4]]
    linktype = struct.unpack_from(endian + "I", raw, 20)[0] & 0x0FFFFFFF
    if linktype not in _L2:
        return None
    offs = _offsets(raw, endian)
    a = np.frombuffer(raw, dtype=np.uint8)
    e = np.dtype("<u4" if endian == "<" else ">u4")

    def hdr(k: int) -> np.ndarray:  # one 32-bit field of every record header
        return np.ascontiguousarray(a[offs[:, None] + k + np.arange(4)]).view(e).ravel()

    ts = hdr(0).astype(np.float64) + hdr(4).astype(np.float64) * tick
    caplen = hdr(8).astype(np.int64)
    data = offs + 16
    l2 = _L2[linktype]
    if l2 is None:
        net = data
        ether = np.where(a[np.minimum(data, len(a) - 1)] >> 4 == 4, 0x0800, 0)
        ok_len = caplen >= 1
    else:
        et_off, net_off = l2
        ok_len = caplen >= net_off
        idx = np.where(ok_len, data + et_off, 0)
        ether = np.where(ok_len, _u16(a, idx), 0)
        net = data + net_off
        if linktype == LINKTYPE_ETHERNET:  # 802.1Q / 802.1ad tags, as parse_frame skips them
            tagged = ((ether == _ETH_VLAN) | (ether == _ETH_QINQ)) & (caplen >= net - data + 4)
            while tagged.any():
                ether = np.where(tagged, _u16(a, np.where(tagged, net + 2, 0)), ether)
                net = np.where(tagged, net + 4, net)
                tagged &= ((ether == _ETH_VLAN) | (ether == _ETH_QINQ)) & (
                    caplen >= net - data + 4
                )
    vantages = [vantage or Path(path).stem]
    arp_rows = np.nonzero((ether == 0x0806) & (caplen >= (net - data) + 28))[0]
    arp = set(_u32(a, net[arp_rows] + 14).tolist()) if len(arp_rows) else set()
    ip = np.nonzero((ether == 0x0800) & (caplen >= (net - data) + 20))[0]
    ip = ip[(a[net[ip]] >> 4) == 4]
    n0 = net[ip]
    ihl = (a[n0] & 0x0F).astype(np.int64) * 4
    total = _u16(a, n0 + 2)
    proto = a[n0 + 9]
    l4 = n0 + ihl
    have = caplen[ip] - (n0 - data[ip]) - ihl  # bytes of the transport header captured
    out = np.zeros(len(ip), dtype=PACKET_DTYPE)
    out["ts"] = ts[ip]
    out["src"] = _u32(a, n0 + 12)
    out["dst"] = _u32(a, n0 + 16)
    out["proto"] = proto
    out["length"] = total
    out["ipid"] = _u16(a, n0 + 4)
    out["ttl"] = a[n0 + 8]
    out["vp"] = vp
    plen = np.maximum(total.astype(np.int64) - ihl, 0)
    tcp = (proto == 6) & (have >= 14)
    udp = (proto == 17) & (have >= 4)
    ports = tcp | udp
    safe = np.where(ports, l4, 0)
    out["sport"] = np.where(ports, _u16(a, safe), 0)
    out["dport"] = np.where(ports, _u16(a, safe + 2), 0)
    tsafe = np.where(tcp, l4, 0)
    out["seq"] = np.where(tcp, _u32(a, tsafe + 4), 0)
    offflags = np.where(tcp, _u16(a, tsafe + 12), 0)
    out["flags"] = offflags & 0xFF
    thl = (offflags >> 12).astype(np.int64) * 4
    plen = np.where(tcp, np.maximum(total.astype(np.int64) - ihl - thl, 0), plen)
    plen = np.where(udp, np.maximum(total.astype(np.int64) - ihl - 8, 0), plen)
    out["plen"] = plen
    out = out[np.argsort(out["ts"], kind="stable")]
    return Capture(packets=out, vantages=vantages, arp_hosts=arp)


def merge_captures(captures: Sequence[Capture], dedupe: bool = True) -> Capture:
    """Join the captures of several vantage points (the global passive adversary's view).

    Rows keep their vantage index (``vp`` is renumbered into the merged ``vantages`` list). With
    ``dedupe``, a packet seen on several switches counts once (see ``dedupe_packets``); virtual
    addresses are not resolved here (``attacks.aliases`` does that).
    """
    parts, offsets, vantages, arp = [], [], [], set()
    for cap in captures:
        parts.append(cap.packets)
        offsets.append(np.full(len(cap.packets), len(vantages), dtype=np.uint16))
        vantages.extend(cap.vantages)
        arp |= cap.arp_hosts
    if parts:
        # each part is copied once, straight to its rows' places in time order
        order = np.argsort(np.concatenate([p["ts"] for p in parts]), kind="stable")
        where = np.empty(len(order), dtype=np.int64)
        where[order] = np.arange(len(order))
        packets = np.empty(len(order), dtype=PACKET_DTYPE)
        start = 0
        for part in parts:
            packets[where[start : start + len(part)]] = part
            start += len(part)
        packets["vp"] += np.concatenate(offsets)[order]  # vantage indices of the merged list
    else:
        packets = np.zeros(0, dtype=PACKET_DTYPE)
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


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _packed(packets: np.ndarray, fields: Sequence[str]) -> list[np.ndarray]:
    """``fields`` packed without loss into as few 64-bit words per row as their widths allow."""
    words, word, used = [], None, 0
    for f in fields:
        col = packets[f]
        bits = col.dtype.itemsize * 8
        if word is not None and used + bits > 64:
            words.append(word)
            word, used = None, 0
        if word is None:
            word = col.astype(np.uint64)
        else:
            word <<= np.uint64(bits)
            word |= col
        used += bits
    if word is not None:
        words.append(word)
    return words


def group_order(packets: np.ndarray, fields: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """An order of the rows in which rows equal in ``fields`` are adjacent, by time within, and
    for each adjacent pair of that order whether the two rows are equal in ``fields``.

    Within a group the order is that of ``np.lexsort([ts, *reversed(fields)])`` (time, then
    table position); the groups themselves come in no particular order. Rows are grouped by one
    stable sort on a 64-bit hash of the fields (far cheaper than a lexicographic sort over each
    field); should two different keys ever share a hash, the exact ``np.lexsort`` is used.
    """
    ts = packets["ts"]
    words = _packed(packets, fields)
    h = np.zeros(len(ts), dtype=np.uint64)
    for w in words:
        h ^= w
        h *= _MIX
        h ^= h >> np.uint64(31)
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
        first = np.argsort(ts, kind="stable")
        order = first[np.argsort(h[first], kind="stable")]
    else:
        order = np.argsort(h, kind="stable")
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for w in words:
        col = w[order]
        same &= col[1:] == col[:-1]
    hs = h[order]
    if (~same & (hs[1:] == hs[:-1])).any():  # a collision: two keys may interleave
        order = np.lexsort([ts] + [packets[f] for f in reversed(fields)])
        same = np.ones(max(len(order) - 1, 0), dtype=bool)
        for w in words:
            col = w[order]
            same &= col[1:] == col[:-1]
    return order, same


def dedupe_packets(packets: np.ndarray, tolerance_s: float = 0.05) -> np.ndarray:
    """Drop copies of one packet seen at several vantage points (keep the earliest copy).

    Two rows are copies when their ``packet_key`` is equal and they are less than ``tolerance_s``
    apart. ``packets`` must be sorted by time; the result is too.
    """
    if len(packets) < 2:
        return packets
    order, same = group_order(packets, list(packet_key(packets[:0]).dtype.names))
    ts = packets["ts"][order]
    # a row is a copy if it matches its predecessor (in key order) closely in time; chains of
    # copies (s1, s2, s3) are caught because each one matches the one before it.
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = same & (ts[1:] - ts[:-1] < tolerance_s)
    keep = np.ones(len(packets), dtype=bool)
    keep[order[dup]] = False  # the kept rows in table order, as np.sort(order[~dup]) gives them
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
