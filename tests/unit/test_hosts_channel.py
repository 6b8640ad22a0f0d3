"""The encrypted hop over real loopback TCP: handshake, records, tampering, wrong sender."""

from __future__ import annotations

import socket
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, listen, public_hex


@pytest.fixture()
def pair():
    recv_key, send_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    lst = listen("127.0.0.1", 0)
    port = lst.getsockname()[1]
    out: dict[str, object] = {}

    def accept(allowed: set[str]) -> None:
        conn, _ = lst.accept()
        try:
            out["server"] = Channel.accept(conn, recv_key, allowed, "m1", timeout=5)
        except ChannelError as exc:
            out["error"] = exc

    def make(sender=send_key, allowed=None):
        t = threading.Thread(target=accept, args=(allowed or {public_hex(send_key)},))
        t.start()
        client = Channel.connect(
            "127.0.0.1", "127.0.0.1", port, recv_key.public_key(), sender, "m1"
        )
        t.join(5)
        return client, out

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


def test_unexpected_sender_is_refused(pair) -> None:
    client, out = pair(sender=X25519PrivateKey.generate())
    assert isinstance(out.get("error"), ChannelError)
    client.close()


def test_tampered_and_replayed_records_fail(pair) -> None:
    client, out = pair()
    server = out["server"]
    # forge: send a record with a flipped bit straight on the socket
    client.send(b"first")
    assert server.recv() == b"first"
    nonce_ctr = client._send_ctr
    ct = client._send.encrypt(b"\0\0\0\0" + nonce_ctr.to_bytes(8, "big"), b"second", None)
    bad = bytearray(ct)
    bad[0] ^= 1
    client.sock.sendall(len(bad).to_bytes(4, "big") + bytes(bad))
    with pytest.raises(ChannelError, match="authentication"):
        server.recv()


def test_replayed_record_fails(pair) -> None:
    client, out = pair()
    server = out["server"]
    ct = client._send.encrypt(b"\0" * 12, b"record zero", None)
    rec = len(ct).to_bytes(4, "big") + ct
    client.sock.sendall(rec + rec)
    assert server.recv() == b"record zero"
    with pytest.raises(ChannelError):
        server.recv()


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
