"""The cover mux: encrypted cover records to every peer on a fixed schedule, streams inside them.

Every tenant VM's agent runs one ``CoverMux``. It sends Noise-encrypted cover records to every
other tenant VM (``hosts.channel`` links, migration id ``"cover"``) at times, to peers and of sizes
drawn in advance from its seed (``CoverSchedule``): Poisson arrivals, a uniform peer, a uniform
on-wire record size. Cover TCP connections carry a byte budget drawn from the tenant flow-size CDF
and are then closed and reopened, so they live and die like tenant flows; their handshake messages
are padded to drawn record sizes too.

Streams ride inside the records. A role calls ``open(peer_ip, vport)`` and gets one end of a
``socketpair``; the peer's ``bind(vport, on_stream)`` hands the other end's traffic to its own
socketpair end. A record's plaintext is a sequence of fragments (``DATA``, ``ACK``, ``FIN``,
``RST``; each names its origin, final destination, stream, offset and length) then padding to
exactly the slot's size. A slot to peer X carries, in order: ``BUSY`` marks, fragments X
forwards for others (queued for X), control and acknowledgements, stream data for X, then
(spraying) stream data for other destinations sent *via* X, which X forwards in one of its own
slots (never more than two hops); the rest is padding. Relay bytes only replace padding: when
records go, to whom and how big they are does not depend on whether any stream exists. A link
whose send queue is full skips the slot, whatever it would have carried.

``BUSY`` marks steer the spraying away from links that are full: while our own stream data fills
more than half of our record bytes we mark ourselves (a bulk sender's slots belong to its own
stream: peers then send nothing via us), and while our queue of fragments to forward to Z is
deeper than ``FWD_HIGH_S`` of slots we mark Z (several senders share that one link: peers then
send nothing for Z via us). A mark holds for a few slot intervals; marks only replace padding.

A stream's tail (its role's bytes all sent, little unacknowledged) waits for forwarders' slots to
its destination, which come at random: room left in a slot then carries another copy of data
waiting at a forwarder, direct to the destination (then no more) or via another forwarder, up to
``TAIL_COPIES`` per byte; the receiver keeps whichever copy arrives first, so the wait is the
first of several forwarders' slots, not one's (``CoverSettings.copies``). Copies too only
replace padding.

Each stream direction is reliable end to end: the receiver reassembles by offset and returns
cumulative ACKs; the sender keeps unacknowledged bytes (bounded: it stops reading its socketpair
when full) and retransmits after an adaptive RTO, or sooner once data sent after a fragment is
acknowledged and it is not (a reordering allowance later: RACK), direct first; a forwarder that
dies costs retransmissions only. A stream whose peer acknowledges nothing, or sends no cover
record at all, for ``stream_timeout_s`` (at least 20 slot intervals to that peer) is closed (the
role sees EOF; ``why_closed`` says why; the peer gets an ``RST``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import queue
import random
import socket
import statistics
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, frame_size, listen, load_public, public_hex
from hosts.protocol.cover import CoverConfig, CoverError, CoverPeer, CoverSettings
from hosts.workload import flow_sizes

MIGRATION = "cover"  # the Noise prologue's id of every cover link
PAD, DATA, ACK, FIN, RST, BUSY = 0, 1, 2, 3, 4, 5
OPENER = 1  # flag: the fragment's sender (src) is the stream's opener
_FRAG = struct.Struct(">BB4s4sIHQH")  # type, flags, src, dst, stream id, vport, offset, length
HDR = _FRAG.size
_SACK = struct.Struct(">QQ")  # an ACK's data: ranges [start, stop) received beyond its offset
MAX_SACK = 32
MSG1_OVERHEAD = 4 + 32 + 48 + 16  # length prefix, e, encrypted s, payload tag
MSG2_OVERHEAD = 4 + 32 + 16
RECORD_OVERHEAD = 4 + 16
SEND_BUFFER = 1 << 20  # unacknowledged bytes per stream direction (the window)
READ_AHEAD_S = 0.1  # a stream reads its role's bytes at most this many seconds of slots ahead
ROLE_SNDBUF = 32 << 10  # the role end's send buffer: its writes block, not queue, when we do
FORWARD_CAP = 512 << 10  # bytes of fragments queued at a forwarder per next hop
QUEUE_MAX = 8  # records queued on a link before its slots are skipped
LATE_S = 0.005  # a slot fired this much after its deadline counts as late
BUSY_SHARE = 0.5  # own stream data above this share of our record bytes: we are "busy"
BUSY_TAU_S = 0.5  # time constant of that share
FWD_HIGH_S = 0.15  # a forward queue to a peer this many seconds of its slots deep: "busy" too
FWD_HIGH_RECORDS = 4  # ... or this many mean records deep, whichever is more
TAIL_COPIES = 4  # copies of a tail byte that went via a forwarder, each by another peer
TOMBSTONE_S = 30.0  # how long a finished stream still answers retransmissions
MAX_STREAMS = 256  # live streams a peer may open to us


def _sub_seed(*parts: object) -> int:
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big")


def _show(packed: bytes) -> str:
    """A packed IPv4 address as text (for messages only)."""
    return str(ipaddress.IPv4Address(packed))


def _ip4(ip: str) -> bytes:
    try:
        return ipaddress.IPv4Address(ip).packed
    except ValueError:
        raise CoverError(f"cover addresses are IPv4, got {ip!r}") from None


def _split(frag: bytes, k: int) -> tuple[bytes, bytes]:
    """A DATA fragment cut after ``k`` data bytes into two DATA fragments."""
    kind, flags, src, dst, sid, vport, off, n = _FRAG.unpack_from(frag)
    body = frag[HDR:]
    return (_FRAG.pack(kind, flags, src, dst, sid, vport, off, k) + body[:k],
            _FRAG.pack(kind, flags, src, dst, sid, vport, off + k, n - k) + body[k:])


def _sack(s: _Stream, most: int) -> bytes:
    """The ranges received beyond ``s.rcv_nxt`` (merged, lowest first, at most ``most``)."""
    out: list[list[int]] = []
    for start in sorted(s.ooo):
        stop = start + len(s.ooo[start])
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return b"".join(_SACK.pack(a, b) for a, b in out[: min(most, MAX_SACK)])


# --- the schedule ------------------------------------------------------------------------------
class CoverSchedule:
    """The cover slots of one host, fixed by its seed: pure and deterministic.

    ``slots()`` yields ``(t_offset_s, peer, record_size)`` for ever: Poisson arrivals at
    ``rate_bytes_per_s / mean record size``, the peer uniform over ``peers``, the on-wire record
    size uniform in ``[record_min, record_max]``. Times, peers and sizes come from three separate
    RNGs, and each peer's connection budgets and handshake sizes from its own, so nothing a stream
    does (it only fills records) can shift any of them.
    """

    def __init__(self, settings: CoverSettings, host: str, peers: Sequence[str], seed: int):
        if not isinstance(settings, CoverSettings):
            raise CoverError(f"CoverSchedule needs CoverSettings, got {type(settings).__name__}")
        if not peers:
            raise CoverError(f"host {host!r} has no cover peers")
        if len(set(peers)) != len(peers):
            raise CoverError(f"duplicate cover peers: {sorted(peers)}")
        self.settings = settings
        self.host = host
        self.peers = tuple(sorted(peers))
        self.seed = seed
        self.mean_record = (settings.record_min + settings.record_max) / 2
        self.slot_rate = settings.rate_bytes_per_s / self.mean_record  # slots per second
        self._flows = flow_sizes(settings.flow_cdf, settings.flow_cap_bytes)

    def _rng(self, label: str) -> random.Random:
        return random.Random(_sub_seed("cover", self.settings.seed, self.seed, self.host, label))

    def record_size(self, rng: random.Random) -> int:
        return rng.randint(self.settings.record_min, self.settings.record_max)

    def slots(self) -> Iterator[tuple[float, str, int]]:
        times, who, sizes = self._rng("time"), self._rng("peer"), self._rng("size")
        t = 0.0
        while True:
            t += times.expovariate(self.slot_rate)
            yield t, who.choice(self.peers), self.record_size(sizes)

    def connections(self, peer: str) -> Iterator[tuple[int, int, int, int]]:
        """Per cover connection to ``peer``: (byte budget, message-1 size, confirmation size,
        message-2 size) - the budget from the tenant flow-size CDF, the sizes on-wire and drawn
        like records (message 2 is the peer's to send; we draw the size we answer with)."""
        if peer not in self.peers:
            raise CoverError(f"{peer!r} is not a cover peer of {self.host!r}")
        rng = self._rng("conn|" + peer)
        while True:
            budget = self._flows.sample(rng)
            yield budget, self.record_size(rng), self.record_size(rng), self.record_size(rng)


# --- streams -----------------------------------------------------------------------------------
@dataclass
class _Interval:
    start: int
    stop: int  # FIN is the unit [end, end + 1)
    t: float
    retx: int = 0
    via: str | None = None  # the forwarder it went by (None: direct, or retransmitted)
    copies: tuple[str, ...] = ()  # the peers tail copies of it went to (``CoverMux._copy``)


@dataclass
class _Stream:
    key: tuple[str, int]  # (opener ip, stream id)
    peer: str
    vport: int
    opener: bool
    sock: socket.socket  # the mux's end of the socketpair
    role: socket.socket | None  # the role's end (closed on our side once handed out)
    cond: threading.Condition
    rto: float
    # send half
    buf: bytearray = field(default_factory=bytearray)
    una: int = 0
    end: int = 0
    nxt: int = 0
    eof: bool = False  # the role shut its writing side: FIN after the data
    fin_acked: bool = False
    flight: list[_Interval] = field(default_factory=list)
    srtt: float | None = None
    rttvar: float = 0.0
    last_progress: float = 0.0
    rack: float = float("-inf")  # latest first-send time among intervals the peer acknowledged
    # receive half
    rcv_nxt: int = 0
    ooo: dict[int, bytes] = field(default_factory=dict)
    rfin: int | None = None  # offset of the peer's FIN, once seen
    outq: deque[bytes] = field(default_factory=deque)
    written: int = 0
    delivered_eof: bool = False
    eof_queued: bool = False
    ack_due: bool = False
    # the opener announces the stream (an empty DATA) until the peer answers anything
    synced: bool = False
    syn_t: float = float("-inf")
    born: float = 0.0
    # life
    dead: str | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def outstanding(self) -> bool:
        return (not self.synced or self.nxt > self.una
                or (self.eof and not self.fin_acked and self.nxt > self.end))


def _new_peer_stats() -> dict[str, int]:
    return dict.fromkeys(
        ("records_sent", "bytes_sent", "records_received", "bytes_received", "data_bytes",
         "forwarded_bytes", "padding_bytes", "skipped", "connections", "connect_failures",
         "send_failures", "malformed", "dropped_forward", "late"), 0)


class CoverMux:
    """One agent's cover traffic and the streams inside it (see the module docstring).

    ``listen_addr`` overrides where this mux listens (default ``(cfg.ip, settings.port)``), so a
    test can put a recording relay at the address its peers dial; ``trace`` keeps every record
    actually sent as ``(t_slot, t_sent, peer, record_bytes_on_wire, stream_data_bytes)`` (times
    from ``start()``, ``t_slot`` the schedule's).
    """

    def __init__(
        self,
        cfg: CoverConfig,
        static: X25519PrivateKey,
        log: Callable[[str], None] | None = None,
        *,
        listen_addr: tuple[str, int] | None = None,
        trace: bool = False,
    ) -> None:
        if not isinstance(cfg, CoverConfig):
            raise CoverError(f"CoverMux needs a CoverConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.settings = cfg.settings
        self.static = static
        self.log = log or (lambda _msg: None)
        self.ip = cfg.ip
        self._me = _ip4(cfg.ip)
        self.peers = {p.ip: p for p in cfg.peers}
        # addresses packed once, both ways: the record path looks them up, never parses them
        self._packed = {ip: _ip4(ip) for ip in [cfg.ip, *self.peers]}
        self._by_packed = {b: ip for ip, b in self._packed.items()}
        if cfg.ip in self.peers:
            raise CoverError(f"host {cfg.host!r} lists itself ({cfg.ip}) as a cover peer")
        self._keys = {}
        for p in cfg.peers:
            try:
                load_public(p.pubkey)
            except ValueError as exc:
                raise CoverError(f"cover peer {p.host} ({p.ip}): {exc}") from None
            self._keys[p.pubkey] = p.ip
        if len(self._keys) != len(cfg.peers) or len(self.peers) != len(cfg.peers):
            raise CoverError(f"cover peers of {cfg.host!r} repeat an address or a key")
        self.schedule = CoverSchedule(self.settings, cfg.host, list(self.peers), cfg.seed)
        self.listen_addr = listen_addr or (cfg.ip, self.settings.port)
        n = max(1, len(self.peers))
        pair_interval = n / self.schedule.slot_rate  # mean time between slots to one peer
        self._rto_min = max(0.2, 4 * pair_interval)
        # a low rate must not look like a dead peer: at least 20 slot intervals to each peer
        self.stream_timeout = max(self.settings.stream_timeout_s, 20 * pair_interval)
        self._rto_init = max(0.5, 8 * pair_interval)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queues: dict[str, queue.Queue[tuple[float, bytes, int] | None]] = {
            ip: queue.Queue() for ip in self.peers}
        self._fwd: dict[str, deque[bytes]] = {ip: deque() for ip in self.peers}
        self._fwd_bytes: dict[str, int] = dict.fromkeys(self.peers, 0)
        self._ctrl: list[tuple[str, bytes]] = []  # (final destination, fragment): RSTs, late ACKs
        self._streams: dict[tuple[str, int], _Stream] = {}
        # streams gone: key -> (final ACK, or -1 if reset; expiry): late fragments get answers
        self._tombs: dict[tuple[str, int], tuple[int, float]] = {}
        self._binds: dict[int, Callable[[socket.socket, tuple[str, int]], None]] = {}
        # a role end -> why the mux closed its stream
        self._closed_why: weakref.WeakKeyDictionary[socket.socket, str] = (
            weakref.WeakKeyDictionary())
        self._stats = {ip: _new_peer_stats() for ip in self.peers}
        self._last_rx: dict[str, float] = dict.fromkeys(self.peers, 0.0)  # last record, monotonic
        self._link_up: dict[str, bool] = dict.fromkeys(self.peers, True)  # last send worked
        # stream bytes sent via each forwarder and not yet acknowledged: capped, so no
        # forwarder's queue to the destination grows without bound (its slots there are few)
        self._via_bytes: dict[str, int] = dict.fromkeys(self.peers, 0)
        pair_rate = self.settings.rate_bytes_per_s / n
        # a forwarder's queue to Z is a tandem of two links of one pair's rate each: it keeps
        # Z's link busy only with a few records queued (FWD_HIGH_RECORDS), at any rate
        rec = self.schedule.mean_record
        self.via_window = int(max(64 << 10, 0.3 * pair_rate, 2 * FWD_HIGH_RECORDS * rec))
        self.fwd_high = int(max(16 << 10, FWD_HIGH_S * pair_rate, FWD_HIGH_RECORDS * rec))
        # unsent bytes a stream holds: a few slots' worth, so a role with several streams (the
        # source's hops) hands each chunk to the stream that moves first, not to a deep queue
        self.read_ahead = int(max(64 << 10, READ_AHEAD_S * self.settings.rate_bytes_per_s))
        # a stream's tail: at most this much unacknowledged once the role's bytes are all sent
        self.copy_below = 2 * self.via_window
        self._own_share = 0.0  # our own stream data's share of our record bytes (smoothed)
        self._share_t = 0.0
        # per peer, the BUSY marks of its last record (itself, or peers it forwards to) and when
        self._marks: dict[str, tuple[float, set[str]]] = {
            ip: (float("-inf"), set()) for ip in self.peers}
        self.busy_hold = max(0.3, 4 * pair_interval)  # a peer's BUSY mark counts this long
        self._late_max = 0.0
        self._slots = 0
        self._retransmits = 0
        self._copies = 0  # bytes of tail copies sent
        self._next_sid = random.SystemRandom().getrandbits(32)
        self._sys = random.SystemRandom()
        self._order = random.Random(self._sys.getrandbits(64))  # which stream goes first
        self._incoming: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.trace: list[tuple[float, float, str, int, int]] | None = [] if trace else None
        self.started_at: float | None = None

    # --- life -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._listener is not None:
            raise CoverError("cover mux already started")
        try:
            self._listener = listen(*self.listen_addr, backlog=64)
        except OSError as exc:
            raise CoverError(f"cover mux {self.cfg.host} cannot listen on "
                             f"{self.listen_addr[0]}:{self.listen_addr[1]}: {exc}") from None
        self._listener.settimeout(0.2)
        self.started_at = time.monotonic()
        self._spawn(self._accept_loop, "cover-accept")
        for ip in self.peers:
            self._spawn(self._sender, f"cover-send-{ip}", ip)
        self._spawn(self._scheduler, "cover-sched")
        self._spawn(self._house, "cover-house")
        self.log(f"cover mux {self.cfg.host} on {self.listen_addr[0]}:{self.listen_addr[1]}: "
                 f"{len(self.peers)} peers, {self.schedule.slot_rate:.1f} slots/s")

    def stop(self) -> None:
        self._stop.set()
        for q in self._queues.values():
            q.put(None)
        with self._lock:
            streams = list(self._streams.values())
        for s in streams:
            self._abort(s, "cover mux stopped", notify=False)
        for s in list(self._incoming):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        for s in streams:
            for t in s.threads:
                t.join(5)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> CoverMux:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, fn: Callable[..., None], name: str, *args: Any) -> threading.Thread:
        if len(self._threads) > 64:  # receivers come and go with cover connections
            self._threads = [t for t in self._threads if t.is_alive()]
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    # --- stream API -----------------------------------------------------------------------
    @property
    def rate_bytes_per_s(self) -> float:
        """The cover rate this mux sends at (all peers together): what a stream can get."""
        return float(self.settings.rate_bytes_per_s)

    def open(self, peer_ip: str, vport: int) -> socket.socket:
        """A stream to ``peer_ip``'s ``vport``: the role's end of a socketpair. The peer's
        ``on_stream`` runs as soon as the stream's announcement (or first byte) arrives."""
        if peer_ip not in self.peers:
            raise CoverError(f"{peer_ip!r} is not a cover peer of {self.cfg.host!r}")
        if not 0 <= vport <= 65535:
            raise CoverError(f"vport must be 0..65535, got {vport!r}")
        if self._stop.is_set() or self._listener is None:
            raise CoverError("cover mux is not running")
        with self._lock:
            self._next_sid = (self._next_sid + 1) & 0xFFFFFFFF
            key = (self.ip, self._next_sid)
            s = self._new_stream(key, peer_ip, vport, opener=True)
        role = s.role
        assert role is not None
        return role

    def bind(self, vport: int, on_stream: Callable[[socket.socket, tuple[str, int]], None]) -> None:
        """Streams peers open to ``vport`` are handed to ``on_stream(sock, (peer_ip, stream_id))``
        in a thread of their own."""
        if not 0 <= vport <= 65535:
            raise CoverError(f"vport must be 0..65535, got {vport!r}")
        with self._lock:
            if vport in self._binds:
                raise CoverError(f"vport {vport} already bound")
            self._binds[vport] = on_stream

    def unbind(self, vport: int) -> None:
        with self._lock:
            self._binds.pop(vport, None)

    def acked(self, sock: socket.socket) -> int | None:
        """Bytes written to the role end ``sock`` that the peer's mux has acknowledged (None:
        no live stream behind it). A role learns from it what has arrived, without a reply of
        its own (the leader, ``hosts.roles.leader``)."""
        with self._lock:
            for s in self._streams.values():
                if s.role is sock:
                    return min(s.una, s.end)
        return None

    def why_closed(self, sock: socket.socket) -> str | None:
        """Why the mux closed the stream behind this role end (None: it did not, or not yet)."""
        with self._lock:
            return self._closed_why.get(sock)

    def _new_stream(self, key: tuple[str, int], peer: str, vport: int, opener: bool) -> _Stream:
        mine, role = socket.socketpair()
        role.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ROLE_SNDBUF)
        s = _Stream(key, peer, vport, opener, mine, role, threading.Condition(self._lock),
                    self._rto_init, last_progress=time.monotonic(), born=time.monotonic())
        self._streams[key] = s
        for fn, name in ((self._stream_reader, "rd"), (self._stream_writer, "wr")):
            t = threading.Thread(target=fn, args=(s,), name=f"cover-{name}-{key[1]}", daemon=True)
            s.threads.append(t)
            t.start()
        return s

    def _stream_reader(self, s: _Stream) -> None:
        """The role's bytes into the send buffer; stops reading while the buffer is full."""
        while True:
            with s.cond:
                while s.dead is None and (s.end - s.una >= SEND_BUFFER
                                          or s.end - s.nxt >= self.read_ahead):
                    s.cond.wait(0.5)
                if s.dead is not None:
                    return
                room = SEND_BUFFER - (s.end - s.una)
            try:
                data = s.sock.recv(min(room, 65536))
            except OSError:
                data = b""
            with s.cond:
                if s.dead is not None:
                    return
                if not data:
                    s.eof = True
                    return
                if s.nxt == s.una:
                    s.last_progress = time.monotonic()
                s.buf += data
                s.end += len(data)

    def _stream_writer(self, s: _Stream) -> None:
        """In-order received bytes to the role; EOF once the peer's FIN is reached."""
        broken = False
        while True:
            with s.cond:
                while s.dead is None and not s.outq and not s.eof_queued:
                    s.cond.wait(0.5)
                if s.dead is not None:
                    return
                chunk = s.outq.popleft() if s.outq else None
            if chunk is None:
                try:
                    s.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                with s.cond:
                    s.delivered_eof = True
                    self._maybe_done(s)
                return
            if not broken:
                try:
                    s.sock.sendall(chunk)
                except OSError:
                    broken = True  # the role closed its end: keep acknowledging, drop the bytes
            with s.cond:
                s.written += len(chunk)

    def _maybe_done(self, s: _Stream) -> None:
        """Both directions finished: forget the stream, keep a tombstone for late retransmits."""
        if s.dead is None and s.delivered_eof and s.eof and s.fin_acked:
            s.dead = "finished"
            if s.ack_due:  # the ACK of the peer's FIN still has to go
                self._ctrl.append((s.peer, self._frag(ACK, s, s.rcv_nxt, b"")))
            self._streams.pop(s.key, None)
            self._tombs[s.key] = (s.rcv_nxt, time.monotonic() + TOMBSTONE_S)
            s.cond.notify_all()
            try:
                s.sock.close()
            except OSError:
                pass

    def _abort(self, s: _Stream, why: str, notify: bool = True) -> None:
        with self._lock:
            if s.dead is not None:
                return
            s.dead = why
            for iv in s.flight:
                self._unvia(iv, iv.stop - iv.start)
            s.flight.clear()
            self._streams.pop(s.key, None)
            self._tombs[s.key] = (-1, time.monotonic() + TOMBSTONE_S)
            if s.role is not None:
                self._closed_why[s.role] = why
            if notify:
                self._ctrl.append((s.peer, self._frag(RST, s, s.nxt, b"")))
            s.cond.notify_all()
        self.log(f"cover stream {s.key[0]}#{s.key[1]} to {s.peer} closed: {why}")
        try:
            s.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.sock.close()

    # --- fragments ------------------------------------------------------------------------
    def _frag(self, kind: int, s: _Stream, off: int, data: bytes | memoryview) -> bytes:
        return _FRAG.pack(kind, OPENER if s.opener else 0, self._me, self._packed[s.peer],
                          s.key[1], s.vport, off, len(data)) + data

    def _unvia(self, iv: _Interval, n: int) -> None:
        if iv.via is not None:
            self._via_bytes[iv.via] -= n

    def _take(self, s: _Stream, room: int, now: float, peer: str, direct: bool) -> bytes | None:
        """One fragment of ``s``'s send half fitting in ``room`` bytes (header included): a due
        retransmission first (via another peer only once it is overdue by an RTO), else new data
        within the window, else the FIN."""
        if room <= HDR:
            return None
        if not s.synced and s.end == 0 and now - s.syn_t >= s.rto and (direct or s.syn_t < 0):
            s.syn_t = now
            return self._frag(DATA, s, 0, b"")
        reo = max(self._rto_min / 4, 0.25 * (s.srtt or 0.0))  # reordering the paths may cause
        for i, iv in enumerate(s.flight):
            overdue = now - iv.t - s.rto
            if (iv.retx == 0 and s.srtt is not None and s.rack > iv.t + reo
                    and now - iv.t > s.srtt + reo):
                overdue = max(overdue, 0.0)  # data sent after it arrived, it did not: lost
            if overdue < 0 or (not direct and overdue < s.rto):
                continue
            if iv.start >= s.end:  # the FIN
                iv.t, iv.retx = now, iv.retx + 1
                self._retransmits += 1
                return self._frag(FIN, s, s.end, b"")
            frag = self._again(s, i, room, peer, direct)
            if frag is None:
                continue
            k = iv.stop - iv.start
            self._unvia(iv, k)
            iv.via = None if direct else peer
            self._unvia(iv, -k)
            iv.t, iv.retx = now, iv.retx + 1
            self._retransmits += 1
            return frag
        limit = min(s.end, s.una + SEND_BUFFER)
        if s.nxt < limit:
            if s.nxt == s.una:
                s.last_progress = now
            k = min(room - HDR, limit - s.nxt)
            if not direct:
                k = min(k, self.via_window - self._via_bytes[peer])
                if k <= 0:
                    return None
                self._via_bytes[peer] += k
            lo = s.nxt - s.una
            frag = self._frag(DATA, s, s.nxt, memoryview(s.buf)[lo : lo + k])
            s.flight.append(_Interval(s.nxt, s.nxt + k, now, 0, None if direct else peer))
            s.nxt += k
            if s.end - s.nxt < self.read_ahead // 2 <= s.end - s.nxt + k:
                s.cond.notify_all()  # the reader may take more of the role's bytes (once)
            return frag
        if s.eof and s.nxt == s.end:
            if s.nxt == s.una:
                s.last_progress = now
            s.flight.append(_Interval(s.end, s.end + 1, now))
            s.nxt = s.end + 1
            return self._frag(FIN, s, s.end, b"")
        return None

    def _again(self, s: _Stream, i: int, room: int, peer: str, direct: bool) -> bytes | None:
        """A DATA fragment re-sending the start of ``s.flight[i]`` that fits in ``room`` (and,
        unless ``direct``, in ``peer``'s via window; None if nothing does). What does not fit is
        split off as an interval of its own, keeping the forwarder, send time and flags."""
        iv = s.flight[i]
        k = min(room - HDR, iv.stop - iv.start)
        if not direct:
            k = min(k, self.via_window - self._via_bytes[peer])
            if k <= 0:
                return None
        if k < iv.stop - iv.start:  # the rest keeps its forwarder (and its via bytes)
            s.flight.insert(i + 1, replace(iv, start=iv.start + k))
            iv.stop = iv.start + k
        lo = iv.start - s.una
        return self._frag(DATA, s, iv.start, memoryview(s.buf)[lo : lo + k])

    def _copy(self, s: _Stream, room: int, peer: str) -> bytes | None:
        """Another copy of ``s``'s data that went via a forwarder and is not acknowledged yet,
        in ``room`` that would be padding: direct if ``peer`` is the stream's, else via ``peer``.
        Only in a stream's tail (every byte its role gave is sent, at most ``copy_below``
        unacknowledged), at most ``TAIL_COPIES`` per byte, each by a peer it has not gone by,
        none after a direct one; the receiver keeps whichever arrives first. When a forwarder's
        slot to the destination comes is chance (a Poisson schedule, a mean of one pair's slot
        interval) and a chunk waits for its last fragment, so copies by several forwarders cut
        the wait at the end of a transfer (the stop-and-copy's) to the first of their slots;
        the record was going anyway, with padding where the copy is."""
        if room <= HDR or s.nxt < s.end or s.nxt - s.una > self.copy_below:
            return None
        direct = s.peer == peer
        for i, iv in enumerate(s.flight):
            if (iv.via is None or iv.via == peer or peer in iv.copies or s.peer in iv.copies
                    or len(iv.copies) >= TAIL_COPIES or iv.start >= s.end):
                continue
            frag = self._again(s, i, room, peer, direct)
            if frag is None:
                return None
            iv.copies += (peer,)
            self._copies += iv.stop - iv.start
            return frag
        return None

    def _build(self, peer: str, frame_len: int) -> tuple[bytes, int, int, int]:
        """The plaintext of one record to ``peer``: fragments then padding, exactly
        ``frame_len`` bytes. Returns (frame, own data bytes, forwarded bytes, padding bytes)."""
        now = time.monotonic()
        parts: list[bytes] = []
        room = frame_len
        data = fwd = 0
        spray = self.settings.spray
        with self._lock:
            if not self._link_up[peer]:  # the record will likely be lost: put nothing in it
                return bytes(frame_len), 0, 0, frame_len
            marks = [self._me] if self._own_share > BUSY_SHARE else []
            marks += [self._packed[z] for z, n in self._fwd_bytes.items()
                      if n > self.fwd_high and z != peer]
            for who in marks:
                if room < 2 * HDR:
                    break
                parts.append(_FRAG.pack(BUSY, 0, self._me, who, 0, 0, 0, 0))
                room -= HDR
            t_marks, busy = self._marks[peer]
            if now - t_marks > self.busy_hold:
                busy = set()
            q = self._fwd[peer]
            while q and room > HDR:
                f = q[0]
                if len(f) <= room:
                    q.popleft()
                    self._fwd_bytes[peer] -= len(f)
                elif f[0] == DATA:  # offsets let a forwarder re-fragment
                    f, q[0] = _split(f, room - HDR)
                    self._fwd_bytes[peer] -= len(f) - HDR
                else:
                    break
                parts.append(f)
                room -= len(f)
                fwd += len(f)
            keep = []
            for dst, f in self._ctrl:
                if len(f) <= room and (dst == peer or spray):
                    parts.append(f)
                    room -= len(f)
                else:
                    keep.append((dst, f))
            self._ctrl = keep
            streams = list(self._streams.values())
            self._order.shuffle(streams)  # no stream starves another
            for s in streams:
                if s.ack_due and room >= HDR and (s.peer == peer or spray):
                    f = self._frag(ACK, s, s.rcv_nxt, _sack(s, (room - HDR) // _SACK.size))
                    parts.append(f)
                    room -= len(f)
                    s.ack_due = False
            for direct in (True, False):
                if not direct and (not spray or peer in busy):
                    break
                for s in streams:
                    if (s.peer == peer) != direct or (not direct and s.peer in busy):
                        continue
                    while room > HDR:
                        f = self._take(s, room, now, peer, direct)
                        if f is None:
                            break
                        parts.append(f)
                        room -= len(f)
                        data += len(f) - HDR
            dt = now - self._share_t
            self._share_t = now
            a = min(1.0, dt / BUSY_TAU_S)
            self._own_share += a * (data / frame_len - self._own_share)
            if self.settings.copies:  # in what is left, which would be padding (not "busy")
                for s in streams:
                    if s.peer != peer and (not spray or peer in busy or s.peer in busy):
                        continue
                    while (f := self._copy(s, room, peer)) is not None:
                        parts.append(f)
                        room -= len(f)
                        data += len(f) - HDR
        if room:
            parts.append(bytes(room))  # a PAD type byte, then zeros: encrypted, never seen
        return b"".join(parts), data, fwd, room

    def _parse(self, frm: str, frame: bytes) -> None:
        """Act on one authenticated record from peer ``frm``; a malformed fragment ends the
        record's parsing and is counted."""
        view = memoryview(frame)
        off = 0
        marks: set[str] = set()
        self._marks[frm] = (time.monotonic(), marks)  # each record's marks replace the last's
        while off < len(frame):
            if frame[off] == PAD:
                return
            if len(frame) - off < HDR:
                return self._bad(frm, "truncated fragment header")
            kind, flags, src, dst, sid, vport, pos, n = _FRAG.unpack_from(frame, off)
            if kind > BUSY or flags & ~OPENER or off + HDR + n > len(frame):
                return self._bad(frm, f"bad fragment (type {kind}, flags {flags}, length {n})")
            if n and kind != DATA and not (kind == ACK and n % _SACK.size == 0):
                return self._bad(frm, f"type {kind} fragment with {n} data bytes")
            if kind == BUSY:
                if src != self._packed[frm]:
                    return self._bad(frm, "BUSY mark not from the record's sender")
                marks.add(self._by_packed.get(dst) or _show(dst))  # an unknown one names none
                off += HDR
                continue
            start, off = off, off + HDR + n
            src_ip = self._by_packed.get(src)
            if dst == self._me:
                if src_ip is None or src_ip == self.ip:
                    return self._bad(frm, f"fragment from unknown origin {_show(src)}")
                self._deliver(kind, flags, src_ip, sid, vport, pos, view[start + HDR : off])
            else:
                # forward: only one more hop, only for the direct sender, only to a peer
                dst_ip = self._by_packed.get(dst)
                if src_ip != frm or dst_ip is None or dst_ip in (frm, self.ip):
                    return self._bad(frm, f"fragment {_show(src)}->{_show(dst)} not "
                                          "forwardable")
                raw = frame[start:off]
                with self._lock:
                    if self._fwd_bytes[dst_ip] + len(raw) > FORWARD_CAP:
                        self._stats[dst_ip]["dropped_forward"] += 1
                        continue
                    self._fwd[dst_ip].append(raw)
                    self._fwd_bytes[dst_ip] += len(raw)
        return None

    def _bad(self, frm: str, why: str) -> None:
        with self._lock:
            self._stats[frm]["malformed"] += 1
        self.log(f"cover record from {frm}: {why}")

    def _deliver(self, kind: int, flags: int, src: str, sid: int, vport: int, pos: int,
                 body: memoryview) -> None:
        key = (src, sid) if flags & OPENER else (self.ip, sid)
        now = time.monotonic()
        hand: _Stream | None = None
        with self._lock:
            s = self._streams.get(key)
            if s is not None and s.peer != src:
                return self._bad(src, f"stream {sid} fragment from {src}, not {s.peer}")
            if s is None:
                tomb = self._tombs.get(key)
                if tomb is not None and kind in (DATA, FIN):
                    mine = 0 if flags & OPENER else OPENER
                    answer = ACK if tomb[0] >= 0 else RST
                    self._ctrl.append((src, _FRAG.pack(answer, mine, self._me, self._packed[src],
                                                       sid, vport, max(0, tomb[0]), 0)))
                    return None
                if kind != DATA or pos != 0 or not flags & OPENER or tomb is not None:
                    return None  # a stream we no longer have, or a fragment ahead of its start
                on_stream = self._binds.get(vport)
                crowded = sum(1 for x in self._streams.values() if x.peer == src) >= MAX_STREAMS
                if on_stream is None or crowded:
                    self._ctrl.append((src, _FRAG.pack(RST, 0, self._me, self._packed[src], sid,
                                                       vport, 0, 0)))
                    return None
                s = self._new_stream(key, src, vport, opener=False)
                s.synced = True
                hand = s
            if kind == RST:
                pass
            elif kind == ACK:
                self._on_ack(s, pos, [_SACK.unpack_from(body, i)
                                      for i in range(0, len(body), _SACK.size)], now)
            else:
                self._on_data(s, kind, pos, bytes(body))
        if kind == RST:
            self._abort(s, f"reset by {src}", notify=False)
            return None
        if hand is not None:
            role = hand.role
            assert role is not None
            threading.Thread(target=self._bindings_call, args=(on_stream, role, (src, sid)),
                             name=f"cover-stream-{sid}", daemon=True).start()
        return None

    def _bindings_call(self, fn: Callable[[socket.socket, tuple[str, int]], None],
                       sock: socket.socket, who: tuple[str, int]) -> None:
        try:
            fn(sock, who)
        except Exception as exc:  # a role's bug must not take the mux down
            self.log(f"cover on_stream for {who}: {type(exc).__name__}: {exc}")

    def _on_ack(self, s: _Stream, a: int, sacks: list[tuple[int, int]], now: float) -> None:
        """Cumulative ACK ``a`` and selective ranges: drop acknowledged bytes, forget sacked
        intervals (our receiver keeps what it stored), sample the RTT from first sends."""
        if a < s.una or a > s.nxt:
            return
        s.synced = True
        s.last_progress = now  # the peer is there (a slow role may keep its window shut)
        sacks = [(max(lo, a), min(hi, s.nxt)) for lo, hi in sacks if hi > a and lo < s.nxt]
        samples = []
        keep = []
        for iv in s.flight:
            if iv.stop <= a or any(lo <= iv.start and iv.stop <= hi for lo, hi in sacks):
                if iv.retx == 0:
                    samples.append(now - iv.t)
                    s.rack = max(s.rack, iv.t)
                self._unvia(iv, iv.stop - iv.start)
                continue
            if iv.start < a:
                self._unvia(iv, a - iv.start)
                iv.start = a
            keep.append(iv)
        s.flight = keep
        for sample in samples:  # every path's delay: the spread between paths goes in rttvar
            if s.srtt is None:
                s.srtt, s.rttvar = sample, sample / 2
            else:
                s.rttvar = 0.75 * s.rttvar + 0.25 * abs(s.srtt - sample)
                s.srtt = 0.875 * s.srtt + 0.125 * sample
        if samples:
            s.rto = min(5.0, max(self._rto_min, s.srtt + 4 * s.rttvar))
        if a == s.una and not samples:
            return
        data_acked = min(a, s.end) - s.una
        del s.buf[:data_acked]
        s.una += data_acked
        if a == s.end + 1 and s.eof:
            s.fin_acked = True
        s.last_progress = now
        s.cond.notify_all()
        self._maybe_done(s)

    def _on_data(self, s: _Stream, kind: int, pos: int, data: bytes) -> None:
        s.ack_due = True
        s.synced = True
        if kind == FIN:
            if s.rfin is None and pos >= s.rcv_nxt:
                s.rfin = pos
        else:
            stop = pos + len(data)
            if stop > s.written + SEND_BUFFER or stop <= s.rcv_nxt or not data:
                return  # beyond the window, or old: the ACK says where we are
            if pos < s.rcv_nxt:
                data, pos = data[s.rcv_nxt - pos :], s.rcv_nxt
            if len(s.ooo.get(pos, b"")) < len(data):
                s.ooo[pos] = data
        while s.rcv_nxt in s.ooo:  # the usual case: the next fragment, exactly
            chunk = s.ooo.pop(s.rcv_nxt)
            s.outq.append(chunk)
            s.rcv_nxt += len(chunk)
        progressed = bool(s.ooo)
        while progressed:
            progressed = False
            for start in list(s.ooo):
                chunk = s.ooo[start]
                if start + len(chunk) <= s.rcv_nxt:
                    del s.ooo[start]
                elif start <= s.rcv_nxt:
                    del s.ooo[start]
                    s.outq.append(chunk[s.rcv_nxt - start :])
                    s.rcv_nxt = start + len(chunk)
                    progressed = True
        if s.rfin is not None and s.rcv_nxt == s.rfin and not s.eof_queued:
            s.rcv_nxt += 1
            s.eof_queued = True
        s.cond.notify_all()

    # --- threads --------------------------------------------------------------------------
    def _scheduler(self) -> None:
        t0 = self.started_at or time.monotonic()
        for t, peer, size in self.schedule.slots():
            deadline = t0 + t
            wait = deadline - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            if self._stop.is_set():
                return
            now = time.monotonic()
            late = now - deadline
            self._slots += 1
            if late > LATE_S:
                with self._lock:
                    self._late_max = max(self._late_max, late)
                    self._stats[peer]["late"] += 1
            st = self._stats[peer]
            if self._queues[peer].qsize() >= QUEUE_MAX:  # backpressure: cover and data alike
                with self._lock:
                    st["skipped"] += 1
                continue
            flen = frame_size(size - 4)
            try:
                frame, data, fwd, pad = self._build(peer, flen)
            except Exception as exc:  # a bug costs this record's contents, never the slot
                self.log(f"cover record to {peer}: {type(exc).__name__}: {exc}")
                frame, data, fwd, pad = bytes(flen), 0, 0, flen
            with self._lock:
                st["data_bytes"] += data
                st["forwarded_bytes"] += fwd
                st["padding_bytes"] += pad
            self._queues[peer].put((t, frame, data))

    def _house(self) -> None:
        """Stream timeouts every 0.1 s, in a thread of their own: closing a stream (socket
        shutdown, a log line) never makes a slot late."""
        while not self._stop.wait(0.1):
            try:
                self._housekeeping(time.monotonic())
            except Exception as exc:  # never let a bug stop the checks
                self.log(f"cover housekeeping: {type(exc).__name__}: {exc}")

    def _housekeeping(self, now: float) -> None:
        timeout = self.stream_timeout
        dead = []
        with self._lock:
            for s in self._streams.values():
                if s.outstanding and now - s.last_progress > timeout:
                    dead.append((s, f"peer {s.peer} acknowledged nothing for {timeout:g} s: "
                                    "unreachable"))
                elif now - max(self._last_rx[s.peer], s.born) > timeout:
                    dead.append((s, f"no cover record from peer {s.peer} for {timeout:g} s: "
                                    "unreachable"))
            for key in [k for k, (_, exp) in self._tombs.items() if exp < now]:
                del self._tombs[key]
        for s, why in dead:
            self._abort(s, why)

    def _sender(self, peer: str) -> None:
        """The link to ``peer``: (re)connects with a drawn budget, sends queued records."""
        q = self._queues[peer]
        st = self._stats[peer]
        conns = self.schedule.connections(peer)
        ch: Channel | None = None
        used = budget = 0
        pub = load_public(self.peers[peer].pubkey)
        t0 = self.started_at or 0.0
        while True:
            item = q.get()
            if item is None:
                break
            t_slot, frame, data = item
            if ch is None:
                budget, m1, conf, _m2 = next(conns)
                try:
                    ch = Channel.connect(self.ip, peer, self.settings.port, pub, self.static,
                                         MIGRATION, timeout=5.0, pad=m1 - MSG1_OVERHEAD,
                                         confirm_pad=frame_size(conf - 4), io_timeout=10.0)
                except (ChannelError, OSError) as exc:
                    with self._lock:
                        st["connect_failures"] += 1
                        self._link_up[peer] = False
                    if st["connect_failures"] in (1, 10, 100) or st["connect_failures"] % 1000 == 0:
                        self.log(f"cover link to {peer}: {exc}")
                    continue  # the record is lost; its stream bytes are retransmitted
                used = ch.bytes_sent
                with self._lock:
                    st["connections"] += 1
            try:
                n = ch.send(frame)
            except ChannelError:
                with self._lock:
                    st["send_failures"] += 1
                    self._link_up[peer] = False
                ch.close()
                ch = None
                continue
            used += n
            with self._lock:
                self._link_up[peer] = True
                st["records_sent"] += 1
                st["bytes_sent"] += n
                if self.trace is not None:
                    self.trace.append((t_slot, time.monotonic() - t0, peer, n, data))
            if used >= budget:
                ch.close()
                ch = None
        if ch is not None:
            ch.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._spawn(self._receiver, "cover-recv", conn)

    def _receiver(self, conn: socket.socket) -> None:
        self._incoming.add(conn)
        try:
            pad = self.schedule.record_size(self._sys) - MSG2_OVERHEAD
            ch = Channel.accept(conn, self.static, set(self._keys), MIGRATION, timeout=5.0,
                                pad=pad)
        except ChannelError as exc:
            self._incoming.discard(conn)
            self.log(f"cover link refused: {exc}")
            return
        frm = self._keys[ch.peer_key]
        st = self._stats[frm]
        try:
            while not self._stop.is_set():
                before = ch.bytes_received
                frame = ch.recv()
                with self._lock:
                    self._last_rx[frm] = time.monotonic()
                    st["records_received"] += 1
                    st["bytes_received"] += ch.bytes_received - before
                try:
                    self._parse(frm, frame)
                except Exception as exc:  # never let a record take the mux down
                    self._bad(frm, f"{type(exc).__name__}: {exc}")
        except ChannelError:
            pass
        finally:
            self._incoming.discard(conn)
            ch.close()

    # --- figures --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Per peer and in total: records and bytes sent and received, relay data carried,
        bytes forwarded, padding, skipped slots, connections; plus slots fired, late slots,
        retransmits, tail copies (bytes), malformed fragments and live streams."""
        with self._lock:
            peers = {ip: dict(v) for ip, v in self._stats.items()}
            for s in self._streams.values():
                peers[s.peer]["streams"] = peers[s.peer].get("streams", 0) + 1
            total: dict[str, Any] = {}
            for v in peers.values():
                v.setdefault("streams", 0)
                for k, x in v.items():
                    total[k] = total.get(k, 0) + x
            total["stream_state"] = [
                {"peer": x.peer, "srtt": round(x.srtt or 0, 3), "rto": round(x.rto, 3),
                 "flight": x.nxt - x.una, "queued": x.end - x.nxt, "rcv_buf": x.rcv_nxt - x.written,
                 "ooo": len(x.ooo)} for x in self._streams.values()]
            total.update(slots=self._slots, late_max_s=self._late_max,
                         retransmits=self._retransmits, copied_bytes=self._copies,
                         live_streams=len(self._streams))
            return {"host": self.cfg.host, "ip": self.ip, "peers": peers, "total": total,
                    "public": public_hex(self.static)}


# --- benchmark ---------------------------------------------------------------------------------
def free_port(ips: Sequence[str], tries: int = 50) -> int:
    """A TCP port free on every one of ``ips`` right now (for loopback meshes)."""
    for _ in range(tries):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = probe.getsockname()[1]
        socks = []
        try:
            for ip in ips:
                t = socket.socket()
                socks.append(t)
                t.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise CoverError(f"no TCP port free on all of {list(ips)}")


def _loopback_muxes(peers: int, net: str, **settings: Any) -> tuple[list[str], list[CoverMux]]:
    """``peers`` muxes at ``net``.1..n on loopback, each with every other as a cover peer, on
    one free port with ``CoverSettings(**settings)`` (the benchmarks' testbed; not started)."""
    keys = [X25519PrivateKey.generate() for _ in range(peers)]
    ips = [f"{net}.{i + 1}" for i in range(peers)]
    st = CoverSettings(port=free_port(ips), **settings)
    muxes = [CoverMux(CoverConfig(st, f"h{i}", ips[i], tuple(
        CoverPeer(f"h{j}", ips[j], public_hex(keys[j])) for j in range(peers) if j != i),
        seed=i), keys[i]) for i in range(peers)]
    return ips, muxes


def bench(peers: int = 4, rate: float = 2e6, mib: float = 4.0, spray: bool = True,
          copies: bool = True, net: str = "127.0.77") -> dict[str, float]:
    """Goodput of one stream between two of ``peers`` loopback muxes (``net``.1..n) against the
    cover rate: ``python -m hosts.cover --peers 4 --rate 2e6 --mib 4``. Not a test."""
    ips, muxes = _loopback_muxes(peers, net, rate_bytes_per_s=rate, spray=spray, copies=copies)
    size = int(mib * (1 << 20))
    done = threading.Event()
    got = [0]

    def sink(sock: socket.socket, _who: tuple[str, int]) -> None:
        while d := sock.recv(1 << 16):
            got[0] += len(d)
        done.set()

    for m in muxes:
        m.start()
    try:
        time.sleep(0.5)
        muxes[1].bind(1, sink)
        t0 = time.monotonic()
        s = muxes[0].open(ips[1], 1)
        s.sendall(bytes(size))
        s.close()
        done.wait(max(60.0, 20 * size / rate))
        dt = time.monotonic() - t0
        tot = muxes[0].stats()["total"]
    finally:
        for m in muxes:
            m.stop()
    return {"peers": peers, "rate_bytes_per_s": rate, "bytes": got[0], "seconds": dt,
            "goodput_bytes_per_s": got[0] / dt, "of_rate": got[0] / dt / rate,
            "retransmits": tot["retransmits"], "copied_bytes": tot["copied_bytes"],
            "late": tot["late"], "skipped": tot["skipped"]}


def latency(peers: int = 16, rate: float = 425e3, record_min: int = 1024,
            record_max: int = 16384, size: int = 16 << 10, probes: int = 40,
            copies: bool = True, net: str = "127.0.78") -> dict[str, Any]:
    """Round trips over one cover hop: mux 0 writes a message to a stream to mux 1, which
    answers 1 byte once it has all of it; the time to that answer, for a 1-byte message and for
    one of ``size`` bytes (median and 90th percentile of ``probes`` each). The defaults are the
    quick scenario's (16 VMs, ~3.4 Mbit/s each): a migration's chunk takes such a hop three
    times, and its acknowledgement twice more, before the source may pause.
    ``python -m hosts.cover --latency``. Not a test."""
    ips, muxes = _loopback_muxes(peers, net, rate_bytes_per_s=rate, record_min=record_min,
                                 record_max=record_max, copies=copies)
    want = [1]  # the length of the message in flight: the prober sends one at a time

    def echo(sock: socket.socket, _who: tuple[str, int]) -> None:
        got = 0
        while d := sock.recv(1 << 16):
            got += len(d)
            if got >= want[0]:
                got -= want[0]
                sock.sendall(b"k")

    trips: dict[int, list[float]] = {1: [], size: []}
    for m in muxes:
        m.start()
    try:
        time.sleep(1.0)
        muxes[1].bind(1, echo)
        s = muxes[0].open(ips[1], 1)
        s.settimeout(30.0)
        for _ in range(probes):
            for n, times in trips.items():
                want[0] = n
                t0 = time.monotonic()
                s.sendall(bytes(n))
                if s.recv(1) != b"k":
                    raise CoverError("latency probe: the echo stream closed")
                times.append(time.monotonic() - t0)
                time.sleep(0.05)
        s.close()
    finally:
        for m in muxes:
            m.stop()

    def p50_p90(v: list[float]) -> dict[str, float]:
        deciles = statistics.quantiles(v, n=10)
        return {"p50": statistics.median(v), "p90": deciles[8]}

    return {"peers": peers, "rate_bytes_per_s": rate, "records": [record_min, record_max],
            "size": size, "probes": probes, "copies": copies,
            "round_trip_1_byte_s": p50_p90(trips[1]),
            "round_trip_message_s": p50_p90(trips[size]),
            "slots_per_peer_per_s": rate / ((record_min + record_max) / 2) / (peers - 1)}


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="cover mux goodput or latency on loopback "
                                 "(benchmark)")
    ap.add_argument("--latency", action="store_true",
                    help="one hop's round trips (default: goodput of one stream)")
    ap.add_argument("--peers", type=int, help="muxes (goodput 4, latency 16)")
    ap.add_argument("--rate", type=float, help="bytes/s per mux (goodput 2e6, latency 425e3)")
    ap.add_argument("--mib", type=float, default=4.0, help="goodput: the stream's size")
    ap.add_argument("--no-spray", action="store_true", help="goodput: direct slots only")
    ap.add_argument("--no-copies", action="store_true", help="no tail copies in padding room")
    ap.add_argument("--records", default="1024,16384", help="latency: record_min,record_max")
    a = ap.parse_args()
    given = {k: v for k, v in (("peers", a.peers), ("rate", a.rate)) if v is not None}
    if a.latency:
        lo, hi = (int(x) for x in a.records.split(","))
        print(json.dumps(latency(record_min=lo, record_max=hi, copies=not a.no_copies, **given)))
    else:
        print(json.dumps(bench(mib=a.mib, spray=not a.no_spray, copies=not a.no_copies,
                               **given)))
