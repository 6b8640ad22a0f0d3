"""An encrypted hop: one TCP connection, a Noise IK handshake, Noise transport messages after it.

Every hop of a migration runs over a ``Channel``. The connecting side (initiator) knows the
receiver's static X25519 public key (the controller vouches for it); the receiver knows which
static keys it expects (``allowed``). The handshake is ``Noise_IK_25519_AESGCM_SHA256`` from the
``noiseprotocol`` package, with the migration id in the prologue:

- message 1, initiator → responder: ephemeral, the initiator's static key *encrypted*, a padding
  payload of random length. The responder checks the decrypted static key against ``allowed``.
- message 2, responder → initiator: a fresh responder ephemeral and padding. From here both sides
  hold transport keys that depend on both ephemerals.
- the initiator's first transport record (padding only): the responder returns a channel only
  once it authenticates. A recorded hop replayed to a responder gets a fresh message 2 (new keys,
  so no key+nonce pair repeats) and its recorded records then fail authentication.

Every message is ``u32 length ‖ body``. A handshake message and the first record are read with
the handshake deadline and capped at 64 KiB (checked from the length prefix, before anything is
allocated); later records at ``MAX_RECORD``. A record carries one frame as consecutive Noise
transport messages of at most 65535 bytes: every message but the last is exactly 65535 bytes, so
the record length tells the receiver the boundaries, and each message is authenticated with the
record's length prefix and its index as associated data (nonces come from the Noise
CipherStates), so a reordered, truncated, replayed or altered record fails.

Used by the role code (``hosts.roles``) on every hop, and by the cover mux (``hosts.cover``) on
its cover links (migration id ``"cover"``, no ``seen``, every handshake message padded to a drawn
record size).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from noise.connection import Keypair, NoiseConnection

PROTOCOL = b"Noise_IK_25519_AESGCM_SHA256"
MAX_MESSAGE = 65535  # a Noise message, handshake or transport
TAG = 16  # AES-GCM tag of each Noise transport message
SEGMENT = MAX_MESSAGE - TAG  # frame bytes per transport message
MAX_HANDSHAKE = MAX_MESSAGE  # cap of every message read before the peer is authenticated
MAX_RECORD = 17 << 20
_MIN_MSG1 = 32 + 48 + TAG  # e, encrypted s, payload tag
_MIN_MSG2 = 32 + TAG  # e, payload tag
_LEN = struct.Struct(">I")
_AD = struct.Struct(">4sI")  # record length prefix, message index
_SEEN_LOCK = threading.Lock()


class ChannelError(ConnectionError):
    """The hop broke: peer closed, bad record, failed authentication. The message says which."""


def public_hex(priv: X25519PrivateKey) -> str:
    return _raw(priv.public_key()).hex()


def load_public(hexkey: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(hexkey))
    except ValueError as exc:
        raise ValueError(f"not an X25519 public key: {exc}") from None


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def record_size(frame_len: int) -> int:
    """Bytes after the length prefix of the record that carries a frame of ``frame_len`` bytes."""
    return frame_len + TAG * max(1, -(-frame_len // SEGMENT))


def frame_size(record_len: int) -> int:
    """The largest frame whose record is at most ``record_len`` bytes (exactly, except for the
    unreachable lengths k*65535 + 1..16): lets a sender draw record sizes, not frame sizes."""
    k = max(1, -(-record_len // MAX_MESSAGE))
    return max(0, record_len - TAG * k)


def _segments(n: int) -> list[int]:
    """Lengths of the Noise messages in a record of ``n`` bytes (all full but the last)."""
    full, last = divmod(n, MAX_MESSAGE)
    if last == 0 and full:
        full, last = full - 1, MAX_MESSAGE
    if last < TAG:
        raise ValueError(f"a record of {n} bytes cannot be split into Noise messages")
    return [MAX_MESSAGE] * full + [last]


def _padding(n: int | None = None) -> bytes:
    """Random padding; random length (0..1020 bytes) unless ``n`` is given."""
    if n is None:
        n = os.urandom(1)[0] * 4
    return os.urandom(n)


def noise_state(
    static: X25519PrivateKey, initiator: bool, migration: str, remote: bytes | None = None
) -> NoiseConnection:
    """A Noise IK state of this project (not started): our static key, the prologue bound to the
    migration id, and for the initiator the responder's static public key."""
    conn = NoiseConnection.from_name(PROTOCOL)
    conn.set_prologue(b"stealth-mtd hop v2|" + migration.encode())
    raw = static.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    conn.set_keypair_from_private_bytes(Keypair.STATIC, raw)
    if initiator:
        if remote is None:
            raise ValueError("the initiator needs the responder's static public key")
        conn.set_as_initiator()
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote)
    else:
        conn.set_as_responder()
    return conn


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _settimeout(sock: socket.socket, deadline: float | None) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("handshake deadline passed")
        sock.settimeout(left)


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Read exactly n bytes or raise ChannelError on EOF.

    With ``deadline`` (``time.monotonic()``) the whole read must end by then (``TimeoutError``),
    however the bytes trickle in; without, the socket's own timeout applies to each read.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        _settimeout(sock, deadline)
        r = sock.recv_into(view[got:], n - got)
        if r == 0:
            raise ChannelError(f"peer closed after {got} of {n} bytes")
        got += r
    return bytes(buf)


