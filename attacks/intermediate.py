"""The curious intermediate: an honest-but-curious relay VM tries to learn the key and destination.

What it holds (the threat model grants it nothing else): its own key share(s), the chunk frames it
relayed (after its hop channel's decryption: ``index u32 | last u8 | nonce prefix 7 | sealed``, the
public wire format), the migration label of its hop, and the peers it talks to. It also knows the
published design: Shamir over GF(2^8), AES-256-GCM or ChaCha20-Poly1305, a STREAM nonce
``prefix ‖ index ‖ last`` and associated data ``"stealth-mtd chunk v1|" label "|" index``.

The attack:

1. every candidate key it can form: the Lagrange interpolation at 0 of every subset of its shares
   (both share layouts, x last or first; both usual field polynomials, 0x11B and 0x11D) and each
   share's bytes taken raw;
2. every candidate against every held chunk under every nonce/AD convention it knows — an AEAD tag
   that verifies is proof (known-plaintext structure: the tag);
3. IPv4 addresses searched in whatever opened (the manifest names the destination) and, for
   completeness, in the ciphertext (ASCII dotted quads, and binary 4-byte addresses of hosts it
   knows) — in ciphertext only coincidence can hit.

With fewer than ``k`` shares every key is equally consistent with what it holds
(``consistent_secret_bytes`` counts it: 256 values per key byte), so step 2 fails and the attack
reports no key and no destination. With ``k`` shares (collusion, or the leader) it succeeds; the
tests show both. The GF(2^8) arithmetic is the attacker's own: nothing is imported from ``hosts``.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

POLYNOMIALS = (0x11B, 0x11D)
LAYOUTS = ("x_last", "x_first")
AD_PREFIX = b"stealth-mtd chunk v1|"
_DOTTED = re.compile(
    rb"(?<![0-9])((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3})(?![0-9])"
)


def gf_mul(a: int, b: int, poly: int = 0x11B) -> int:
    """Multiply in GF(2^8) modulo ``poly`` (carry-less, reduced)."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= poly
        b >>= 1
    return r


def gf_inv(a: int, poly: int = 0x11B) -> int:
    """Multiplicative inverse (a^254); 0 has none."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    r, base, e = 1, a, 254
    while e:
        if e & 1:
            r = gf_mul(r, base, poly)
        base = gf_mul(base, base, poly)
        e >>= 1
    return r


def parse_share(share: bytes, layout: str = "x_last") -> tuple[int, bytes]:
    """A share as ``(x, y bytes)``: Vault's layout puts x last."""
    if len(share) < 2:
        raise ValueError("a share has at least one y byte and an x byte")
    if layout == "x_last":
        return share[-1], share[:-1]
    return share[0], share[1:]


def interpolate(points: Sequence[tuple[int, bytes]], at: int = 0, poly: int = 0x11B) -> bytes:
    """Lagrange interpolation of byte-wise polynomials through ``points``, evaluated at ``at``."""
    xs = [x for x, _ in points]
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate x coordinates")
    n = len(points[0][1])
    out = bytearray(n)
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = gf_mul(num, at ^ xj, poly)
                den = gf_mul(den, xi ^ xj, poly)
        coef = gf_mul(num, gf_inv(den, poly), poly)
        for b in range(n):
            out[b] ^= gf_mul(yi[b], coef, poly)
    return bytes(out)


def consistent_secret_bytes(
    shares: Sequence[bytes], k: int, position: int = 0, poly: int = 0x11B, layout: str = "x_last"
) -> int:
    """How many values of secret byte ``position`` agree with the held shares for threshold k.

    For each candidate value s the polynomial through ``(0, s)`` and the first ``k - 1`` shares is
    built and checked against the remaining shares. Fewer than ``k`` shares: all 256 agree.
    """
    pts = [parse_share(s, layout) for s in shares]
    pts = [(x, y[position : position + 1]) for x, y in pts]
    base, rest = pts[: k - 1], pts[k - 1 :]
    count = 0
    for s in range(256):
        through = [(0, bytes([s])), *base]
        if all(interpolate(through, x, poly) == y for x, y in rest):
            count += 1
    return count


def candidate_keys(
    shares: Sequence[bytes], key_lengths: Iterable[int] = (16, 24, 32)
) -> list[tuple[str, bytes]]:
    """Every key the attacker can form from its shares, labelled by how it was formed."""
    lengths = set(key_lengths)
    out: dict[bytes, str] = {}
    for layout in LAYOUTS:
        try:
            pts = [parse_share(s, layout) for s in shares]
        except ValueError:
            continue
        for x, y in pts:
            if len(y) in lengths:
                out.setdefault(y, f"raw share x={x} ({layout})")
        for r in range(2, len(pts) + 1):
            for subset in itertools.combinations(pts, r):
                if len({x for x, _ in subset}) != r or len({len(y) for _, y in subset}) != 1:
                    continue
                for poly in POLYNOMIALS:
                    key = interpolate(subset, 0, poly)
                    if len(key) in lengths:
                        out.setdefault(key, f"interpolate {r} shares poly={poly:#x} ({layout})")
    return [(label, key) for key, label in out.items()]


