"""The wire format of the migration hops: frames carried inside an encrypted hop channel.

Every hop (source→intermediate, intermediate→leader, leader→destination, source→destination)
is one TCP connection carrying *records* (``u32 length ‖ bytes``, see ``hosts.channel``); each
record decrypts to one *frame*::

    magic "SM" | version 1 | type | flags | body_len (u32) | body | padding

Padding lets a key share or an ack travel in a record of any size the chunk policy draws, so
frame types cannot be told apart by size. ``parse_frame`` is the one parser of untrusted frame
bytes; it raises ``FrameError`` for anything malformed and never anything else (fuzzed).

Frame bodies (all integers big endian):

- CHUNK / SEGMENT: ``index u32 | last u8 | nonce prefix 7 | sealed chunk`` — SEGMENT is the
  same chunk after an intermediate marked it as a data segment (Alg 4).
- SHARE: one Shamir key share (y bytes ‖ x).
- ACK: ``next_expected u32`` — the leader has opened every chunk below it.
- ABORT: a UTF-8 reason.
- MANIFEST / TRAILER: UTF-8 JSON (leader→destination and direct hops).
- DATA: ``seq u32 | payload`` — plaintext migration stream bytes (inside the hop encryption).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"SM"
VERSION = 1
HEADER = struct.Struct(">2sBBBI")  # magic, version, type, flags, body_len
MAX_BODY = 16 << 20
PREFIX_BYTES = 7
CHUNK_HEAD = struct.Struct(">IB7s")


class FrameError(ValueError):
    """Bytes that are not a well-formed frame."""


class FrameType(enum.IntEnum):
    CHUNK = 1
    SEGMENT = 2
    SHARE = 3
    ACK = 4
    ABORT = 5
    MANIFEST = 6
    DATA = 7
    TRAILER = 8


@dataclass(frozen=True)
class Frame:
    type: FrameType
    body: bytes
    flags: int = 0


@dataclass(frozen=True)
class SealedChunk:
    index: int
    last: bool
    prefix: bytes
    sealed: bytes


def build_frame(ftype: FrameType, body: bytes, pad_to: int = 0, flags: int = 0) -> bytes:
    """Serialise one frame; pad with zeros up to ``pad_to`` total bytes (if larger)."""
    if len(body) > MAX_BODY:
        raise FrameError(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    head = HEADER.pack(MAGIC, VERSION, int(ftype), flags, len(body))
    size = len(head) + len(body)
    pad = b"\0" * (pad_to - size) if pad_to > size else b""
    return head + body + pad


def parse_frame(data: bytes) -> Frame:
    """Parse one frame; padding after the body is ignored. Raises FrameError only."""
    if len(data) < HEADER.size:
        raise FrameError(
            f"frame of {len(data)} bytes is shorter than its {HEADER.size}-byte header"
        )
    magic, version, ftype, flags, body_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}")
    if version != VERSION:
        raise FrameError(f"unsupported version {version}")
    try:
        t = FrameType(ftype)
    except ValueError:
        raise FrameError(f"unknown frame type {ftype}") from None
    if body_len > MAX_BODY:
        raise FrameError(f"body length {body_len} exceeds {MAX_BODY}")
    end = HEADER.size + body_len
    if end > len(data):
        raise FrameError(f"truncated: body of {body_len} bytes, {len(data) - HEADER.size} present")
    return Frame(t, bytes(data[HEADER.size : end]), flags)


def chunk_body(c: SealedChunk) -> bytes:
    return CHUNK_HEAD.pack(c.index, 1 if c.last else 0, c.prefix) + c.sealed


def parse_chunk(body: bytes) -> SealedChunk:
    """Body of a CHUNK or SEGMENT frame; raises FrameError."""
    if len(body) < CHUNK_HEAD.size + 16:
        raise FrameError(f"chunk body of {len(body)} bytes is too short")
    index, last, prefix = CHUNK_HEAD.unpack_from(body)
    if last not in (0, 1):
        raise FrameError(f"last flag {last} is not 0 or 1")
    return SealedChunk(index, bool(last), prefix, bytes(body[CHUNK_HEAD.size :]))


def ack_body(next_expected: int, delivered: int | None = None) -> bytes:
    """An ACK: the chunks before ``next_expected`` arrived; with ``delivered`` (the leader over
    cover) also how many of them reached the destination."""
    if delivered is None:
        return struct.pack(">I", next_expected)
    if not 0 <= delivered <= next_expected:
        raise ValueError(f"delivered {delivered} outside 0..{next_expected}")
    return struct.pack(">II", next_expected, delivered)


def parse_ack(body: bytes) -> tuple[int, int]:
    """(next expected, delivered) of an ACK body; a short ACK's delivered is its next expected
    (over TCP the leader passes every chunk on at once)."""
    if len(body) == 4:
        (upto,) = struct.unpack(">I", body)
        return upto, upto
    if len(body) != 8:
        raise FrameError(f"ack body of {len(body)} bytes, expected 4 or 8")
    upto, delivered = struct.unpack(">II", body)
    if delivered > upto:
        raise FrameError(f"ack: {delivered} delivered of {upto}")
    return upto, delivered


def data_body(seq: int, payload: bytes) -> bytes:
    return struct.pack(">I", seq) + payload


def parse_data(body: bytes) -> tuple[int, bytes]:
    if len(body) < 4:
        raise FrameError(f"data body of {len(body)} bytes is too short")
    return struct.unpack_from(">I", body)[0], bytes(body[4:])


def parse_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"not UTF-8: {exc}") from None


def read_data(recv: Callable[[], bytes], feed: Callable[[bytes], None]) -> tuple[int, bytes]:
    """Read a stream's DATA frames in order from ``recv`` (one frame per call) into ``feed``
    until its TRAILER; returns (DATA frames read, the trailer's body). A frame out of sequence
    or of another type is a ``FrameError``; whatever ``feed`` raises goes through."""
    seq = 0
    while True:
        fr = parse_frame(recv())
        if fr.type == FrameType.TRAILER:
            return seq, fr.body
        if fr.type != FrameType.DATA:
            raise FrameError(f"unexpected {fr.type.name} in the stream")
        s, payload = parse_data(fr.body)
        if s != seq:
            raise FrameError(f"data frame {s} where {seq} was expected")
        seq += 1
        feed(payload)
