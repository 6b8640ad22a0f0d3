"""Chunk policies (Alg 3, "adjustable chunk size"): how big each chunk of a migration is and
how long the source waits before sending it; key shares are padded to sizes drawn the same way.

A policy is named in the plan's ``chunk_policy`` dict by its ``"kind"``; ``POLICIES`` maps each
kind to a factory and ``policy_from_settings`` looks it up. ``fixed`` is the baseline (fixed
size, no pacing or a fixed gap); ``profile`` draws sizes and gaps from a normal-traffic profile
(``hosts.traffic``) within a rate budget; ``cover`` sends 64 KiB chunks back to back into the
agents' cover mux, which is the pacer (its records keep their schedule, a migration only fills
them), so the source measures nothing and starts at once. A new policy is one class with the
``ChunkPolicy`` methods and a ``from_settings`` factory, plus one line in ``POLICIES``.
``Pacer`` sleeps until each send time. Used by the source role (``hosts.roles``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from hosts.protocol.plan import DEFAULTS
from hosts.traffic import MAX_CHUNK, MIN_CHUNK, TrafficProfile, profile_from_settings


class ChunkPolicy(Protocol):
    """What the source asks of a policy, chunk by chunk."""

    def next_size(self) -> int:
        """Bytes of the next chunk (or padded key share)."""
        ...

    def next_gap(self, size: int) -> float:
        """Seconds to wait before sending a chunk of ``size`` bytes."""
        ...

    def for_sender(self, share: float, seed: int) -> ChunkPolicy:
        """The policy of one of several parallel senders, which get ``share`` of the budget."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for the source's report, with the ``kind``."""
        ...


# (the plan's chunk_policy dict, seed, share of the rate budget, the sender's own IP) -> policy
PolicyFactory = Callable[[dict[str, Any], int, float, str | None], ChunkPolicy]


class FixedChunkPolicy:
    """The baseline: every chunk ``size`` bytes, sent back to back (optionally a fixed gap)."""

    def __init__(self, size: int = DEFAULTS.chunk_size, gap_s: float = 0.0) -> None:
        if not MIN_CHUNK <= size <= MAX_CHUNK:
            raise ValueError(f"chunk size {size} outside [{MIN_CHUNK}, {MAX_CHUNK}]")
        self.size = size
        self.gap_s = gap_s

    @classmethod
    def from_settings(cls, settings: dict[str, Any], seed: int, share: float,
                      ip: str | None) -> FixedChunkPolicy:
        """``{"kind": "fixed", "size": N, "gap_s": G}``; a fixed gap stays per sender."""
        return cls(int(settings.get("size", DEFAULTS.chunk_size)),
                   float(settings.get("gap_s", 0.0)))

    def next_size(self) -> int:
        return self.size

    def next_gap(self, size: int) -> float:
        return self.gap_s

    def describe(self) -> dict[str, Any]:
        return {"kind": "fixed", "size": self.size, "gap_s": self.gap_s}

    def for_sender(self, share: float, seed: int) -> FixedChunkPolicy:
        """The policy of one of several parallel senders (a fixed gap stays per sender)."""
        return FixedChunkPolicy(self.size, self.gap_s)


