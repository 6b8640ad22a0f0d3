"""Shamir's secret sharing over GF(2^8), byte by byte, as HashiCorp Vault's ``shamir`` does.

The source splits each migration's AES-256 key into ``n`` shares with threshold ``k`` (Alg 3);
the leader combines ``k`` of them (Alg 5). A share is the ``y`` bytes (one per secret byte)
followed by one ``x`` byte; the x values are distinct, random and never 0. Fewer than ``k`` shares
say nothing about the secret: every candidate is equally likely.

Public API (other tools call it): ``split(secret, k, n)`` and ``combine(shares)``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

__all__ = [
    "ShamirError",
    "NotEnoughShares",
    "DuplicateShare",
    "ShareLengthMismatch",
    "BadParameters",
    "gf_mul",
    "gf_inv",
    "split",
    "combine",
]


class ShamirError(ValueError):
    """Base class of every error this module raises."""


class BadParameters(ShamirError):
    """k, n or the secret are out of range."""


class NotEnoughShares(ShamirError):
    """combine() needs at least two shares (and k of them to get the real secret)."""


class DuplicateShare(ShamirError):
    """Two shares carry the same x coordinate."""


class ShareLengthMismatch(ShamirError):
    """Shares of one secret all have the same length."""


# log/exp tables for GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1 and generator 0x03.
_EXP = [0] * 512
_LOG = [0] * 256


def _build_tables() -> None:
    x = 1
    for i in range(255):
        _EXP[i] = x
        _LOG[x] = i
        # multiply by the generator 0x03: x*2 xor x
        x2 = (x << 1) ^ (0x11B if x & 0x80 else 0)
        x = x2 ^ x
    for i in range(255, 512):
        _EXP[i] = _EXP[i - 255]


_build_tables()


def gf_add(a: int, b: int) -> int:
    """Addition (and subtraction) in GF(2^8) is xor."""
    return a ^ b


def gf_mul(a: int, b: int) -> int:
    """Multiplication in GF(2^8) (AES field)."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse; 0 has none."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return _EXP[255 - _LOG[a]]


def gf_div(a: int, b: int) -> int:
    """a / b in GF(2^8)."""
    if b == 0:
        raise ZeroDivisionError("division by 0 in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


def _eval(coeffs: Sequence[int], x: int) -> int:
    """Horner evaluation of a polynomial given lowest-degree first."""
    acc = 0
    for c in reversed(coeffs):
        acc = gf_mul(acc, x) ^ c
    return acc


def split(secret: bytes, k: int, n: int) -> list[bytes]:
    """Split ``secret`` into ``n`` shares, any ``k`` of which recover it.

    Each share is ``len(secret) + 1`` bytes: the y values, then the x coordinate (1..255).
    """
    if not isinstance(secret, bytes | bytearray) or len(secret) == 0:
        raise BadParameters("the secret must be non-empty bytes")
    if not (2 <= k <= n <= 255):
        raise BadParameters(f"need 2 <= k <= n <= 255, got k={k} n={n}")
    xs = list(range(1, 256))
    rng = secrets.SystemRandom()
    rng.shuffle(xs)
    xs = xs[:n]
    ys = [bytearray(len(secret)) for _ in range(n)]
    for j, byte in enumerate(secret):
        coeffs = [byte] + [secrets.randbelow(256) for _ in range(k - 1)]
        for i, x in enumerate(xs):
            ys[i][j] = _eval(coeffs, x)
    return [bytes(y) + bytes([x]) for y, x in zip(ys, xs, strict=True)]


def combine(shares: Sequence[bytes]) -> bytes:
    """Recover the secret by Lagrange interpolation at x = 0.

    With fewer than k shares the result is a uniformly random candidate, not an error: the
    caller learns it is wrong only when the key fails to open its ciphertext.
    """
    if len(shares) < 2:
        raise NotEnoughShares(f"got {len(shares)} share(s), need at least 2")
    length = len(shares[0])
    if length < 2:
        raise ShareLengthMismatch(f"a share is at least 2 bytes, got {length}")
    for s in shares:
        if len(s) != length:
            raise ShareLengthMismatch(f"shares of {length} and {len(s)} bytes")
    xs = [s[-1] for s in shares]
    if 0 in xs:
        raise DuplicateShare("a share has x = 0, which no valid share has")
    if len(set(xs)) != len(xs):
        raise DuplicateShare(f"x coordinates repeat: {sorted(xs)}")
    # Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); minus is xor in GF(2^8).
    basis = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = gf_mul(num, xj)
                den = gf_mul(den, xj ^ xi)
        basis.append(gf_div(num, den))
    out = bytearray(length - 1)
    for s, li in zip(shares, basis, strict=True):
        if li == 0:
            continue
        log_li = _LOG[li]
        for j in range(length - 1):
            y = s[j]
            if y:
                out[j] ^= _EXP[_LOG[y] + log_li]
    return bytes(out)