def _read_message(sock: socket.socket, lo: int, hi: int, deadline: float | None) -> bytes:
    """One length-prefixed message of lo..hi bytes, the length checked before reading on."""
    (n,) = _LEN.unpack(recv_exact(sock, 4, deadline))
    if n < lo or n > hi:
        raise ChannelError(f"message of {n} bytes (expected {lo}..{hi})")
    return recv_exact(sock, n, deadline)


def _nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    _settimeout(sock, deadline)
    sock.sendall(data)


class Channel:
    """One encrypted, framed, bidirectional hop. Thread-safe: one sender lock, one reader."""

    def __init__(self, sock: socket.socket, noise: NoiseConnection, peer: str, peer_key: str):
        self.sock = sock
        self.peer = peer
        self.peer_key = peer_key  # hex X25519 static public key of the other end, authenticated
        self._tx = noise.noise_protocol.cipher_state_encrypt
        self._rx = noise.noise_protocol.cipher_state_decrypt
        self._records_in = 0
        self._lock = threading.Lock()
        self.bytes_sent = 0  # application bytes written to TCP, handshake and records included
        self.bytes_received = 0
        self.closed = False

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
        *,
        io_timeout: float | None = None,
        confirm_pad: int | None = None,
    ) -> Channel:
        """Open the hop from ``src_ip`` (bound, so flow rules see the right source).

        Runs the whole handshake within ``timeout`` (TCP connect included): message 1 with
        ``pad`` bytes of padding (random length if None), message 2 from the receiver (which
        proves it holds ``peer_pub``'s key), then our first record (``confirm_pad`` bytes of
        padding, random length if None). ``io_timeout`` then stays on the socket for every later
        read and write (None: block).
        """
        deadline = time.monotonic() + timeout
        sock = socket.create_connection(
            (dst_ip, dst_port), timeout=timeout, source_address=(src_ip, 0)
        )
        return cls.initiate(sock, peer_pub, static, migration, deadline - time.monotonic(), pad,
                            io_timeout=io_timeout, confirm_pad=confirm_pad,
                            peer=f"{dst_ip}:{dst_port}")

    @classmethod
    def initiate(
        cls,
        sock: socket.socket,
        peer_pub: X25519PublicKey,
        static: X25519PrivateKey,
        migration: str,
        timeout: float = 10.0,
        pad: int | None = None,
        *,
        io_timeout: float | None = None,
        confirm_pad: int | None = None,
        peer: str = "stream",
    ) -> Channel:
        """The initiator's handshake of ``connect`` on a socket that is already connected (a
        cover mux stream's socketpair end, say); ``peer`` names the other end in errors. The
        socket is closed if the handshake fails."""
        deadline = time.monotonic() + timeout
        try:
            _nodelay(sock)
            hs = noise_state(static, True, migration, remote=_raw(peer_pub))
            hs.start_handshake()
            msg1 = bytes(hs.write_message(_padding(pad)))
            _send_all(sock, _LEN.pack(len(msg1)) + msg1, deadline)
            msg2 = _read_message(sock, _MIN_MSG2, MAX_HANDSHAKE, deadline)
            try:
                hs.read_message(msg2)
            except (InvalidTag, ValueError) as exc:
                raise ChannelError(f"message 2 failed authentication ({_why(exc)})") from None
            ch = cls(sock, hs, peer, _raw(peer_pub).hex())
            ch.bytes_sent += 4 + len(msg1)
            ch.bytes_received += 4 + len(msg2)
            rec = ch._seal(_padding(confirm_pad))  # the confirmation the receiver waits for
            _send_all(sock, rec, deadline)
            ch.bytes_sent += len(rec)
            sock.settimeout(io_timeout)
        except Exception as exc:  # a broken or hostile peer: any failure is the hop's
            sock.close()
            raise ChannelError(f"handshake with {peer}: {_why(exc)}") from None
        return ch

    @classmethod
    def accept(
        cls,
        sock: socket.socket,
        static: X25519PrivateKey,
        allowed: set[str],
        migration: str,
        timeout: float = 10.0,
        *,
        seen: set[str] | None = None,
        io_timeout: float | None = None,
        pad: int | None = None,
        peer: str | None = None,
    ) -> Channel:
        """Finish the handshake on an accepted connection from one of ``allowed`` (hex keys).

        The whole handshake must end within ``timeout``. Returns only once the sender's first
        record (sent right after the handshake) authenticates: the sender holds its static key and
        is live, not a recording. With ``seen``, a sender whose key is already in it is refused,
        else its key is added (under a lock): one connection per peer within a migration.
        ``io_timeout`` then stays on the socket for every later read and write (None: block).
        Message 2 carries ``pad`` bytes of padding (random length if None). ``peer`` names the
        other end in errors (default: the TCP peer address; give it for a non-TCP socket).
        """
        if peer is None and sock.family not in (socket.AF_INET, socket.AF_INET6):
            peer = "stream"
        if peer is None:
            try:
                host, port = sock.getpeername()[:2]
                peer = f"{host}:{port}"
            except (OSError, ValueError) as exc:
                sock.close()
                raise ChannelError(f"handshake: {exc}") from None
        deadline = time.monotonic() + timeout
        try:
            _nodelay(sock)
            msg1 = _read_message(sock, _MIN_MSG1, MAX_HANDSHAKE, deadline)
            hs = noise_state(static, False, migration)
            hs.start_handshake()
            try:
                hs.read_message(msg1)
            except (InvalidTag, ValueError) as exc:
                raise ChannelError(f"message 1 failed authentication ({_why(exc)})") from None
            key = hs.noise_protocol.handshake_state.rs.public_bytes.hex()
            if key not in allowed:
                raise ChannelError(f"sender key {key[:16]}.. not expected")
            if seen is not None and key in seen:
                raise ChannelError(f"sender key {key[:16]}.. already connected")
            msg2 = bytes(hs.write_message(_padding(pad)))
            _send_all(sock, _LEN.pack(len(msg2)) + msg2, deadline)
            ch = cls(sock, hs, peer, key)
            ch.bytes_received += 4 + len(msg1)
            ch.bytes_sent += 4 + len(msg2)
            ch._recv_record(MAX_HANDSHAKE, deadline)  # the sender's confirmation
            if seen is not None:
                with _SEEN_LOCK:
                    if key in seen:
                        raise ChannelError(f"sender key {key[:16]}.. already connected")
                    seen.add(key)
            sock.settimeout(io_timeout)
        except Exception as exc:  # untrusted input: any failure refuses the connection
            sock.close()
            raise ChannelError(f"handshake from {peer}: {_why(exc)}") from None
        return ch

    # --- records ------------------------------------------------------------------------
    def _seal(self, frame: bytes) -> bytes:
        """The record of one frame (advances the send nonce: call under the lock or in set-up)."""
        head = _LEN.pack(record_size(len(frame)))
        view = memoryview(frame)
        parts = [head]
        for i, off in enumerate(range(0, max(1, len(frame)), SEGMENT)):
            parts.append(self._tx.encrypt_with_ad(_AD.pack(head, i), view[off : off + SEGMENT]))
        return b"".join(parts)

    def send(self, frame: bytes) -> int:
        """Encrypt and send one frame; returns bytes put on the wire."""
        with self._lock:
            rec = self._seal(frame)
            try:
                self.sock.sendall(rec)
            except OSError as exc:
                raise ChannelError(f"send to {self.peer}: {_why(exc)}") from None
            self.bytes_sent += len(rec)
            return len(rec)

    def _recv_record(self, cap: int, deadline: float | None) -> bytes:
        head = recv_exact(self.sock, 4, deadline)
        (n,) = _LEN.unpack(head)
        if n < TAG or n > cap:
            raise ChannelError(f"record of {n} bytes from {self.peer}")
        try:
            sizes = _segments(n)
        except ValueError as exc:
            raise ChannelError(f"{exc} from {self.peer}") from None
        body = recv_exact(self.sock, n, deadline)
        self.bytes_received += 4 + n
        view = memoryview(body)
        out, off = [], 0
        for i, size in enumerate(sizes):
            try:
                out.append(self._rx.decrypt_with_ad(_AD.pack(head, i), view[off : off + size]))
            except InvalidTag:
                raise ChannelError(
                    f"record {self._records_in} from {self.peer} failed authentication"
                ) from None
            off += size
        self._records_in += 1
        return out[0] if len(out) == 1 else b"".join(out)

    def recv(self) -> bytes:
        """Receive and decrypt one frame; raises ChannelError on EOF or a bad record."""
        try:
            return self._recv_record(MAX_RECORD, None)
        except OSError as exc:
            if isinstance(exc, ChannelError):
                raise
            raise ChannelError(f"recv from {self.peer}: {_why(exc)}") from None

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
