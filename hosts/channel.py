"""An encrypted hop: one TCP connection, X25519 + HKDF → AES-256-GCM in each direction.

Every hop of a migration runs over a ``Channel``. Both ends know each other's static X25519
public key (the controller vouches for them: they came from the register messages). The
connecting side sends an ephemeral public key and its static public key (padded to a random
length) in the first record; both sides derive two AES-256-GCM keys with HKDF-SHA256 from
DH(ephemeral, receiver) ‖ DH(sender, receiver), bound to the migration id. Records are
``u32 length ‖ AES-GCM(counter nonce, frame)``: an eavesdropper sees only lengths and times, a
replayed, reordered, dropped or altered record fails its tag, only the receiver can read the hop
and only the expected sender can write to it.

Used by the role code (``hosts.roles``) on every hop.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAX_RECORD = 17 << 20
_LEN = struct.Struct(">I")


class ChannelError(ConnectionError):
    """The hop broke: peer closed, bad record, failed authentication. The message says which."""


def public_hex(priv: X25519PrivateKey) -> str:
    raw = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def load_public(hexkey: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(hexkey))
    except ValueError as exc:
        raise ValueError(f"not an X25519 public key: {exc}") from None


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive(shared: bytes, eph: bytes, static: bytes, migration: str) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=eph + static,
        info=b"stealth-mtd hop v1|" + migration.encode(),
    ).derive(shared)
    return okm[:32], okm[32:]


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes or raise ChannelError on EOF."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:], n - got)
        if r == 0:
            raise ChannelError(f"peer closed after {got} of {n} bytes")
        got += r
    return bytes(buf)


class Channel:
    """One encrypted, framed, bidirectional hop. Thread-safe: one sender lock, one reader."""

    def __init__(self, sock: socket.socket, send_key: bytes, recv_key: bytes, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._send_ctr = 0
        self._recv_ctr = 0
        self._lock = threading.Lock()
        self.bytes_sent = 0  # application bytes written to TCP, records included
        self.bytes_received = 0
        self.closed = False
        self.peer_key = ""  # hex X25519 public key of the other end

    # --- set-up -------------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        src_ip: str,
        dst_ip: str,
        dst_port: int,
        peer_pub: X25519PublicKey,
        static: X25519PrivateKey,
        migration: str,
        timeout: float = 10.0,
        pad: int | None = None,
    ) -> Channel:
        """Open the hop from ``src_ip`` (bound, so flow rules see the right source).

        The keys mix an ephemeral and our static key with the receiver's static key, so the
        receiver knows who sends (it checks our public key against the ones it expects).
        """
        sock = socket.create_connection(
            (dst_ip, dst_port), timeout=timeout, source_address=(src_ip, 0)
        )
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            eph = X25519PrivateKey.generate()
            eph_raw = _raw(eph.public_key())
            me_raw = _raw(static.public_key())
            npad = pad if pad is not None else int.from_bytes(os.urandom(1), "big") * 4
            hello = eph_raw + me_raw + os.urandom(npad)
            sock.sendall(_LEN.pack(len(hello)) + hello)
            shared = eph.exchange(peer_pub) + static.exchange(peer_pub)
            c2s, s2c = _derive(shared, eph_raw + me_raw, _raw(peer_pub), migration)
        except Exception:
            sock.close()
            raise
        ch = cls(sock, c2s, s2c, f"{dst_ip}:{dst_port}")
        ch.peer_key = _raw(peer_pub).hex()
        ch.bytes_sent += 4 + len(hello)
        return ch

    @classmethod
    def accept(
        cls,
        sock: socket.socket,
        static: X25519PrivateKey,
        allowed: set[str],
        migration: str,
        timeout: float = 10.0,
    ) -> Channel:
        """Finish the handshake on an accepted connection from one of ``allowed`` (hex keys).

        The sender proves it holds its static key when its first record authenticates; until
        then treat the channel as untrusted (``recv`` raises on a forged record).
        """
        try:
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError as exc:
            sock.close()
            raise ChannelError(f"handshake: {exc}") from None
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            (n,) = _LEN.unpack(recv_exact(sock, 4))
            if n < 64 or n > 4096:
                raise ChannelError(f"handshake from {peer}: hello of {n} bytes")
            hello = recv_exact(sock, n)
            sender = hello[32:64]
            if sender.hex() not in allowed:
                raise ChannelError(
                    f"handshake from {peer}: sender key {sender.hex()[:16]}.. not expected"
                )
            try:
                eph_pub = X25519PublicKey.from_public_bytes(hello[:32])
                snd_pub = X25519PublicKey.from_public_bytes(sender)
                shared = static.exchange(eph_pub) + static.exchange(snd_pub)
            except ValueError as exc:
                raise ChannelError(f"handshake from {peer}: {exc}") from None
            sock.settimeout(None)
        except (OSError, ChannelError) as exc:
            sock.close()
            if isinstance(exc, ChannelError):
                raise
            raise ChannelError(f"handshake from {peer}: {exc}") from None
        c2s, s2c = _derive(shared, hello[:64], _raw(static.public_key()), migration)
        ch = cls(sock, s2c, c2s, peer)
        ch.peer_key = sender.hex()
        ch.bytes_received += 4 + n
        return ch

    # --- records ------------------------------------------------------------------------
    def send(self, frame: bytes) -> int:
        """Encrypt and send one frame; returns bytes put on the wire."""
        with self._lock:
            nonce = b"\0\0\0\0" + self._send_ctr.to_bytes(8, "big")
            self._send_ctr += 1
            ct = self._send.encrypt(nonce, frame, None)
            rec = _LEN.pack(len(ct)) + ct
            try:
                self.sock.sendall(rec)
            except OSError as exc:
                raise ChannelError(f"send to {self.peer}: {exc}") from None
            self.bytes_sent += len(rec)
            return len(rec)

    def recv(self) -> bytes:
        """Receive and decrypt one frame; raises ChannelError on EOF or a bad record."""
        try:
            (n,) = _LEN.unpack(recv_exact(self.sock, 4))
            if n < 16 or n > MAX_RECORD:
                raise ChannelError(f"record of {n} bytes from {self.peer}")
            ct = recv_exact(self.sock, n)
        except OSError as exc:
            if isinstance(exc, ChannelError):
                raise
            raise ChannelError(f"recv from {self.peer}: {exc}") from None
        self.bytes_received += 4 + n
        nonce = b"\0\0\0\0" + self._recv_ctr.to_bytes(8, "big")
        try:
            pt = self._recv.decrypt(nonce, ct, None)
        except InvalidTag:
            raise ChannelError(
                f"record {self._recv_ctr} from {self.peer} failed authentication"
            ) from None
        self._recv_ctr += 1
        return pt

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def listen(ip: str, port: int, backlog: int = 16) -> socket.socket:
    """A listening TCP socket for one role of one migration."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(backlog)
    return s
