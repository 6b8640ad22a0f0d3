"""Shamir's secret sharing over GF(2^8): the field, split/combine, argument checks, secrecy."""

from __future__ import annotations

import itertools
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from hosts import shamir


def test_fips197_multiplication() -> None:
    assert shamir.gf_mul(0x57, 0x83) == 0xC1
    assert shamir.gf_mul(0x57, 0x13) == 0xFE


def test_every_nonzero_element_has_an_inverse() -> None:
    for a in range(1, 256):
        assert shamir.gf_mul(a, shamir.gf_inv(a)) == 1
    with pytest.raises(ZeroDivisionError):
        shamir.gf_inv(0)


def test_field_distributes() -> None:
    for a, b, c in [(3, 7, 0x53), (0xCA, 0x53, 0xFF), (1, 0x80, 0x1B)]:
        assert shamir.gf_mul(a, b ^ c) == shamir.gf_mul(a, b) ^ shamir.gf_mul(a, c)


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=1, max_size=40), n=st.integers(2, 6), data=st.data())
def test_every_k_subset_recovers(secret: bytes, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(2, n))
    shares = shamir.split(secret, k, n)
    assert len(shares) == n
    assert all(len(s) == len(secret) + 1 for s in shares)
    xs = [s[-1] for s in shares]
    assert 0 not in xs and len(set(xs)) == n
    for subset in itertools.combinations(shares, k):
        assert shamir.combine(list(subset)) == secret


def test_argument_checks() -> None:
    with pytest.raises(shamir.BadParameters):
        shamir.split(b"", 2, 3)
    with pytest.raises(shamir.BadParameters):
        shamir.split(b"x", 1, 3)
    with pytest.raises(shamir.BadParameters):
        shamir.split(b"x", 4, 3)
    with pytest.raises(shamir.BadParameters):
        shamir.split(b"x", 2, 256)
    shares = shamir.split(b"secret", 2, 3)
    with pytest.raises(shamir.NotEnoughShares):
        shamir.combine(shares[:1])
    with pytest.raises(shamir.DuplicateShare):
        shamir.combine([shares[0], shares[0]])
    with pytest.raises(shamir.ShareLengthMismatch):
        shamir.combine([shares[0], shares[1][1:]])
    assert issubclass(shamir.NotEnoughShares, ValueError)


def test_fewer_than_k_shares_give_a_uniform_candidate() -> None:
    secret = b"\x42" * 64
    counts = [0] * 256
    for _ in range(300):
        shares = shamir.split(secret, 3, 5)
        for b in shamir.combine(shares[:2]):
            counts[b] += 1
    # 19200 samples over 256 values: uniform unless p is tiny
    assert chisquare(counts).pvalue > 1e-4
    assert counts[0x42] < 3 * 19200 / 256


def test_candidate_key_from_k_minus_1_shares_fails_aes_gcm() -> None:
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, b"VM page", b"ad")
    shares = shamir.split(key, 3, 4)
    candidate = shamir.combine(shares[:2])
    assert candidate != key
    with pytest.raises(InvalidTag):
        AESGCM(candidate).decrypt(nonce, ct, b"ad")
    assert AESGCM(shamir.combine(shares[1:4])).decrypt(nonce, ct, b"ad") == b"VM page"
