"""The cover mux on real loopback sockets: the schedule does not move when a stream rides in
it, relay and cover records look alike, no static key shows on the wire, streams arrive intact
(two hops too, with a forwarder killed midway), a gone peer closes the stream, bad records are
counted."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, public_hex
from hosts.cover import (
    BUSY,
    DATA,
    HDR,
    MIGRATION,
    TAIL_COPIES,
    CoverMux,
    _Interval,
    _loopback_muxes,
    _Stream,
    free_port,
)
from hosts.protocol.cover import CoverConfig, CoverError, CoverPeer, CoverSettings
from tests.recording import RecordingProxy

_NET = itertools.count(11)  # a /24 of 127.0.0.0/8 per mesh: no test meets another's sockets


class Mesh:
    """N cover muxes on 127.0.k.1..N, complete graph, seeds fixed by index."""

    def __init__(self, n: int, keys: list[X25519PrivateKey] | None = None,
                 hidden: tuple[int, ...] = (), **settings: object) -> None:
        """Muxes whose index is in ``hidden`` listen on 127.0.k.(101+i) instead, so a relay can
        stand at the address their peers dial (``self.hidden``)."""
        net = next(_NET)
        self.ips = [f"127.0.{net}.{i + 1}" for i in range(n)]
        hidden_ips = [f"127.0.{net}.{101 + i}" for i in hidden]
        self.keys = keys or [X25519PrivateKey.generate() for _ in range(n)]
        port = free_port(self.ips + hidden_ips)
        self.settings = CoverSettings(**{"rate_bytes_per_s": 2e6, "port": port, **settings})
        self.log: list[str] = []
        self.hidden = {i: (f"127.0.{net}.{101 + i}", self.settings.port) for i in hidden}
        self.muxes = []
        for i in range(n):
            peers = tuple(CoverPeer(f"h{j}", self.ips[j], public_hex(self.keys[j]))
                          for j in range(n) if j != i)
            cfg = CoverConfig(self.settings, f"h{i}", self.ips[i], peers, seed=i)
            self.muxes.append(CoverMux(cfg, self.keys[i], self.log.append, trace=True,
                                       listen_addr=self.hidden.get(i)))

    def __enter__(self) -> Mesh:
        for m in self.muxes:
            m.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.muxes:
            m.stop()


def read_all(sock: socket.socket) -> bytes:
    buf = bytearray()
    while d := sock.recv(1 << 16):
        buf += d
    return bytes(buf)


def echo_reversed(got: dict) -> object:
    def on_stream(sock: socket.socket, who: tuple[str, int]) -> None:
        data = read_all(sock)
        got["data"], got["who"] = data, who
        sock.sendall(data[::-1])
        sock.close()
    return on_stream


def transfer(mesh: Mesh, size: int, during=None, a: int = 0,
             b: int = 1) -> tuple[bytes, bytes, float, dict]:
    """``size`` random bytes mux ``a`` → mux ``b`` and back reversed; returns (sent, got back,
    seconds, what the acceptor saw)."""
    data = os.urandom(size)
    got: dict = {}
    mesh.muxes[b].bind(9, echo_reversed(got))
    t0 = time.monotonic()
    s = mesh.muxes[a].open(mesh.ips[b], 9)
    s.settimeout(60)
    threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)),
                     daemon=True).start()
    if during is not None:
        during(got)
    back = read_all(s)
    s.close()
    return data, back, time.monotonic() - t0, got


def test_schedule_does_not_move_when_a_stream_rides_in_it() -> None:
    """Same seeds, one run idle, one carrying a stream at full tilt: mux 0 sends the same
    records (peer, size, slot time) in the same order; only their contents differ."""
    runs = []
    keys = [X25519PrivateKey.generate() for _ in range(3)]
    for carry in (False, True):
        with Mesh(3, keys=keys, rate_bytes_per_s=1e6, flow_cap_bytes=100_000) as mesh:
            stop = threading.Event()
            if carry:
                mesh.muxes[1].bind(5, lambda sock, who: read_all(sock))
                s = mesh.muxes[0].open(mesh.ips[1], 5)

                def pump(s=s, stop=stop) -> None:
                    blob = os.urandom(1 << 16)
                    try:
                        while not stop.is_set():
                            s.sendall(blob)
                    except OSError:
                        pass  # the mux stopped under us
                    s.close()
                threading.Thread(target=pump, daemon=True).start()
            time.sleep(2.0)
            stop.set()
        runs.append(mesh)
    idle, busy = (m.muxes[0] for m in runs)
    assert idle.stats()["total"]["skipped"] == busy.stats()["total"]["skipped"] == 0
    assert sum(r[4] for r in idle.trace) == 0
    assert sum(r[4] for r in busy.trace) > 500_000  # the stream did ride along
    for k in (1, 2):  # each peer by its place in the mesh (the runs' /24s differ)
        # from 0.3 s on: every mux listens by then, no first connection is refused
        a = [(round(t, 9), size) for t, _, p, size, _ in idle.trace
             if p == runs[0].ips[k] and t > 0.3]
        b = [(round(t, 9), size) for t, _, p, size, _ in busy.trace
             if p == runs[1].ips[k] and t > 0.3]
        n = min(len(a), len(b))
        assert n > 50
        assert a[:n] == b[:n]
    # and what went out is exactly the seeded schedule's slots for that peer
    horizon = max(t for t, *_ in busy.trace)
    planned = {}
    for t, peer, size in busy.schedule.slots():
        if t > horizon:
            break
        planned[round(t, 9)] = (peer, size)
    assert all(planned[round(t, 9)] == (p, size) for t, _, p, size, _ in busy.trace)
    for mux in (idle, busy):
        delays = sorted(sent - slot for slot, sent, *_ in mux.trace)
        assert delays[len(delays) // 2] < 0.02, "records leave at their slot times"
        assert delays[int(len(delays) * 0.99)] < 0.25


def ks_distance(a: list[int], b: list[int]) -> float:
    a, b = sorted(a), sorted(b)
    d = 0.0
    for x in sorted(set(a) | set(b)):
        fa = sum(1 for v in a if v <= x) / len(a)
        fb = sum(1 for v in b if v <= x) / len(b)
        d = max(d, abs(fa - fb))
    return d


def test_relay_records_and_cover_records_have_one_length_distribution() -> None:
    with Mesh(3, rate_bytes_per_s=1.5e6, spray=True) as mesh:
        data, back, _, _ = transfer(mesh, 3 << 20)
        assert back == data[::-1]
    trace = mesh.muxes[0].trace + mesh.muxes[1].trace
    relay = [size for *_, size, d in trace if d > 0]
    cover = [size for *_, size, d in trace if d == 0]
    st = mesh.settings
    assert len(relay) > 100 and len(cover) > 100
    assert all(st.record_min <= x <= st.record_max for x in relay + cover)
    n, m = len(relay), len(cover)
    crit = 1.95 * ((n + m) / (n * m)) ** 0.5  # two-sample KS, alpha = 0.001
    assert ks_distance(relay, cover) < crit


def messages(stream: bytes) -> Iterator[int]:
    """On-wire lengths (prefix included) of the u32-length-prefixed messages of one direction."""
    off = 0
    while off + 4 <= len(stream):
        (n,) = struct.unpack_from(">I", stream, off)
        yield 4 + n
        off += 4 + n
    assert off == len(stream) or off > len(stream)  # only the last may be cut short


def test_on_the_wire_no_static_key_and_exactly_the_scheduled_messages() -> None:
    """A recording relay in front of mux 1 while a stream runs: mux 0's cover connections
    (handshakes included) never show either static key; each connection is exactly the
    schedule's messages (message 1, confirmation, then the records sent, until its drawn
    budget); message 2 the other way is record-sized too."""
    mesh = Mesh(2, hidden=(1,), rate_bytes_per_s=4e5, flow_cap_bytes=20_000)
    proxy = RecordingProxy(mesh.ips[1], mesh.settings.port, mesh.hidden[1])
    try:
        mesh.muxes[1].start()  # listening before mux 0's first slot: no refused first connect
        mesh.muxes[0].start()
        try:
            data, back, _, _ = transfer(mesh, 300_000)
            time.sleep(0.5)
        finally:
            mesh.__exit__()
    finally:
        proxy.sock.close()
    assert back == data[::-1]
    st = mesh.settings
    with proxy.lock:
        wire = bytes(proxy.data)
        streams = [(d, bytes(b)) for d, b in proxy.streams]
    for k in mesh.keys:
        pub = bytes.fromhex(public_hex(k))
        assert pub not in wire and pub[:16] not in wire and pub[16:] not in wire
    mux = mesh.muxes[0]
    total = mux.stats()["total"]
    assert total["connect_failures"] == total["send_failures"] == 0
    assert total["data_bytes"] >= 300_000
    sent = [size for _, _, _, size, _ in mux.trace]
    conns, expected, cur, used, budget = mux.schedule.connections(mesh.ips[1]), [], None, 0, 0
    for size in sent:
        if cur is None:
            budget, m1, conf, _ = next(conns)
            cur, used = [m1, conf], m1 + conf
        cur.append(size)
        used += size
        if used >= budget:
            expected.append(cur)
            cur = None
    if cur is not None:
        expected.append(cur)
    ups = [list(messages(b)) for d, b in streams if d == "up"]
    assert len(ups) >= 3  # budgets close connections and open new ones
    assert ups == expected
    downs = [list(messages(b)) for d, b in streams if d == "down"]
    assert len(downs) == len(ups)
    assert all(len(m) == 1 and st.record_min <= m[0] <= st.record_max for m in downs), downs


def test_stream_both_ways_bit_identical_with_spraying_and_goodput() -> None:
    with Mesh(4, rate_bytes_per_s=2e6, spray=True) as mesh:
        time.sleep(0.3)
        data, back, dt, got = transfer(mesh, 3 << 20)
        stats = [m.stats()["total"] for m in mesh.muxes]
    assert got["data"] == data
    assert got["who"][0] == mesh.ips[0]
    assert back == data[::-1]
    assert stats[2]["forwarded_bytes"] > 100_000 and stats[3]["forwarded_bytes"] > 100_000
    assert all(s["malformed"] == 0 for s in stats)
    rate = mesh.settings.rate_bytes_per_s
    print(f"\ncover goodput: {2 * len(data) / dt / 1e6:.2f} MB/s over both directions in "
          f"{dt:.2f} s, cover rate {rate / 1e6:.2f} MB/s per VM "
          f"({2 * len(data) / dt / rate:.0%} of one VM's rate; retransmits "
          f"{stats[0]['retransmits'] + stats[1]['retransmits']})")


@pytest.mark.parametrize("copies", [True, False])
def test_tail_copies_fill_padding_and_the_stream_arrives_intact(copies) -> None:
    """Short transfers end in a tail waiting at forwarders: with ``copies`` some of it goes a
    few more times (in room that was padding), at most TAIL_COPIES times per byte that went via a
    forwarder; without, never. Either way the bytes arrive intact."""
    with Mesh(6, rate_bytes_per_s=1e6, spray=True, copies=copies) as mesh:
        time.sleep(0.3)
        for b in range(1, 5):
            data, back, _, got = transfer(mesh, 96 << 10, b=b)
            assert got["data"] == data and back == data[::-1]
        stats = [m.stats()["total"] for m in mesh.muxes]
    copied = sum(s["copied_bytes"] for s in stats)
    forwarded = sum(s["forwarded_bytes"] for s in stats)  # first copies and second ones
    if copies:
        assert 0 < copied <= forwarded, (copied, forwarded)
    else:
        assert copied == 0


def test_a_tail_byte_goes_at_most_tail_copies_more_times_each_by_another_peer() -> None:
    """``_copy`` (no mux running): a tail that went via one forwarder is copied by up to
    TAIL_COPIES other peers, never twice by one nor by its first forwarder, and never again
    once a copy went direct; data not in the tail, or that went direct, is not copied."""
    ips, (mux, *_) = _loopback_muxes(TAIL_COPIES + 4, "127.0.79", rate_bytes_per_s=1e6)
    dst, first, *others = ips[1:]
    a, b = socket.socketpair()

    def stream(sent_via: str | None, end: int = 1000, nxt: int = 1000) -> _Stream:
        s = _Stream((mux.ip, 1), dst, 1, True, a, None, threading.Condition(), 1.0,
                    buf=bytearray(1000), end=end, nxt=nxt)
        s.flight.append(_Interval(0, nxt, time.monotonic(), via=sent_via))
        return s

    try:
        s = stream(first)
        assert mux._copy(s, 2000, first) is None  # not by the peer it went by
        went = [p for p in [*others, *others] if mux._copy(s, 2000, p) is not None]
        assert went == others[:TAIL_COPIES]  # each peer once, TAIL_COPIES in all
        s = stream(first)
        assert mux._copy(s, 2000, dst) is not None  # direct to its destination
        assert all(mux._copy(s, 2000, p) is None for p in [dst, *others])
        assert mux._copy(stream(None), 2000, others[0]) is None  # went direct: on its way
        assert mux._copy(stream(first, end=2000), 2000, others[0]) is None  # not its tail
    finally:
        a.close()
        b.close()


def test_direct_only_stream_without_spraying() -> None:
    with Mesh(3, rate_bytes_per_s=2e6, spray=False) as mesh:
        data, back, dt, got = transfer(mesh, 1 << 20)
        stats = [m.stats()["total"] for m in mesh.muxes]
    assert got["data"] == data and back == data[::-1]
    assert stats[2]["forwarded_bytes"] == 0
    print(f"\ndirect-only goodput {2 * len(data) / dt / 1e6:.2f} MB/s")


def test_a_forwarder_killed_midway_costs_retransmissions_not_the_stream() -> None:
    with Mesh(4, rate_bytes_per_s=2e6, spray=True, stream_timeout_s=10) as mesh:
        time.sleep(0.3)
        killed = {}

        def kill_when_flowing(got: dict) -> None:
            deadline = time.monotonic() + 20
            while mesh.muxes[2].stats()["total"]["forwarded_bytes"] < 300_000:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            mesh.muxes[2].stop()
            killed["at"] = mesh.muxes[0].stats()["total"]["data_bytes"]

        data, back, dt, got = transfer(mesh, 4 << 20, during=kill_when_flowing)
        stats = mesh.muxes[0].stats()
    assert got["data"] == data and back == data[::-1]
    assert killed["at"] < len(data), "the forwarder died mid-transfer"
    assert stats["total"]["retransmits"] > 0
    assert stats["peers"][mesh.ips[2]]["connect_failures"] > 0


def test_a_gone_peer_closes_the_stream_with_a_clear_error() -> None:
    with Mesh(3, rate_bytes_per_s=1e6, stream_timeout_s=1.5) as mesh:
        mesh.muxes[1].stop()
        s = mesh.muxes[0].open(mesh.ips[1], 9)
        s.settimeout(10)
        s.sendall(b"hello" * 1000)
        t0 = time.monotonic()
        assert read_all(s) == b""  # EOF: the role's own recovery runs
        assert 1.0 < time.monotonic() - t0 < 6
        why = mesh.muxes[0].why_closed(s)
        assert why and "unreachable" in why and mesh.ips[1] in why
        # a port nobody bound: the peer resets the stream at once
        r = mesh.muxes[0].open(mesh.ips[2], 77)
        r.settimeout(10)
        r.sendall(b"x")
        assert read_all(r) == b""
        assert "reset by" in (mesh.muxes[0].why_closed(r) or "")
        assert mesh.muxes[0].stats()["total"]["live_streams"] == 0
        with pytest.raises(CoverError, match="not a cover peer"):
            mesh.muxes[0].open("127.9.9.9", 9)
        # the opener vanishes while the acceptor waits: its cover records stop, the stream closes
        waited: dict = {}

        def wait_for_more(sock: socket.socket, who: tuple[str, int]) -> None:
            waited["sock"] = sock
            waited["got"] = read_all(sock)
            waited["t"] = time.monotonic()
        mesh.muxes[2].bind(8, wait_for_more)
        o = mesh.muxes[0].open(mesh.ips[2], 8)
        o.sendall(b"partial")
        deadline = time.monotonic() + 5
        while "sock" not in waited:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        mesh.muxes[0].stop()
        t0 = time.monotonic()
        deadline = t0 + 8
        while "t" not in waited:
            assert time.monotonic() < deadline, "the acceptor's stream never closed"
            time.sleep(0.05)
        assert waited["got"] == b"partial"
        assert 1.0 < waited["t"] - t0 < 6
        assert "no cover record" in (mesh.muxes[2].why_closed(waited["sock"]) or "")


def test_noise_channel_over_a_stream() -> None:
    """What a role does: a hosts.channel handshake and records over the socketpair end."""
    a_key, b_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    frames = [os.urandom(n) for n in (0, 1, 5000, 200_000)]
    out: dict = {}
    with Mesh(3, rate_bytes_per_s=2e6) as mesh:
        def serve(sock: socket.socket, who: tuple[str, int]) -> None:
            ch = Channel.accept(sock, b_key, {public_hex(a_key)}, "m7", timeout=10)
            out["got"] = [ch.recv() for _ in frames]
            ch.send(hashlib.sha256(b"".join(out["got"])).digest())
        mesh.muxes[1].bind(3, serve)
        sock = mesh.muxes[0].open(mesh.ips[1], 3)
        ch = Channel.initiate(sock, b_key.public_key(), a_key, "m7", timeout=10)
        for f in frames:
            ch.send(f)
        assert ch.recv() == hashlib.sha256(b"".join(frames)).digest()
        ch.close()
    assert out["got"] == frames


def test_the_acceptor_may_speak_first() -> None:
    with Mesh(3, rate_bytes_per_s=1e6) as mesh:
        mesh.muxes[2].bind(4, lambda sock, who: (sock.sendall(b"banner:" + who[0].encode()),
                                                 sock.close()))
        s = mesh.muxes[0].open(mesh.ips[2], 4)
        s.settimeout(10)
        assert read_all(s) == b"banner:" + mesh.ips[0].encode()
        s.close()


def test_malformed_records_are_counted_and_the_mux_lives_on() -> None:
    """A peer holding a listed key sends garbage fragments: counted, nothing crashes, and a
    stream afterwards still works. An unlisted key is refused at the handshake."""
    with Mesh(3, rate_bytes_per_s=1e6) as mesh:
        target = mesh.muxes[1]
        ch = Channel.connect(mesh.ips[0], mesh.ips[1], mesh.settings.port,
                             mesh.keys[1].public_key(), mesh.keys[0], MIGRATION, timeout=5)
        me = socket.inet_aton(mesh.ips[0])
        bad = [
            bytes([9]) + bytes(100),  # unknown type
            struct.pack(">BB4s4sIHQH", DATA, 0, me, socket.inet_aton(mesh.ips[1]), 1, 9, 0,
                        5000) + b"short",  # length beyond the record
            bytes([DATA]) + bytes(HDR - 5),  # truncated header
            struct.pack(">BB4s4sIHQH", DATA, 0, socket.inet_aton("127.0.0.200"),
                        socket.inet_aton(mesh.ips[1]), 1, 9, 0, 0),  # unknown origin
            struct.pack(">BB4s4sIHQH", DATA, 0, socket.inet_aton(mesh.ips[2]),
                        socket.inet_aton(mesh.ips[2]), 1, 9, 0, 0),  # not forwardable
        ]
        for frame in bad:
            ch.send(frame)
        ch.close()
        deadline = time.monotonic() + 5
        while target.stats()["total"]["malformed"] < len(bad):
            assert time.monotonic() < deadline, target.stats()["total"]
            time.sleep(0.05)
        with pytest.raises(ChannelError):
            Channel.connect(mesh.ips[0], mesh.ips[1], mesh.settings.port,
                            mesh.keys[1].public_key(), X25519PrivateKey.generate(), MIGRATION,
                            timeout=3).recv()
        data, back, _, got = transfer(mesh, 100_000)
        assert got["data"] == data and back == data[::-1]


def test_bad_config_is_refused_by_name() -> None:
    st = CoverSettings(rate_bytes_per_s=1e5, port=free_port(["127.0.0.1"]))
    key = X25519PrivateKey.generate()
    good = CoverPeer("h2", "127.0.0.2", public_hex(X25519PrivateKey.generate()))
    with pytest.raises(CoverError, match="not an X25519 public key"):
        CoverMux(CoverConfig(st, "h1", "127.0.0.1", (CoverPeer("h2", "127.0.0.2", "zz"),)), key)
    with pytest.raises(CoverError, match="IPv4"):
        CoverMux(CoverConfig(st, "h1", "127.0.0.1", (CoverPeer("h2", "::1", good.pubkey),)), key)
    with pytest.raises(CoverError, match="itself"):
        CoverMux(CoverConfig(st, "h1", "127.0.0.2", (good,)), key)
    with pytest.raises(CoverError, match="repeat"):
        CoverMux(CoverConfig(st, "h1", "127.0.0.1", (good, good)), key)
    with pytest.raises(CoverError, match="no cover peers"):
        CoverMux(CoverConfig(st, "h1", "127.0.0.1", ()), key)
    mux = CoverMux(CoverConfig(st, "h1", "127.0.0.1", (good,)), key)
    with pytest.raises(CoverError, match="not running"):
        mux.open("127.0.0.2", 1)
    with mux, pytest.raises(CoverError, match="cannot listen"):
        CoverMux(CoverConfig(st, "h3", "127.0.0.1", (good,)), key).start()


def bulk_left(mesh: Mesh) -> bool:
    """Mux 0 still has stream bytes to send."""
    return any(x["queued"] + x["flight"] > 0
               for x in mesh.muxes[0].stats()["total"]["stream_state"])


def test_a_bulk_sender_marks_itself_busy_and_forwards_next_to_nothing() -> None:
    """Mux 0 streams in bulk to mux 1 (its own data fills its records: it marks itself BUSY);
    a stream 2 -> 3 started meanwhile is sprayed via mux 1, not via mux 0."""
    with Mesh(4, rate_bytes_per_s=2e6, spray=True) as mesh:
        time.sleep(0.3)
        mesh.muxes[1].bind(9, lambda sock, _who: read_all(sock))
        bulk = mesh.muxes[0].open(mesh.ips[1], 9)
        bulk.settimeout(60)

        def send_bulk() -> None:
            try:
                bulk.sendall(os.urandom(12 << 20))  # outlasts the test: the mesh stops first
            except OSError:
                pass
            bulk.close()

        threading.Thread(target=send_bulk, daemon=True).start()
        time.sleep(1.0)  # mux 0's own share is past BUSY_SHARE, its peers saw the marks

        def fwd() -> list[int]:  # forwarded by muxes 0 and 1 for the stream 2 <-> 3
            return [sum(m.stats()["peers"][mesh.ips[j]]["forwarded_bytes"] for j in (2, 3))
                    for m in mesh.muxes[:2]]

        before = fwd()
        data, back, _, got = transfer(mesh, 1 << 20, a=2, b=3)
        after = fwd()
        assert bulk_left(mesh), "the bulk stream ended before the test stream: no busy phase"
    via0, via1 = (a - b for a, b in zip(after, before, strict=True))
    assert got["data"] == data and back == data[::-1]
    assert via1 > 20_000, (via0, via1)  # the idle peer forwards
    assert via0 < via1 / 5, (via0, via1)  # the busy one hardly at all


def test_a_busy_mark_must_come_from_its_sender() -> None:
    with Mesh(3, rate_bytes_per_s=1e6) as mesh:
        ch = Channel.connect(mesh.ips[0], mesh.ips[1], mesh.settings.port,
                             mesh.keys[1].public_key(), mesh.keys[0], MIGRATION, timeout=5)
        other = socket.inet_aton(mesh.ips[2])
        ch.send(struct.pack(">BB4s4sIHQH", BUSY, 0, other, other, 0, 0, 0, 0) + bytes(100))
        ch.send(struct.pack(">BB4s4sIHQH", BUSY, 0, socket.inet_aton(mesh.ips[0]), other,
                            0, 0, 0, 4) + bytes(100))  # a mark carries no data
        ch.close()
        deadline = time.monotonic() + 5
        while mesh.muxes[1].stats()["total"]["malformed"] < 2:
            assert time.monotonic() < deadline, mesh.muxes[1].stats()["total"]
            time.sleep(0.05)