class ProfileChunkPolicy:
    """Chunk sizes and send times drawn from a measured profile, within a rate budget.

    ``rate_budget_bps`` (bytes/s, 0 = unlimited) caps the migration's own rate on this sender:
    a gap is never shorter than ``size / budget``. Sizes are clipped to [min_size, max_size].
    """

    def __init__(
        self,
        profile: TrafficProfile,
        rate_budget_bps: float = 0.0,
        seed: int = 0,
        min_size: int = MIN_CHUNK,
        max_size: int = 1 << 20,
    ) -> None:
        self.profile = profile
        self.rate_budget_bps = rate_budget_bps
        self.rng = random.Random(seed)
        self.min_size = max(MIN_CHUNK, min_size)
        self.max_size = min(MAX_CHUNK, max_size)
        self._sizes = [s for s in (profile.message_sizes or profile.flow_sizes) if s > 0]
        self._gaps = [g for g in profile.gaps_s if g >= 0]

    @classmethod
    def from_settings(cls, settings: dict[str, Any], seed: int, share: float,
                      ip: str | None) -> ProfileChunkPolicy:
        """``{"kind": "profile", <a source of samples, see traffic.profile_from_settings>,
        "rate_budget_bps": B, "min_size": .., "max_size": ..}``; ``share`` of B is this
        sender's."""
        return cls(
            profile_from_settings(settings, seed=seed, ip=ip),
            rate_budget_bps=float(settings.get("rate_budget_bps", 0.0)) * share,
            seed=seed,
            min_size=int(settings.get("min_size", MIN_CHUNK)),
            max_size=int(settings.get("max_size", 1 << 20)),
        )

    def next_size(self) -> int:
        if not self._sizes:
            return self.min_size
        return min(self.max_size, max(self.min_size, self.rng.choice(self._sizes)))

    def next_gap(self, size: int) -> float:
        gap = self.rng.choice(self._gaps) if self._gaps else 0.0
        if self.rate_budget_bps > 0:
            gap = max(gap, size / self.rate_budget_bps)
        return gap

    def for_sender(self, share: float, seed: int) -> ProfileChunkPolicy:
        """The policy of one of several parallel senders: same profile, ``share`` of the budget."""
        return ProfileChunkPolicy(
            self.profile, self.rate_budget_bps * share, seed, self.min_size, self.max_size
        )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "profile",
            "rate_budget_bps": self.rate_budget_bps,
            "sizes": len(self._sizes),
            "gaps": len(self._gaps),
        }


class CoverChunkPolicy(FixedChunkPolicy):
    """The cover arm: ``size``-byte chunks (64 KiB), no gaps, no sniffing. The hops run inside
    the cover mux (the plan's ``transport="cover"``), whose fixed schedule paces the bytes: the
    migration only takes the place of cover bytes, it never adds a record or changes a gap."""

    def __init__(self, size: int = DEFAULTS.chunk_size) -> None:
        super().__init__(size, 0.0)

    @classmethod
    def from_settings(cls, settings: dict[str, Any], seed: int, share: float,
                      ip: str | None) -> CoverChunkPolicy:
        """``{"kind": "cover", "size": N}``; a gap is refused (the mux is the pacer)."""
        if float(settings.get("gap_s", 0.0)) != 0.0:
            raise ValueError("the cover chunk policy has no gaps: the cover mux paces the bytes")
        return cls(int(settings.get("size", DEFAULTS.chunk_size)))

    def describe(self) -> dict[str, Any]:
        return {"kind": "cover", "size": self.size, "gap_s": 0.0}

    def for_sender(self, share: float, seed: int) -> CoverChunkPolicy:
        return CoverChunkPolicy(self.size)


# the plan's chunk_policy["kind"] -> factory; a new policy is one class above and one line here
POLICIES: dict[str, PolicyFactory] = {
    "fixed": FixedChunkPolicy.from_settings,
    "profile": ProfileChunkPolicy.from_settings,
    "cover": CoverChunkPolicy.from_settings,
}


def policy_from_settings(
    settings: dict[str, Any], seed: int = 0, share: float = 1.0, ip: str | None = None
) -> ChunkPolicy:
    """Build the policy the plan's ``chunk_policy`` dict names by ``"kind"`` (default fixed).

    ``share`` divides a rate budget among parallel senders; ``ip`` is the sender's own address
    (a profile policy may sniff its interface). An unknown kind is a ``ValueError`` that lists
    the known ones.
    """
    kind = settings.get("kind", "fixed")
    try:
        factory = POLICIES[kind]
    except KeyError:
        raise ValueError(f"unknown chunk policy kind {kind!r}: "
                         f"known kinds are {', '.join(sorted(POLICIES))}") from None
    return factory(settings, seed, share, ip)


class Pacer:
    """Sleeps until each send time a policy asks for (monotonic clock, no drift)."""

    def __init__(self) -> None:
        self.next_t = time.monotonic()

    def wait(self, gap_s: float) -> None:
        if gap_s <= 0:
            self.next_t = time.monotonic()
            return
        self.next_t = max(self.next_t + gap_s, time.monotonic() - 1.0)
        delay = self.next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
