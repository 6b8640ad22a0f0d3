"""The migration plan: who plays which role, on which address and port, with which policy.

The controller builds a ``MigrationPlan`` (Alg 2), the orchestration (``controllers.orchestration``)
hands each role only its own *view* of it (``view_for``): an intermediate never sees the
destination, the leader learns the destination address only from the encrypted manifest.
Plain JSON-serialisable dataclasses (``to_dict``/``from_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("stealth", "direct")


@dataclass(frozen=True)
class Defaults:
    """The one place for the protocol's defaults (controller, roles, policies and scenarios)."""

    window: int = 32  # unacknowledged chunks a source may have in flight
    stall_timeout_s: float = 15.0  # a role gives up after this long without progress
    chunk_size: int = 65536  # bytes of plaintext per chunk of the fixed policy


DEFAULTS = Defaults()


@dataclass
class Endpoint:
    """One role's host: name, IP, agent socket, TCP port it listens on (0: any), X25519 key.

    ``listen_port`` (0: same as ``port``) is for when something between sender and receiver
    changes the port (a NAT, a test's recording proxy): senders connect to ``port``, the role
    listens on ``listen_port``.
    """

    host: str
    ip: str
    agent: str
    port: int = 0
    pubkey: str = ""
    listen_port: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        return cls(
            host=str(d["host"]),
            ip=str(d["ip"]),
            agent=str(d["agent"]),
            port=int(d.get("port", 0)),
            pubkey=str(d.get("pubkey", "")),
            listen_port=int(d.get("listen_port", 0)),
        )


@dataclass
class MigrationPlan:
    """Everything the roles of one migration need; built by the controller.

    ``dest_address``/``dest_port`` are what the leader (or, in direct mode, the source) connects
    to: possibly a virtual address that the switches rewrite. ``chunk_policy`` is a dict for
    ``hosts.chunk_policy.policy_from_settings``; ``precopy`` tunes the VM's pre-copy rounds;
    ``faults`` is a test hook, per host name (e.g. ``{"h3": {"die_after_chunks": 5}}``).
    """

    migration: str
    mode: str
    source: Endpoint
    destination: Endpoint
    intermediates: list[Endpoint] = field(default_factory=list)
    leader: Endpoint | None = None
    n: int = 0
    k: int = 0
    dest_address: str = ""
    dest_port: int = 0
    chunk_policy: dict[str, Any] = field(
        default_factory=lambda: {"kind": "fixed", "size": DEFAULTS.chunk_size})
    precopy: dict[str, Any] = field(default_factory=dict)
    window: int = DEFAULTS.window
    seed: int = 0
    stall_timeout_s: float = DEFAULTS.stall_timeout_s
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.dest_address:
            self.dest_address = self.destination.ip
        if not self.dest_port:
            self.dest_port = self.destination.port
        if self.mode == "stealth":
            if self.leader is None:
                raise ValueError("a stealth plan needs a leader")
            if not self.n:
                self.n = len(self.intermediates)
            if self.n != len(self.intermediates):
                raise ValueError(f"n={self.n} but {len(self.intermediates)} intermediates")
            if not (2 <= self.k <= self.n):
                raise ValueError(f"need 2 <= k <= n, got k={self.k} n={self.n}")
        if not self.destination.pubkey:
            raise ValueError("the destination's public key is missing (from its register message)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MigrationPlan:
        return cls(
            migration=str(d["migration"]),
            mode=str(d["mode"]),
            source=Endpoint.from_dict(d["source"]),
            destination=Endpoint.from_dict(d["destination"]),
            intermediates=[Endpoint.from_dict(e) for e in d.get("intermediates", [])],
            leader=Endpoint.from_dict(d["leader"]) if d.get("leader") else None,
            n=int(d.get("n", 0)),
            k=int(d.get("k", 0)),
            dest_address=str(d.get("dest_address", "")),
            dest_port=int(d.get("dest_port", 0)),
            chunk_policy=dict(
                d.get("chunk_policy") or {"kind": "fixed", "size": DEFAULTS.chunk_size}),
            precopy=dict(d.get("precopy") or {}),
            window=int(d.get("window", DEFAULTS.window)),
            seed=int(d.get("seed", 0)),
            stall_timeout_s=float(d.get("stall_timeout_s", DEFAULTS.stall_timeout_s)),
            faults={str(h): dict(f) for h, f in (d.get("faults") or {}).items()},
        )

    def roles(self) -> list[tuple[str, Endpoint]]:
        """(role, endpoint) in the order the orchestration prepares them: receivers first."""
        out: list[tuple[str, Endpoint]] = [("destination", self.destination)]
        if self.mode == "stealth":
            assert self.leader is not None
            out.append(("leader", self.leader))
            out += [("intermediate", e) for e in self.intermediates]
        out.append(("source", self.source))
        return out

    def view_for(self, role: str, ep: Endpoint) -> dict[str, Any]:
        """What one role is told: only what it needs to play its part."""
        base: dict[str, Any] = {
            "migration": self.migration,
            "mode": self.mode,
            "role": role,
            "me": ep.to_dict(),
            "fault": self.faults.get(ep.host, {}),
            "stall_timeout_s": self.stall_timeout_s,
            "window": self.window,
        }
        if role == "source":
            base.update(
                chunk_policy=self.chunk_policy,
                precopy=self.precopy,
                seed=self.seed,
                k=self.k,
                n=self.n,
                dest_address=self.dest_address,
                dest_port=self.dest_port,
                dest_pubkey=self.destination.pubkey,
            )
            if self.mode == "stealth":
                base["intermediates"] = [e.to_dict() for e in self.intermediates]
        elif role == "intermediate":
            assert self.leader is not None
            base["leader"] = {
                "ip": self.leader.ip,
                "port": self.leader.port,
                "pubkey": self.leader.pubkey,
            }
            base["source_pubkey"] = self.source.pubkey
        elif role == "leader":
            base.update(
                n=self.n,
                k=self.k,
                dest_pubkey=self.destination.pubkey,
                intermediate_pubkeys=[e.pubkey for e in self.intermediates],
            )
        elif role == "destination":
            peer = self.leader if self.mode == "stealth" else self.source
            assert peer is not None
            base["peer_pubkey"] = peer.pubkey
        else:
            raise ValueError(f"unknown role {role!r}")
        return base
