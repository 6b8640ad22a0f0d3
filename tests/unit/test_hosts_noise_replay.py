"""A recorded hop replayed as a new TCP connection: the receiver accepts nothing and answers with
fresh keys (no key+nonce pair repeats); static keys never cross the wire in clear."""

from __future__ import annotations

import socket
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, listen, public_hex
from tests.recording import pipe, replay


class Recorder:
    """One-connection TCP relay on 127.0.0.1 that keeps the bytes of each direction."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.lst = listen("127.0.0.1", 0)
        self.port = self.lst.getsockname()[1]
        self.target = target
        self.up, self.down = bytearray(), bytearray()
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        c, _ = self.lst.accept()
        u = socket.create_connection(self.target)
        pipes = [
            threading.Thread(target=pipe, args=(c, u, self.up)),
            threading.Thread(target=pipe, args=(u, c, self.down)),
        ]
        for p in pipes:
            p.start()
        for p in pipes:
            p.join()
        self.done.set()


class Receiver:
    """A leader-like receiver: accepts hops, reads frames, answers each with an ack."""

    def __init__(self, key: X25519PrivateKey, allowed: set[str], seen: set[str] | None = None):
        self.key, self.allowed, self.seen = key, allowed, seen
        self.lst = listen("127.0.0.1", 0)
        self.port = self.lst.getsockname()[1]
        self.frames: list[bytes] = []
        self.errors: list[ChannelError] = []

    def serve_one(self) -> threading.Thread:
        def run() -> None:
            conn, _ = self.lst.accept()
            try:
                ch = Channel.accept(conn, self.key, self.allowed, "m1", timeout=3, seen=self.seen)
            except ChannelError as exc:
                self.errors.append(exc)
                return
            try:
                while True:
                    self.frames.append(ch.recv())
                    ch.send(b"ack %d" % len(self.frames))
            except ChannelError as exc:
                self.errors.append(exc)
            ch.close()

        t = threading.Thread(target=run)
        t.start()
        return t




@pytest.fixture()
def recorded():
    """An intermediate's hop to a leader, recorded on the wire: two frames, two acks."""
    leader, inter = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    rx = Receiver(leader, {public_hex(inter)})
    t = rx.serve_one()
    rec = Recorder(("127.0.0.1", rx.port))
    ch = Channel.connect("127.0.0.1", "127.0.0.1", rec.port, leader.public_key(), inter, "m1")
    for frame in (b"share for the leader", b"segment 0"):
        ch.send(frame)
        assert ch.recv().startswith(b"ack")
    ch.close()
    t.join(5)
    assert rec.done.wait(5)
    assert rx.frames == [b"share for the leader", b"segment 0"]
    yield leader, inter, bytes(rec.up), bytes(rec.down)


def test_replayed_hop_yields_no_frame_and_fresh_responder_keys(recorded) -> None:
    leader, inter, up, down = recorded
    rx = Receiver(leader, {public_hex(inter)})  # a fresh receiver, same keys and migration
    t = rx.serve_one()
    answer = replay(("127.0.0.1", rx.port), up)
    t.join(5)
    assert rx.frames == []  # nothing of the recording is accepted as a frame
    assert rx.errors and "failed authentication" in str(rx.errors[0])
    # the receiver answered message 1 with a fresh ephemeral: its bytes differ from the ones it
    # sent on the original hop, and no ack was sent under any key
    assert answer and answer != down[: len(answer)]
    assert answer[4:36] != down[4:36]  # message 2 starts with the responder ephemeral
    n2 = int.from_bytes(answer[:4], "big")
    assert len(answer) == 4 + n2  # message 2 only: no record (no ack) went to the replay


def test_replay_to_a_receiver_that_saw_the_peer_is_refused_at_once(recorded) -> None:
    leader, inter, up, _ = recorded
    seen = {public_hex(inter)}  # the original hop came first
    rx = Receiver(leader, {public_hex(inter)}, seen=seen)
    t = rx.serve_one()
    answer = replay(("127.0.0.1", rx.port), up)
    t.join(5)
    assert rx.frames == [] and answer == b""
    assert "already connected" in str(rx.errors[0])


def test_static_keys_are_not_on_the_wire(recorded) -> None:
    leader, inter, up, down = recorded
    for pub in (bytes.fromhex(public_hex(inter)), bytes.fromhex(public_hex(leader))):
        assert pub not in up and pub not in down
        assert pub.hex().encode() not in up and pub.hex().encode() not in down
