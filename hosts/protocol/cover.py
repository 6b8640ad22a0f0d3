"""The cover contract: what a scenario says about cover traffic, and what each agent is told.

Cover traffic is the stealth arm's hiding place (issue 14). Every tenant VM sends encrypted cover
records to every other tenant VM on a schedule fixed before, and independent of, any migration;
a migration's relay bytes take the place of cover bytes inside those records and never change the
schedule. ``CoverSettings`` is the scenario's part (the rate, the record sizes, the connection
sizes, the port); ``CoverConfig`` is what the controller sends each agent (the settings, the
agent's own seed, and its peers' addresses and static keys). The mux that carries them lives in
``hosts.cover``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COVER_PORT = 8443  # a tenant service port: the VMs' always-on encrypted replication service


class CoverError(ValueError):
    """A cover setting or config that is missing, mistyped or out of range (named)."""


@dataclass(frozen=True)
class CoverSettings:
    """Cover traffic of one run, the same for every tenant VM."""

    rate_bytes_per_s: float  # per VM, summed over all its peers (on-wire record bytes)
    record_min: int = 1024  # record sizes (bytes on the wire) are drawn uniformly from
    record_max: int = 16384  # [record_min, record_max]; relay records are drawn the same way
    flow_cdf: str = "websearch"  # bytes per cover connection, like tenant flows (hosts.workload)
    flow_cap_bytes: int = 1_000_000
    port: int = COVER_PORT
    seed: int = 0
    spray: bool = True  # streams also go two hops via other peers (throughput ~ the whole rate)
    copies: bool = True  # a stream's tail waiting at a forwarder goes again in padding room
    stream_timeout_s: float = 20.0  # a stream whose peer acknowledges nothing this long closes

    def __post_init__(self) -> None:
        if not self.rate_bytes_per_s > 0:
            raise CoverError(f"cover rate must be > 0 bytes/s, got {self.rate_bytes_per_s!r}")
        if not 256 <= self.record_min <= self.record_max <= 65535:
            raise CoverError("cover record sizes need 256 <= record_min <= record_max <= 65535, "
                             f"got {self.record_min}..{self.record_max}")
        if not 1 <= self.port <= 65535:
            raise CoverError(f"cover port must be 1..65535, got {self.port!r}")
        if not self.flow_cap_bytes >= 64:
            raise CoverError(f"cover flow_cap_bytes must be >= 64, got {self.flow_cap_bytes!r}")
        if not self.stream_timeout_s > 0:
            raise CoverError(f"cover stream_timeout_s must be > 0, got {self.stream_timeout_s!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoverSettings:
        if not isinstance(d, dict):
            raise CoverError(f"cover settings must be an object, got {d!r}")
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise CoverError(f"unknown cover setting(s) {extra}; known: {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise CoverError(f"cover settings: {exc}") from None


@dataclass(frozen=True)
class CoverPeer:
    host: str
    ip: str
    pubkey: str  # hex X25519 static public key of the peer's agent


@dataclass(frozen=True)
class CoverConfig:
    """What one agent needs to run its cover schedule."""

    settings: CoverSettings
    host: str
    ip: str
    peers: tuple[CoverPeer, ...] = field(default_factory=tuple)
    seed: int = 0  # this agent's own seed (mixed with settings.seed and the host name)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "host": self.host, "ip": self.ip,
                "peers": [asdict(p) for p in self.peers], "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoverConfig:
        if not isinstance(d, dict):
            raise CoverError(f"cover config must be an object, got {d!r}")
        try:
            peers = tuple(CoverPeer(str(p["host"]), str(p["ip"]), str(p["pubkey"]))
                          for p in d["peers"])
            return cls(CoverSettings.from_dict(d["settings"]), str(d["host"]), str(d["ip"]),
                       peers, int(d.get("seed", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CoverError):
                raise
            raise CoverError(f"cover config: missing or bad field {exc}") from None
