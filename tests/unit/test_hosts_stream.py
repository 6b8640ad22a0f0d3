"""STREAM chunk sealing: reorder, truncation flag, other migration and forgery are caught."""

from __future__ import annotations

import pytest

from hosts.stream import ChunkOpener, ChunkSealer, StreamError, new_key


def _sealed(n: int = 3) -> tuple[bytes, ChunkSealer, list[tuple[int, bytes, bool]]]:
    key = new_key()
    s = ChunkSealer(key, "m1")
    out = []
    for i in range(n):
        last = i == n - 1
        idx, ct = s.seal(f"chunk {i}".encode(), last)
        out.append((idx, ct, last))
    return key, s, out


def test_round_trip() -> None:
    key, s, chunks = _sealed()
    o = ChunkOpener(key, "m1")
    for idx, ct, last in chunks:
        assert o.open(s.prefix, idx, last, ct) == f"chunk {idx}".encode()


def test_tampering_is_caught() -> None:
    key, s, chunks = _sealed()
    o = ChunkOpener(key, "m1")
    idx, ct, last = chunks[1]
    with pytest.raises(StreamError):
        o.open(s.prefix, 2, last, ct)  # moved to another index
    with pytest.raises(StreamError):
        o.open(s.prefix, idx, True, ct)  # claims to be the last chunk (truncation)
    with pytest.raises(StreamError):
        ChunkOpener(key, "m2").open(s.prefix, idx, last, ct)  # another migration
    with pytest.raises(StreamError):
        o.open(s.prefix, idx, last, ct[:-1] + bytes([ct[-1] ^ 1]))  # forged
    with pytest.raises(StreamError):
        o.open(b"\0" * 7, idx, last, ct)  # another stream
    with pytest.raises(StreamError):
        ChunkOpener(new_key(), "m1").open(s.prefix, idx, last, ct)


def test_nothing_after_the_last_chunk() -> None:
    _, s, _ = _sealed()
    with pytest.raises(StreamError):
        s.seal(b"more")
