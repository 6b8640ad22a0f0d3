"""Shamir's secret sharing over GF(2^8), byte by byte, as HashiCorp Vault's ``shamir`` does.

The source splits each migration's AES-256 key into ``n`` shares with threshold ``k`` (Alg 3);
the leader combines ``k`` of them (Alg 5). A share is the ``y`` bytes (one per secret byte)
followed by one ``x`` byte; the x values are distinct, random and never 0. Fewer than ``k`` shares
say nothing about the secret: every candidate is equally likely. The field arithmetic is Vault's
constant-time ``mult`` (bit masks, inverse as a^254): no branch or table look-up depends on a
secret byte. Every wrong argument, of any type, raises a ``ShamirError``.

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
    "NoInverse",
    "gf_mul",
    "gf_inv",
    "split",
    "combine",
]


class ShamirError(ValueError):
    """Base class of every error this module raises."""


class BadParameters(ShamirError):
    """k, n, the secret or the shares are of the wrong type or out of range."""


class NotEnoughShares(ShamirError):
    """combine() needs at least two shares (and k of them to get the real secret)."""


class DuplicateShare(ShamirError):
    """Two shares carry the same x coordinate."""


class ShareLengthMismatch(ShamirError):
    """Shares of one secret all have the same length."""


class NoInverse(ShamirError, ZeroDivisionError):
    """0 has no multiplicative inverse."""


# GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, in constant time as Vault's ``mult``:
# no branch and no table indexed by a value, so the time taken says nothing about the secret.


def _mul(a: int, b: int) -> int:
    """a * b: for each bit of b (high to low), double r (reducing by 0x1B when its top bit
    falls out) and add a when the bit is set, the conditions turned into all-ones/zero masks."""
    r = 0
    for i in (7, 6, 5, 4, 3, 2, 1, 0):
        r = ((-((b >> i) & 1) & a) ^ (-(r >> 7) & 0x1B) ^ (r << 1)) & 0xFF
    return r


def _inv(a: int) -> int:
    """a^254, which is a^-1 for a != 0 (and 0 for 0): Vault's addition chain, 11 products."""
    b = _mul(a, a)  # 2
    c = _mul(a, b)  # 3
    b = _mul(c, c)  # 6
    b = _mul(b, b)  # 12
    c = _mul(b, c)  # 15
    b = _mul(b, b)  # 24
    b = _mul(b, b)  # 48
    b = _mul(b, c)  # 63
    b = _mul(b, b)  # 126
    b = _mul(a, b)  # 127
    return _mul(b, b)  # 254


def _element(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 255:
        raise BadParameters(f"{what} must be an integer 0..255, got {v!r}")
    return v


def gf_mul(a: int, b: int) -> int:
    """Multiplication in GF(2^8) (AES field), constant time."""
    return _mul(_element(a, "a"), _element(b, "b"))


def gf_inv(a: int) -> int:
    """Multiplicative inverse (a^254, constant time); 0 has none."""
    if _element(a, "a") == 0:
        raise NoInverse("0 has no inverse in GF(2^8)")
    return _inv(a)


def _eval(coeffs: Sequence[int], x: int) -> int:
    """Horner evaluation of a polynomial given lowest-degree first."""
    acc = 0
    for c in reversed(coeffs):
        acc = _mul(acc, x) ^ c
    return acc


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def split(secret: bytes, k: int, n: int) -> list[bytes]:
    """Split ``secret`` into ``n`` shares, any ``k`` of which recover it.

    Each share is ``len(secret) + 1`` bytes: the y values, then the x coordinate (1..255).
    """
    if not isinstance(secret, bytes | bytearray) or len(secret) == 0:
        raise BadParameters("the secret must be non-empty bytes")
    if not (_is_int(k) and _is_int(n) and 2 <= k <= n <= 255):
        raise BadParameters(f"need integers 2 <= k <= n <= 255, got k={k!r} n={n!r}")
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
    caller learns it is wrong only when the key fails to open its ciphertext. The checks look
    only at types, lengths and the (public) x coordinates; the y bytes go through constant-time
    arithmetic alone.
    """
    if not isinstance(shares, list | tuple):
        raise BadParameters(f"shares must be a list of bytes, got {type(shares).__name__}")
    for s in shares:
        if not isinstance(s, bytes | bytearray):
            raise BadParameters(f"a share must be bytes, got {type(s).__name__}")
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
                num = _mul(num, xj)
                den = _mul(den, xj ^ xi)
        basis.append(_mul(num, _inv(den)))
    out = bytearray(length - 1)
    for s, li in zip(shares, basis, strict=True):
        for j in range(length - 1):
            out[j] ^= _mul(s[j], li)
    return bytes(out)
