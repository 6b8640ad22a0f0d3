"""The curious intermediate: with fewer than k shares it learns nothing; with k it learns all.

Shares come from the protocol's public Shamir API (``hosts.shamir.split``), the only thing taken
from ``hosts``; chunks are sealed here following the published format (AES-256-GCM, STREAM nonce
``prefix ‖ index ‖ last``, associated data naming the migration and the index).
"""

from __future__ import annotations

import json
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from attacks.intermediate import (
    consistent_secret_bytes,
    curious_intermediate,
    gf_inv,
    gf_mul,
    interpolate,
    parse_share,
)

shamir = pytest.importorskip("hosts.shamir")

MIGRATION = "mig-7"
HOSTS = [f"10.0.0.{i}" for i in range(1, 17)]


def seal_stream(key: bytes, plaintexts: list[bytes]) -> list[bytes]:
    """Chunk bodies as an intermediate holds them: index | last | prefix | sealed."""
    prefix = os.urandom(7)
    aead = AESGCM(key)
    out = []
    for i, pt in enumerate(plaintexts):
        last = i == len(plaintexts) - 1
        nonce = prefix + struct.pack(">IB", i, int(last))
        ad = b"stealth-mtd chunk v1|" + MIGRATION.encode() + b"|" + struct.pack(">I", i)
        out.append(struct.pack(">IB7s", i, int(last), prefix) + aead.encrypt(nonce, pt, ad))
    return out


@pytest.fixture()
def migration():
    key = AESGCM.generate_key(bit_length=256)
    manifest = json.dumps({"vm": "vm1", "dest_address": "10.0.0.9", "dest_port": 7300}).encode()
    pages = [os.urandom(4096) for _ in range(3)]
    trailer = json.dumps({"sha256": "00" * 32}).encode()
    chunks = seal_stream(key, [manifest, *pages, trailer])
    shares = shamir.split(key, 3, 5)
    return key, chunks, shares


def test_field_arithmetic():
    assert gf_mul(0x53, 0xCA) == 0x01  # the AES field's textbook inverse pair
    assert all(gf_mul(a, gf_inv(a)) == 1 for a in range(1, 256))
    assert all(gf_mul(a, gf_inv(a, 0x11D), 0x11D) == 1 for a in range(1, 256))


def test_own_interpolation_agrees_with_the_protocols_shares(migration):
    key, _, shares = migration
    pts = [parse_share(s) for s in shares[:3]]
    assert interpolate(pts) == key == shamir.combine(shares[1:4])


def test_fewer_than_k_shares_reveal_nothing(migration):
    key, chunks, shares = migration
    # one intermediate holds one share; even two colluding intermediates hold only k - 1
    for held in ([shares[0]], shares[:2]):
        res = curious_intermediate(
            held, chunks, labels=[MIGRATION], known_hosts=HOSTS, own_peers=["10.0.0.1", "10.0.0.5"]
        )
        assert res.key is None and res.destination is None and res.chunks_opened == 0
        assert res.keys_tried >= len(held)
        assert "10.0.0.9" not in res.plaintext_addresses
        # every value of every key byte is equally consistent with what they hold
        assert all(consistent_secret_bytes(held, 3, position=p) == 256 for p in (0, 17, 31))


def test_k_shares_recover_key_and_destination(migration):
    key, chunks, shares = migration
    res = curious_intermediate(shares[2:5], chunks, labels=[MIGRATION], known_hosts=HOSTS)
    assert res.key == key
    assert res.chunks_opened == len(chunks)
    assert res.destination == "10.0.0.9"
    assert consistent_secret_bytes(shares[:3], 3, position=0) == 1


def test_without_the_migration_label_the_tag_does_not_verify(migration):
    """The associated data matters: the attack must know the label, as an intermediate does."""
    _, chunks, shares = migration
    res = curious_intermediate(shares[:3], chunks, labels=[], known_hosts=HOSTS)
    assert res.key is None
