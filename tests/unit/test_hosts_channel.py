"""The encrypted hop over real loopback TCP: handshake, records, tampering, wrong sender, bounds."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import (
    MAX_MESSAGE,
    SEGMENT,
    Channel,
    ChannelError,
    frame_size,
    listen,
    noise_state,
    public_hex,
    record_size,
)


@pytest.fixture()
def pair():
    recv_key, send_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    lst = listen("127.0.0.1", 0)
    port = lst.getsockname()[1]
    out: dict[str, object] = {}

    def accept(allowed: set[str], kw: dict) -> None:
        conn, _ = lst.accept()
        try:
            out["server"] = Channel.accept(conn, recv_key, allowed, "m1", timeout=5, **kw)
        except ChannelError as exc:
            out["error"] = exc

    def make(sender=send_key, allowed=None, server_kw=None, **client_kw):
        allowed = allowed or {public_hex(send_key)}
        t = threading.Thread(target=accept, args=(allowed, server_kw or {}))
        t.start()
        try:
            client = Channel.connect(
                "127.0.0.1", "127.0.0.1", port, recv_key.public_key(), sender, "m1", **client_kw
            )
        except ChannelError as exc:
            out["client_error"] = exc
            client = None
        t.join(5)
        return client, out

    make.recv_key, make.send_key, make.port = recv_key, send_key, port
    yield make
    lst.close()


def test_records_both_ways(pair) -> None:
    client, out = pair()
    server = out["server"]
    client.send(b"hello leader")
    assert server.recv() == b"hello leader"
    server.send(b"ack")
    assert client.recv() == b"ack"
    assert client.bytes_sent > len(b"hello leader")
    assert server.peer_key == public_hex(pair.send_key)  # authenticated, not claimed
    assert client.peer_key == public_hex(pair.recv_key)
    assert client.bytes_sent == server.bytes_received
    assert server.bytes_sent == client.bytes_received


@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 7, 5 << 20]
)
def test_frames_of_any_size_round_trip_as_one_record(pair, size: int) -> None:
    client, out = pair()
    server = out["server"]
    frame = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert client.send(frame) == 4 + record_size(size)
    assert server.recv() == frame
    assert server.send(frame) == 4 + record_size(size)
    assert client.recv() == frame


def test_frame_size_inverts_record_size() -> None:
    for frame in [*range(0, 300), *range(SEGMENT - 40, SEGMENT + 40), 3 * SEGMENT + 5, 17 << 20]:
        assert frame_size(record_size(frame)) == frame
    for rec in range(MAX_MESSAGE - 40, 3 * MAX_MESSAGE + 40):
        assert record_size(frame_size(rec)) <= rec
        unreachable = rec > MAX_MESSAGE and 1 <= rec % MAX_MESSAGE <= 16
        assert (record_size(frame_size(rec)) == rec) != unreachable


def test_unexpected_sender_is_refused(pair) -> None:
    client, out = pair(sender=X25519PrivateKey.generate())
    assert isinstance(out.get("error"), ChannelError)
    assert "not expected" in str(out["error"])
    assert client is None and isinstance(out.get("client_error"), ChannelError)


def test_wrong_migration_is_refused() -> None:
    """The prologue binds the migration id: a hop of another migration does not authenticate."""
    recv_key, send_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    lst = listen("127.0.0.1", 0)
    errors: list[Exception] = []

    def serve() -> None:
        conn, _ = lst.accept()
        try:
            Channel.accept(conn, recv_key, {public_hex(send_key)}, "m1", timeout=5)
        except ChannelError as exc:
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    with pytest.raises(ChannelError):
        Channel.connect(
            "127.0.0.1", "127.0.0.1", lst.getsockname()[1], recv_key.public_key(), send_key, "m2"
        )
    t.join(5)
    lst.close()
    assert errors and "message 1 failed authentication" in str(errors[0])


def test_tampered_records_fail(pair) -> None:
    client, out = pair()
    server = out["server"]
    client.send(b"first")
    assert server.recv() == b"first"
    bad = bytearray(client._seal(b"second"))
    bad[10] ^= 1
    client.sock.sendall(bytes(bad))
    with pytest.raises(ChannelError, match="authentication"):
        server.recv()


def test_replayed_record_fails(pair) -> None:
    client, out = pair()
    server = out["server"]
    rec = client._seal(b"record zero")
    client.sock.sendall(rec + rec)
    assert server.recv() == b"record zero"
    with pytest.raises(ChannelError, match="authentication"):
        server.recv()


def test_truncated_record_fails(pair) -> None:
    """A record of three Noise messages cut to two (length prefix rewritten) is not a frame."""
    client, out = pair()
    server = out["server"]
    rec = client._seal(b"z" * (3 * SEGMENT))
    cut = (2 * MAX_MESSAGE).to_bytes(4, "big") + rec[4 : 4 + 2 * MAX_MESSAGE]
    client.sock.sendall(cut)
    with pytest.raises(ChannelError, match="authentication"):
        server.recv()


def test_reordered_segments_fail(pair) -> None:
    client, out = pair()
    server = out["server"]
    rec = client._seal(bytes(SEGMENT) + b"\1" * SEGMENT + b"\2" * 10)
    a, b = rec[4 : 4 + MAX_MESSAGE], rec[4 + MAX_MESSAGE : 4 + 2 * MAX_MESSAGE]
    client.sock.sendall(rec[:4] + b + a + rec[4 + 2 * MAX_MESSAGE :])
    with pytest.raises(ChannelError, match="authentication"):
        server.recv()


def test_oversized_record_is_refused_before_reading(pair) -> None:
    client, out = pair()
    server = out["server"]
    client.sock.sendall((64 << 20).to_bytes(4, "big"))
    with pytest.raises(ChannelError, match="record of"):
        server.recv()


def test_repeated_peer_is_refused_with_seen(pair) -> None:
    seen: set[str] = set()
    client, out = pair(server_kw={"seen": seen})
    assert out["server"].peer_key in seen
    out.clear()
    again, out = pair(server_kw={"seen": seen})
    assert again is None
    assert "already connected" in str(out["error"])
    assert seen == {public_hex(pair.send_key)}


def test_io_timeout_stays_on_the_socket(pair) -> None:
    client, out = pair(io_timeout=0.3, server_kw={"io_timeout": 0.4})
    server = out["server"]
    assert client.sock.gettimeout() == 0.3 and server.sock.gettimeout() == 0.4
    t0 = time.monotonic()
    with pytest.raises(ChannelError, match="timed out"):
        server.recv()  # the client sends nothing
    assert time.monotonic() - t0 < 2


def test_default_keeps_blocking_sockets(pair) -> None:
    client, out = pair()
    assert client.sock.gettimeout() is None and out["server"].sock.gettimeout() is None


def test_handshake_sizes_vary_with_padding(pair) -> None:
    sizes = set()
    for _ in range(5):
        client, out = pair()
        sizes.add(client.bytes_sent)
        client.close()
        out.clear()
    assert len(sizes) > 1


def test_garbage_handshake_is_refused() -> None:
    key = X25519PrivateKey.generate()
    lst = listen("127.0.0.1", 0)
    c = socket.create_connection(lst.getsockname())
    c.sendall(b"\x00\x00\x00\x05hello")
    conn, _ = lst.accept()
    with pytest.raises(ChannelError):
        Channel.accept(conn, key, set(), "m1", timeout=2)
    c.close()
    lst.close()


def _accept_raw(data: bytes, key: X25519PrivateKey, allowed: set[str], timeout: float = 2):
    """Send ``data`` on a fresh connection; return (error, seconds, peak bytes allocated)."""
    lst = listen("127.0.0.1", 0)
    c = socket.create_connection(lst.getsockname())
    c.sendall(data)
    conn, _ = lst.accept()
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ChannelError) as info:
            Channel.accept(conn, key, allowed, "m1", timeout=timeout)
        return info.value, time.monotonic() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        c.close()
        lst.close()


def test_oversized_first_message_is_refused_without_allocating() -> None:
    data = (16 << 20).to_bytes(4, "big") + b"x" * 100
    err, took, peak = _accept_raw(data, X25519PrivateKey.generate(), set())
    assert "message of 16777216 bytes" in str(err)
    assert took < 0.5 and peak < 256 << 10


def test_oversized_first_record_is_refused_without_allocating() -> None:
    """A valid message 1, then a huge record: capped at 64 KiB before it is authenticated."""
    recv_key, send_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    hs = noise_state(send_key, True, "m1", remote=bytes.fromhex(public_hex(recv_key)))
    hs.start_handshake()
    msg1 = bytes(hs.write_message(b""))
    data = len(msg1).to_bytes(4, "big") + msg1 + (16 << 20).to_bytes(4, "big")
    err, took, peak = _accept_raw(data, recv_key, {public_hex(send_key)})
    assert "record of 16777216 bytes" in str(err)
    assert took < 0.5 and peak < 256 << 10


def test_stalled_and_trickling_clients_time_out() -> None:
    key = X25519PrivateKey.generate()
    err, took, _ = _accept_raw(b"", key, set(), timeout=0.5)  # says nothing
    assert "timed out" in str(err) or "deadline" in str(err)
    assert 0.4 < took < 1.5
    lst = listen("127.0.0.1", 0)
    c = socket.create_connection(lst.getsockname())
    conn, _ = lst.accept()
    stop = threading.Event()

    def trickle() -> None:  # one byte of a 1000-byte message every 0.1 s
        c.sendall((1000).to_bytes(4, "big"))
        while not stop.wait(0.1):
            try:
                c.sendall(b"x")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(ChannelError, match="deadline|timed out"):
        Channel.accept(conn, key, set(), "m1", timeout=0.6)  # a deadline, not a per-read timeout
    assert time.monotonic() - t0 < 1.5
    stop.set()
    c.close()
    lst.close()


def test_silent_receiver_times_the_connect_out() -> None:
    lst = listen("127.0.0.1", 0)  # accepts (the kernel does) but never answers
    t0 = time.monotonic()
    with pytest.raises(ChannelError, match="timed out|deadline"):
        Channel.connect(
            "127.0.0.1",
            "127.0.0.1",
            lst.getsockname()[1],
            X25519PrivateKey.generate().public_key(),
            X25519PrivateKey.generate(),
            "m1",
            timeout=0.5,
        )
    assert time.monotonic() - t0 < 1.5
    lst.close()
