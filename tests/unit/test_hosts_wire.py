"""Frames: round trips and a fuzzed parser that raises FrameError and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosts import wire
from hosts.wire import FrameError, FrameType, ack_body, build_frame, data_body


def test_round_trip_with_padding() -> None:
    raw = wire.build_frame(FrameType.SHARE, b"share!", pad_to=1000)
    assert len(raw) == 1000
    fr = wire.parse_frame(raw)
    assert fr.type == FrameType.SHARE and fr.body == b"share!"


def test_chunk_ack_data_bodies() -> None:
    c = wire.SealedChunk(7, True, b"1234567", b"x" * 40)
    assert wire.parse_chunk(wire.chunk_body(c)) == c
    assert wire.parse_ack(wire.ack_body(99)) == (99, 99)
    assert len(wire.ack_body(99)) == 4  # the TCP hops' ACK, as the design-aware attacker knows
    assert wire.parse_ack(wire.ack_body(99, 90)) == (99, 90)
    with pytest.raises(ValueError):
        wire.ack_body(5, 6)
    assert wire.parse_data(wire.data_body(3, b"abc")) == (3, b"abc")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"SM",
        b"XX\x01\x01\x00\x00\x00\x00\x00",
        b"SM\x02\x01\x00\x00\x00\x00\x00",
        b"SM\x01\x63\x00\x00\x00\x00\x00",
        b"SM\x01\x01\x00\x00\x00\x00\x10abc",
        b"SM\x01\x01\x00\xff\xff\xff\xff",
    ],
)
def test_malformed_frames(raw: bytes) -> None:
    with pytest.raises(FrameError):
        wire.parse_frame(raw)


def test_malformed_bodies() -> None:
    with pytest.raises(FrameError):
        wire.parse_chunk(b"\0" * 10)
    with pytest.raises(FrameError):
        wire.parse_chunk(b"\0\0\0\1\x05" + b"\0" * 40)
    with pytest.raises(FrameError):
        wire.parse_ack(b"\0\0")
    with pytest.raises(FrameError):
        wire.parse_ack(b"\0\0\0\1\0\0\0\2")  # 2 delivered of 1
    with pytest.raises(FrameError):
        wire.parse_text(b"\xff\xfe")


def _parse_all(raw: bytes) -> None:
    fr = wire.parse_frame(raw)
    for f in (wire.parse_chunk, wire.parse_ack, wire.parse_data, wire.parse_text):
        try:
            f(fr.body)
        except FrameError:
            pass


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parser_random_bytes(raw: bytes) -> None:
    try:
        _parse_all(raw)
    except FrameError:
        pass


@settings(max_examples=3000, deadline=None)
@given(
    ftype=st.integers(0, 255),
    version=st.integers(0, 3),
    body_len=st.integers(0, 300),
    body=st.binary(max_size=300),
)
def test_fuzz_parser_near_valid(ftype: int, version: int, body_len: int, body: bytes) -> None:
    raw = wire.HEADER.pack(wire.MAGIC, version, ftype, 0, body_len) + body
    try:
        _parse_all(raw)
    except FrameError:
        pass


def test_read_data_feeds_the_payloads_in_order_and_returns_the_trailer() -> None:
    from hosts.wire import read_data

    frames = iter([build_frame(FrameType.DATA, data_body(0, b"ab")),
                   build_frame(FrameType.DATA, data_body(1, b"cd")),
                   build_frame(FrameType.TRAILER, b"{}")])
    got: list[bytes] = []
    assert read_data(lambda: next(frames), got.append) == (2, b"{}")
    assert got == [b"ab", b"cd"]
    skipped = iter([build_frame(FrameType.DATA, data_body(1, b"x"))])
    with pytest.raises(FrameError, match="data frame 1 where 0 was expected"):
        read_data(lambda: next(skipped), got.append)
    other = iter([build_frame(FrameType.ACK, ack_body(3))])
    with pytest.raises(FrameError, match="unexpected ACK"):
        read_data(lambda: next(other), got.append)
