"""The hop's Noise implementation against the Noise project's published test vector for its
pattern, an independent responder written from the specification with ``cryptography``
primitives (it reproduces the vector and talks to the channel's own initiator), and the
project's IK set-up (``hosts.channel.noise_state``) interoperating with itself.

The vector is the ``Noise_IK_25519_AESGCM_SHA256`` entry of Cacophony's ``vectors/cacophony.txt``
(github.com/centromere/cacophony, linked from the Noise wiki's test-vector page; the same file is
``tests/vectors/cacophony.txt`` in the noiseprotocol repository). The sdist of noiseprotocol
0.3.1 ships no vectors, so the entry is copied here.
"""

from __future__ import annotations

import warnings

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from noise.connection import Keypair, NoiseConnection

from hosts.channel import PROTOCOL, noise_state, public_hex

VECTOR = {
    "protocol_name": "Noise_IK_25519_AESGCM_SHA256",
    "init_prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "init_remote_static": "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62",
    "resp_prologue": "4a6f686e2047616c74",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "669c8640d9e42a3cda2f232f78597ceefb01daa6e3df81181ccce6fc6b5026bf",
    "messages": [
        (
            "4c756477696720766f6e204d69736573",
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
            "4e417bc55c7a8166c993356c1be41ef67818a292426f301556c7f26b21d25ddb"
            "097153891a9a956cff47b83e63ad8d701c1342c209cff1ca5ecd43402762ac24"
            "9e3bd3a4c0a145fe07cb5dae28ea13a3",
        ),
        (
            "4d757272617920526f746862617264",
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
            "af2ccf9972e22afc67aeafcd25162f7f98c363b7762e3e4cb7d272e39f27a5",
        ),
        ("462e20412e20486179656b", "66acfc92e3197de166809e6d4d5d003dcc819a84bc3522ca53c9d9"),
        ("4361726c204d656e676572", "71f89aa6533a6de70b0826864dd75f60806ee40170c16290189eb3"),
        (
            "4a65616e2d426170746973746520536179",
            "4795a3423550c8bf00386bd496a3e2c76c10669d2a75ab8f79b5094c5412a25705",
        ),
        (
            "457567656e2042f6686d20766f6e2042617765726b",
            "aa0bb39097555c918e40be82abc2b909eb79d9eb87adb07e268fc37323a6cf904fd01fb391",
        ),
    ],
}


def _party(initiator: bool) -> NoiseConnection:
    side = "init" if initiator else "resp"
    conn = NoiseConnection.from_name(VECTOR["protocol_name"].encode())
    conn.set_prologue(bytes.fromhex(VECTOR[f"{side}_prologue"]))
    conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes.fromhex(VECTOR[f"{side}_static"]))
    conn.set_keypair_from_private_bytes(
        Keypair.EPHEMERAL, bytes.fromhex(VECTOR[f"{side}_ephemeral"])
    )
    if initiator:
        conn.set_as_initiator()
        conn.set_keypair_from_public_bytes(
            Keypair.REMOTE_STATIC, bytes.fromhex(VECTOR["init_remote_static"])
        )
    else:
        conn.set_as_responder()
    with warnings.catch_warnings():  # fixed ephemerals warn: right for a known-answer test
        warnings.simplefilter("ignore")
        conn.start_handshake()
    return conn


def test_channel_uses_the_vector_pattern() -> None:
    assert PROTOCOL.decode() == VECTOR["protocol_name"]


def test_published_vector() -> None:
    """Both handshake messages and four transport messages, byte for byte, both directions."""
    init, resp = _party(True), _party(False)
    msgs = VECTOR["messages"]
    for i, (payload_hex, ct_hex) in enumerate(msgs):
        payload, ct = bytes.fromhex(payload_hex), bytes.fromhex(ct_hex)
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        if i < 2:  # IK has two handshake messages
            assert bytes(sender.write_message(payload)) == ct, f"message {i}"
            assert bytes(receiver.read_message(ct)) == payload, f"message {i}"
        else:
            assert sender.encrypt(payload) == ct, f"message {i}"
            assert receiver.decrypt(ct) == payload, f"message {i}"
    assert init.get_handshake_hash().hex() == VECTOR["handshake_hash"]
    assert resp.get_handshake_hash().hex() == VECTOR["handshake_hash"]


def test_a_changed_vector_byte_fails() -> None:
    """The known-answer test can fail: one flipped bit of message 1 is refused."""
    init, resp = _party(True), _party(False)
    msg1 = bytearray(init.write_message(bytes.fromhex(VECTOR["messages"][0][0])))
    msg1[40] ^= 1  # inside the encrypted initiator static key
    with pytest.raises(InvalidTag):
        resp.read_message(bytes(msg1))


def test_project_noise_states_interoperate() -> None:
    """``noise_state`` as initiator and responder: the responder learns the initiator's key from
    message 1, both get the same handshake hash and working transport states."""
    a_key, b_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a = noise_state(a_key, True, "m-7", remote=bytes.fromhex(public_hex(b_key)))
    b = noise_state(b_key, False, "m-7")
    a.start_handshake()
    b.start_handshake()
    assert bytes(b.read_message(a.write_message(b"one"))) == b"one"
    assert b.noise_protocol.handshake_state.rs.public_bytes.hex() == public_hex(a_key)
    assert bytes(a.read_message(b.write_message(b"two"))) == b"two"
    assert a.get_handshake_hash() == b.get_handshake_hash()
    assert b.decrypt(a.encrypt(b"three")) == b"three"
    assert a.decrypt(b.encrypt(b"four")) == b"four"


