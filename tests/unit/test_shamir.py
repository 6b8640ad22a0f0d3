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


def _reference_mul(a: int, b: int) -> int:
    """Schoolbook carry-less product, then reduction by the AES polynomial 0x11B."""
    p = 0
    for i in range(8):
        if b >> i & 1:
            p ^= a << i
    for bit in range(14, 7, -1):
        if p >> bit & 1:
            p ^= 0x11B << (bit - 8)
    return p


def test_multiplication_table_equals_the_reference() -> None:
    table = [[shamir.gf_mul(a, b) for b in range(256)] for a in range(256)]
    assert table == [[_reference_mul(a, b) for b in range(256)] for a in range(256)]
    assert all(shamir.gf_inv(a) == next(b for b in range(1, 256) if _reference_mul(a, b) == 1)
               for a in range(1, 256))


@pytest.mark.parametrize("call", [
    lambda: shamir.split("secret", 2, 3),
    lambda: shamir.split(b"secret", "2", 3),
    lambda: shamir.split(b"secret", 2, 3.0),
    lambda: shamir.split(b"secret", 2, None),
    lambda: shamir.split(b"secret", True, 3),
    lambda: shamir.combine(None),
    lambda: shamir.combine(b"\x01\x02\x03"),
    lambda: shamir.combine("ab"),
    lambda: shamir.combine([b"ab\x01", "ab\x02"]),
    lambda: shamir.combine([b"ab\x01", None]),
    lambda: shamir.combine([b"ab\x01", [1, 2, 3]]),
    lambda: shamir.combine({b"ab\x01", b"ab\x02"}),
    lambda: shamir.gf_mul("a", 1),
    lambda: shamir.gf_mul(1, 256),
    lambda: shamir.gf_mul(-1, 3),
    lambda: shamir.gf_inv(None),
    lambda: shamir.gf_inv(0),
])
def test_wrong_types_and_values_raise_shamir_error(call) -> None:
    with pytest.raises(shamir.ShamirError):
        call()


def test_zero_inverse_is_both_a_shamir_error_and_a_zero_division() -> None:
    with pytest.raises(shamir.NoInverse) as info:
        shamir.gf_inv(0)
    assert isinstance(info.value, ZeroDivisionError)


@settings(max_examples=60, deadline=None)
@given(secret=st.binary(min_size=1, max_size=48), data=st.data())
def test_any_k_or_more_shares_in_any_order_recover(secret: bytes, data: st.DataObject) -> None:
    n = data.draw(st.sampled_from([2, 3, 5, 8, 16, 255]))
    k = data.draw(st.integers(2, min(n, 8)))
    shares = shamir.split(secret, k, n)
    assert len({s[-1] for s in shares}) == n and all(len(s) == len(secret) + 1 for s in shares)
    picked = data.draw(st.permutations(shares))[: data.draw(st.integers(k, min(n, 12)))]
    assert shamir.combine(picked) == secret
    if k > 2:  # one share too few: a candidate, never an error, and (almost never) the secret
        candidate = shamir.combine(picked[: k - 1])
        assert len(candidate) == len(secret)