@dataclass
class HeldChunk:
    """One relayed chunk as the intermediate holds it."""

    index: int
    last: bool
    prefix: bytes
    sealed: bytes
    raw: bytes


def parse_chunk_body(body: bytes) -> HeldChunk | None:
    """``index u32 | last u8 | prefix 7 | sealed`` (the public wire format), or None."""
    if len(body) < 12 + 16:
        return None
    index, last, prefix = struct.unpack_from(">IB7s", body, 0)
    return HeldChunk(index, bool(last), prefix, body[12:], body)


def _nonces_and_ads(chunk: HeldChunk, labels: Sequence[str]) -> list[tuple[bytes, bytes, bytes]]:
    """(nonce, ciphertext, associated data) conventions the attacker knows of."""
    stream_nonce = chunk.prefix + struct.pack(">IB", chunk.index, 1 if chunk.last else 0)
    ads = [b""] + [AD_PREFIX + lb.encode() + b"|" + struct.pack(">I", chunk.index) for lb in labels]
    combos = [(stream_nonce, chunk.sealed, ad) for ad in ads]
    combos += [(chunk.raw[:12], chunk.raw[12:], ad) for ad in ads]  # nonce ‖ ciphertext
    return combos


def try_open(key: bytes, chunk: HeldChunk, labels: Sequence[str] = ()) -> bytes | None:
    """Plaintext if some known cipher/nonce/AD convention authenticates under ``key``."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    ciphers = [AESGCM(key)]
    if len(key) == 32:
        ciphers.append(ChaCha20Poly1305(key))
    for nonce, ct, ad in _nonces_and_ads(chunk, labels):
        for c in ciphers:
            try:
                return c.decrypt(nonce, ct, ad)
            except (InvalidTag, ValueError):
                continue
    return None


def find_ip_addresses(data: bytes, known_hosts: Iterable[str] = ()) -> list[str]:
    """IPv4 addresses in ``data``: ASCII dotted quads, and 4-byte binary forms of known hosts."""
    found = [m.group(1).decode() for m in _DOTTED.finditer(data)]
    for ip in known_hosts:
        if ipaddress.IPv4Address(ip).packed in data:
            found.append(ip)
    return found


@dataclass
class CuriousResult:
    """What the curious intermediate learned (None = nothing)."""

    key: bytes | None
    key_method: str | None
    destination: str | None
    chunks_opened: int
    keys_tried: int
    plaintext_addresses: list[str] = field(default_factory=list)
    ciphertext_addresses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "key_recovered": self.key is not None,
            "key_method": self.key_method,
            "destination": self.destination,
            "chunks_opened": self.chunks_opened,
            "keys_tried": self.keys_tried,
            "plaintext_addresses": self.plaintext_addresses,
            "ciphertext_addresses": self.ciphertext_addresses,
            "notes": self.notes,
        }


def curious_intermediate(
    shares: Sequence[bytes],
    chunk_bodies: Sequence[bytes],
    labels: Sequence[str] = (),
    known_hosts: Iterable[str] = (),
    own_peers: Iterable[str] = (),
) -> CuriousResult:
    """Try to recover the migration key and the destination from what one relay holds.

    ``labels`` are migration labels the intermediate saw (associated-data candidates);
    ``known_hosts`` are addresses it may search for in binary form; ``own_peers`` (source and
    leader, which it talks to anyway) are not counted as a learned destination.
    """
    known = list(known_hosts)
    peers = set(own_peers)
    chunks = [c for c in (parse_chunk_body(b) for b in chunk_bodies) if c is not None]
    result = CuriousResult(None, None, None, 0, 0)
    for body in chunk_bodies:
        result.ciphertext_addresses += find_ip_addresses(body, known)
    for label, key in candidate_keys(shares):
        result.keys_tried += 1
        opened = [(c, try_open(key, c, labels)) for c in chunks]
        opened = [(c, pt) for c, pt in opened if pt is not None]
        if not opened:
            continue
        result.key, result.key_method = key, label
        result.chunks_opened = len(opened)
        for _, pt in sorted(opened, key=lambda cp: cp[0].index):
            result.plaintext_addresses += find_ip_addresses(pt, known)
        break
    learned = [ip for ip in result.plaintext_addresses if ip not in peers]
    result.destination = learned[0] if learned else None
    if result.key is None:
        result.notes.append(
            f"no candidate key of {result.keys_tried} opened any of {len(chunks)} chunks"
        )
    return result