# --- an independent responder written from the Noise specification (rev 34, sections 5 and 7) --
def _hmac(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _hkdf2(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = _hmac(ck, ikm)
    o1 = _hmac(temp, b"\x01")
    return o1, _hmac(temp, o1 + b"\x02")


def _sha(data: bytes) -> bytes:
    d = hashes.Hash(hashes.SHA256())
    d.update(data)
    return d.finalize()


def _nonce(n: int) -> bytes:
    return b"\0" * 4 + n.to_bytes(8, "big")


def _pub(priv: X25519PrivateKey) -> bytes:
    return bytes.fromhex(public_hex(priv))


class SpecResponder:
    """IK responder: reads message 1, writes message 2, splits; nothing from noiseprotocol."""

    def __init__(self, static: X25519PrivateKey, prologue: bytes) -> None:
        name = PROTOCOL
        self.h = name + bytes(32 - len(name))  # a name of <= HASHLEN bytes, zero-padded
        self.ck, self.k, self.n = self.h, b"", 0
        self.s = static
        self._mix_hash(prologue)
        self._mix_hash(_pub(static))  # pre-message: <- s

    def _mix_hash(self, data: bytes) -> None:
        self.h = _sha(self.h + data)

    def _mix_key(self, ikm: bytes) -> None:
        self.ck, self.k = _hkdf2(self.ck, ikm)
        self.n = 0

    def _decrypt_and_hash(self, ct: bytes) -> bytes:
        pt = AESGCM(self.k).decrypt(_nonce(self.n), ct, self.h)
        self.n += 1
        self._mix_hash(ct)
        return pt

    def _encrypt_and_hash(self, pt: bytes) -> bytes:
        ct = AESGCM(self.k).encrypt(_nonce(self.n), pt, self.h)
        self.n += 1
        self._mix_hash(ct)
        return ct

    def read_message_1(self, msg: bytes) -> tuple[bytes, bytes]:
        """-> e, es, s, ss: returns (initiator static public key, payload)."""
        self.re = X25519PublicKey.from_public_bytes(msg[:32])
        self._mix_hash(msg[:32])
        self._mix_key(self.s.exchange(self.re))  # es
        rs = self._decrypt_and_hash(msg[32:80])
        self.rs = X25519PublicKey.from_public_bytes(rs)
        self._mix_key(self.s.exchange(self.rs))  # ss
        return rs, self._decrypt_and_hash(msg[80:])

    def write_message_2(self, e: X25519PrivateKey, payload: bytes) -> bytes:
        """<- e, ee, se; then Split(): (initiator->responder key, responder->initiator key)."""
        out = _pub(e)
        self._mix_hash(out)
        self._mix_key(e.exchange(self.re))  # ee
        self._mix_key(e.exchange(self.rs))  # se
        out += self._encrypt_and_hash(payload)
        self.c1, self.c2 = _hkdf2(self.ck, b"")
        return out


def test_spec_responder_reproduces_the_vector() -> None:
    """The independent responder decrypts the vector's message 1 and writes its message 2."""
    resp = SpecResponder(
        X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR["resp_static"])),
        bytes.fromhex(VECTOR["resp_prologue"]),
    )
    (p1, c1), (p2, c2), (p3, c3), (p4, c4) = VECTOR["messages"][:4]
    rs, payload = resp.read_message_1(bytes.fromhex(c1))
    init_static = X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR["init_static"]))
    assert rs == _pub(init_static) and payload.hex() == p1
    e = X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR["resp_ephemeral"]))
    assert resp.write_message_2(e, bytes.fromhex(p2)).hex() == c2
    assert resp.h.hex() == VECTOR["handshake_hash"]
    assert AESGCM(resp.c1).decrypt(_nonce(0), bytes.fromhex(c3), b"").hex() == p3
    assert AESGCM(resp.c2).encrypt(_nonce(0), bytes.fromhex(p4), b"").hex() == c4


def test_channel_handshake_matches_the_spec() -> None:
    """The channel's own initiator (prologue bound to the migration id) against the independent
    responder: message 1 hides and delivers its static key, message 2 and transport keys agree."""
    a_key, b_key = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    init = noise_state(a_key, True, "m-9", remote=_pub(b_key))
    init.start_handshake()
    msg1 = bytes(init.write_message(b"padding"))
    assert _pub(a_key) not in msg1
    resp = SpecResponder(b_key, b"stealth-mtd hop v2|m-9")
    assert resp.read_message_1(msg1) == (_pub(a_key), b"padding")
    msg2 = resp.write_message_2(X25519PrivateKey.generate(), b"more padding")
    assert bytes(init.read_message(msg2)) == b"more padding"
    assert init.get_handshake_hash() == resp.h
    assert AESGCM(resp.c1).decrypt(_nonce(0), init.encrypt(b"frame"), b"") == b"frame"
    assert init.decrypt(AESGCM(resp.c2).encrypt(_nonce(0), b"ack", b"")) == b"ack"
    other = SpecResponder(b_key, b"stealth-mtd hop v2|m-10")  # another migration's prologue
    with pytest.raises(InvalidTag):
        other.read_message_1(msg1)
