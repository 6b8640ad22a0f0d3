"""End-to-end chunk sealing: AES-256-GCM with a STREAM nonce (Alg 3 seals, Alg 5 opens).

One fresh 32-byte key per migration. Chunk ``i`` is sealed with nonce
``prefix (7 random bytes) ‖ i (4 bytes, big endian) ‖ last (1 byte)`` and associated data
binding the migration id and the chunk index. So a chunk moved to another index, a chunk
of another migration, a chunk whose last-flag was flipped or a forged chunk all fail the tag;
a stream that stops before a chunk marked last is truncated (its reader, the leader, never
gets to the trailer).

Chunk 0 is the manifest (destination address, sizes, ...), the chunk marked last is the
trailer (image hash, counts); the chunks between carry the VM's migration stream.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
PREFIX_BYTES = 7
TAG_BYTES = 16
MAX_CHUNKS = 0xFFFFFFFF


class StreamError(ValueError):
    """A sealed chunk failed to open: forged, reordered, replayed elsewhere or truncated."""


def new_key() -> bytes:
    """A fresh AES-256 key for one migration."""
    return AESGCM.generate_key(bit_length=256)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def _ad(migration: str, index: int) -> bytes:
    return b"stealth-mtd chunk v1|" + migration.encode() + b"|" + struct.pack(">I", index)


class ChunkSealer:
    """Seals the chunks of one migration in order (the source holds one)."""

    def __init__(self, key: bytes, migration: str, prefix: bytes | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"AES-256 key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.migration = migration
        self.prefix = prefix if prefix is not None else os.urandom(PREFIX_BYTES)
        if len(self.prefix) != PREFIX_BYTES:
            raise ValueError(f"nonce prefix must be {PREFIX_BYTES} bytes")
        self.next_index = 0
        self.finished = False

    def seal(self, plaintext: bytes, last: bool = False) -> tuple[int, bytes]:
        """Seal the next chunk; returns (index, ciphertext‖tag)."""
        if self.finished:
            raise StreamError("stream already finished with a last chunk")
        if self.next_index > MAX_CHUNKS:
            raise StreamError("too many chunks for one stream")
        i = self.next_index
        ct = self._aead.encrypt(_nonce(self.prefix, i, last), plaintext, _ad(self.migration, i))
        self.next_index += 1
        self.finished = last
        return i, ct


class ChunkOpener:
    """Opens sealed chunks (the leader holds one once it has the key).

    ``open`` checks one chunk independently of order (the caller reorders by index).
    """

    def __init__(self, key: bytes, migration: str) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"AES-256 key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.migration = migration

    def open(self, prefix: bytes, index: int, last: bool, sealed: bytes) -> bytes:
        if len(prefix) != PREFIX_BYTES:
            raise StreamError(f"nonce prefix of {len(prefix)} bytes")
        if len(sealed) < TAG_BYTES:
            raise StreamError(f"chunk {index}: {len(sealed)} bytes is shorter than a tag")
        try:
            return self._aead.decrypt(
                _nonce(prefix, index, last), sealed, _ad(self.migration, index)
            )
        except InvalidTag:
            raise StreamError(
                f"chunk {index}: authentication failed (forged, reordered or wrong key)"
            ) from None
