"""The migration plan: who plays which role, on which address and port, with which policy.

The controller builds a ``MigrationPlan`` (Alg 2); the orchestration (``controllers.orchestration``)
sends each role only its own typed *view* of it (``MigrationPlan.view_for`` → ``SourceView``,
``IntermediateView``, ``LeaderView`` or ``DestinationView``, as ``to_dict()`` JSON): an
intermediate never sees the destination, the leader learns the destination address only from the
encrypted manifest. The agent turns the JSON back into a view with ``view_from_dict``, which
checks every field and raises ``PlanError`` naming the one that is missing or mistyped.

About 400 lines on purpose: the plan and its four views are one contract, read together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Self, TypeVar

MODES = ("stealth", "direct")
# how a role's hops travel: "tcp", one TCP connection per hop to the role's port; "cover", inside
# the agents' cover mux (``hosts.cover``), the role's port a virtual port of the mux only
TRANSPORTS = ("tcp", "cover")


@dataclass(frozen=True)
class Defaults:
    """The one place for the protocol's defaults (controller, roles, policies and scenarios)."""

    window: int = 32  # unacknowledged chunks a source may have in flight
    stall_timeout_s: float = 15.0  # a role gives up after this long without progress
    chunk_size: int = 65536  # bytes of plaintext per chunk of the fixed policy


DEFAULTS = Defaults()


class PlanError(ValueError):
    """A plan or a role's view that lacks a field or holds one of the wrong type (named)."""


_MISSING: Any = object()
T = TypeVar("T")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Fields:
    """Reads the fields of one JSON object and checks their types.

    ``what`` names the object in errors (``source view``); ``prefix`` the path of a nested one
    (``me.``), so an error reads ``source view: field 'me.port' must be an int, got '80'``.
    """

    def __init__(self, d: Any, what: str, prefix: str = "") -> None:
        if not isinstance(d, dict):
            where = f"{what}: field {prefix.rstrip('.')!r}" if prefix else what
            raise PlanError(f"{where} must be an object, got {d!r}")
        self.d = d
        self.what = what
        self.prefix = prefix

    def error(self, name: str, problem: str) -> PlanError:
        return PlanError(f"{self.what}: field {self.prefix + name!r} {problem}")

    def _get(self, name: str, default: Any) -> Any:
        if name in self.d:
            return self.d[name]
        if default is _MISSING:
            raise self.error(name, "is missing")
        return default

    def _typed(self, name: str, default: Any, ok: Callable[[Any], bool], kind: str) -> Any:
        v = self._get(name, default)
        if not ok(v):
            raise self.error(name, f"must be {kind}, got {v!r}")
        return v

    def text(self, name: str, default: Any = _MISSING) -> str:
        return self._typed(name, default, lambda v: isinstance(v, str), "a string")

    def integer(self, name: str, default: Any = _MISSING) -> int:
        return self._typed(name, default, _is_int, "an int")

    def number(self, name: str, default: Any = _MISSING) -> float:
        return float(self._typed(name, default, lambda v: _is_int(v) or isinstance(v, float),
                                 "a number"))

    def obj(self, name: str, default: Any = _MISSING) -> dict[str, Any]:
        return dict(self._typed(name, default, lambda v: isinstance(v, dict), "an object"))

    def texts(self, name: str, default: Any = _MISSING) -> list[str]:
        def ok(v: Any) -> bool:
            return isinstance(v, list) and all(isinstance(x, str) for x in v)

        return list(self._typed(name, default, ok, "a list of strings"))

    def nested(self, name: str, read: Callable[[_Fields], T]) -> T:
        return read(_Fields(self._get(name, _MISSING), self.what, f"{self.prefix}{name}."))

    def nested_list(self, name: str, read: Callable[[_Fields], T], default: Any = _MISSING
                    ) -> list[T]:
        v = self._typed(name, default, lambda v: isinstance(v, list), "a list")
        return [read(_Fields(x, self.what, f"{self.prefix}{name}[{i}].")) for i, x in enumerate(v)]


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
        """Check and read an endpoint; ``PlanError`` names a missing or mistyped field."""
        return cls.read(_Fields(d, "endpoint"))

    @classmethod
    def read(cls, f: _Fields) -> Endpoint:
        return cls(
            host=f.text("host"),
            ip=f.text("ip"),
            agent=f.text("agent"),
            port=f.integer("port", 0),
            pubkey=f.text("pubkey", ""),
            listen_port=f.integer("listen_port", 0),
        )


@dataclass(frozen=True)
class Peer:
    """The hop a relay sends on to, as the relay is told it: address, port, X25519 key."""

    ip: str
    port: int
    pubkey: str

    @classmethod
    def read(cls, f: _Fields) -> Peer:
        return cls(ip=f.text("ip"), port=f.integer("port"), pubkey=f.text("pubkey"))


@dataclass
class MigrationPlan:
    """Everything the roles of one migration need; built by the controller.

    ``dest_address``/``dest_port`` are what the leader (or, in direct mode, the source) connects
    to: possibly a virtual address that the switches rewrite. ``chunk_policy`` is a dict for
    ``hosts.chunk_policy.policy_from_settings``; ``precopy`` tunes the VM's pre-copy rounds;
    ``faults`` is a test hook, per host name (e.g. ``{"h3": {"die_after_chunks": 5}}``).
    ``max_image_bytes`` is the source's VM size as its agent registered it: the destination
    refuses a larger image (0: not vouched, only the VM model's own limit applies).
    ``vm_ip``/``vm_mac`` are the VM's own address as the controller's book has it ("": the VM has
    none): the destination refuses a manifest that claims another.
    ``transport`` (``TRANSPORTS``) says whether the hops are TCP connections or streams of the
    agents' cover mux (then every port is a virtual port of the mux, never on the wire);
    ``decided_at`` is when the controller decided to migrate, for the source's start latency.
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
    max_image_bytes: int = 0
    vm_ip: str = ""
    vm_mac: str = ""
    transport: str = "tcp"
    decided_at: float = 0.0  # wall clock of the controller's decision (0: when it is run)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        if (self.transport == "cover") != (self.chunk_policy.get("kind") == "cover"):
            raise ValueError("transport 'cover' goes with chunk_policy kind 'cover' and only with "
                             f"it, got {self.transport!r} with {self.chunk_policy.get('kind')!r}")
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
        return asdict(self)

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
            max_image_bytes=int(d.get("max_image_bytes", 0)),
            vm_ip=str(d.get("vm_ip", "")),
            vm_mac=str(d.get("vm_mac", "")),
            transport=str(d.get("transport", "tcp")),
            decided_at=float(d.get("decided_at", 0.0)),
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

    def view_for(self, role: str, ep: Endpoint) -> RoleView:
        """What one role is told: only what it needs to play its part."""
        common: dict[str, Any] = dict(
            migration=self.migration, mode=self.mode, me=replace(ep),
            fault=dict(self.faults.get(ep.host, {})), stall_timeout_s=self.stall_timeout_s,
            window=self.window, transport=self.transport)
        if role == "source":
            inters = self.intermediates if self.mode == "stealth" else []
            return SourceView(
                **common, k=self.k, n=self.n, dest_address=self.dest_address,
                dest_port=self.dest_port, dest_pubkey=self.destination.pubkey,
                intermediates=[replace(e) for e in inters], chunk_policy=dict(self.chunk_policy),
                precopy=dict(self.precopy), seed=self.seed, decided_at=self.decided_at)
        if role == "intermediate":
            assert self.leader is not None
            return IntermediateView(
                **common, leader=Peer(self.leader.ip, self.leader.port, self.leader.pubkey),
                source_pubkey=self.source.pubkey)
        if role == "leader":
            return LeaderView(
                **common, n=self.n, k=self.k, dest_pubkey=self.destination.pubkey,
                intermediate_pubkeys=[e.pubkey for e in self.intermediates])
        if role == "destination":
            peer = self.leader if self.mode == "stealth" else self.source
            assert peer is not None
            return DestinationView(
                **common, peer_pubkey=peer.pubkey, max_image_bytes=self.max_image_bytes,
                vm_ip=self.vm_ip, vm_mac=self.vm_mac)
        raise ValueError(f"unknown role {role!r}")


# --- the per-role views ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RoleView:
    """What every role is told: its migration, mode, own endpoint, test faults, limits and the
    transport of its hops.

    ``fault`` is this host's entry of ``MigrationPlan.faults`` (empty: no fault injected);
    ``transport`` is the plan's (``TRANSPORTS``; missing: ``"tcp"``).
    A subclass per role adds its own fields; ``role`` is the subclass's name for it.
    """

    role: ClassVar[str] = ""
    migration: str
    mode: str
    me: Endpoint
    fault: dict[str, Any] = field(default_factory=dict)
    stall_timeout_s: float = DEFAULTS.stall_timeout_s
    window: int = DEFAULTS.window
    transport: str = "tcp"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form sent in the ``prepare`` op (``role`` included)."""
        return {"role": self.role, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Check and read a view; ``PlanError`` names a missing or mistyped field."""
        f = _Fields(d, f"{cls.role} view")
        role = f.text("role")
        if role != cls.role:
            raise f.error("role", f"must be {cls.role!r}, got {role!r}")
        mode = f.text("mode")
        if mode not in MODES:
            raise f.error("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        window = f.integer("window", DEFAULTS.window)
        if window < 1:
            raise f.error("window", f"must be at least 1, got {window}")
        stall = f.number("stall_timeout_s", DEFAULTS.stall_timeout_s)
        if stall <= 0:
            raise f.error("stall_timeout_s", f"must be positive, got {stall}")
        transport = f.text("transport", "tcp")
        if transport not in TRANSPORTS:
            raise f.error("transport", f"must be one of {', '.join(TRANSPORTS)}, "
                          f"got {transport!r}")
        return cls(
            migration=f.text("migration"),
            mode=mode,
            me=f.nested("me", Endpoint.read),
            fault=f.obj("fault", {}),
            stall_timeout_s=stall,
            window=window,
            transport=transport,
            **cls._own_fields(f, mode),
        )

    @classmethod
    def _own_fields(cls, f: _Fields, mode: str) -> dict[str, Any]:
        """The subclass's fields, read from ``f``."""
        return {}


@dataclass(frozen=True, kw_only=True)
class SourceView(RoleView):
    """The source: the share split, where the stream goes, the chunk policy and pre-copy."""

    role: ClassVar[str] = "source"
    k: int
    n: int
    dest_address: str
    dest_port: int
    dest_pubkey: str
    intermediates: list[Endpoint] = field(default_factory=list)  # stealth mode only
    chunk_policy: dict[str, Any] = field(default_factory=dict)
    precopy: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    decided_at: float = 0.0  # the controller's decision (wall clock; 0: unknown)

    @classmethod
    def _own_fields(cls, f: _Fields, mode: str) -> dict[str, Any]:
        return {
            "k": f.integer("k"),
            "n": f.integer("n"),
            "dest_address": f.text("dest_address"),
            "dest_port": f.integer("dest_port"),
            "dest_pubkey": f.text("dest_pubkey"),
            "intermediates": f.nested_list(
                "intermediates", Endpoint.read, [] if mode == "direct" else _MISSING),
            "chunk_policy": f.obj("chunk_policy", {}),
            "precopy": f.obj("precopy", {}),
            "seed": f.integer("seed", 0),
            "decided_at": f.number("decided_at", 0.0),
        }


@dataclass(frozen=True, kw_only=True)
class IntermediateView(RoleView):
    """An intermediate: whom it accepts (the source's key) and where it relays to (the leader)."""

    role: ClassVar[str] = "intermediate"
    leader: Peer
    source_pubkey: str

    @classmethod
    def _own_fields(cls, f: _Fields, mode: str) -> dict[str, Any]:
        return {"leader": f.nested("leader", Peer.read), "source_pubkey": f.text("source_pubkey")}


@dataclass(frozen=True, kw_only=True)
class LeaderView(RoleView):
    """The leader: k of n, whom it accepts (the intermediates) and the destination's key."""

    role: ClassVar[str] = "leader"
    n: int
    k: int
    dest_pubkey: str
    intermediate_pubkeys: list[str]

    @classmethod
    def _own_fields(cls, f: _Fields, mode: str) -> dict[str, Any]:
        return {
            "n": f.integer("n"),
            "k": f.integer("k"),
            "dest_pubkey": f.text("dest_pubkey"),
            "intermediate_pubkeys": f.texts("intermediate_pubkeys"),
        }


@dataclass(frozen=True, kw_only=True)
class DestinationView(RoleView):
    """The destination: the one key it accepts a stream from (leader, or source if direct),
    the largest image it installs (``max_image_bytes``, vouched by the controller; 0: unknown)
    and the VM's own address (``vm_ip``/``vm_mac``, the controller's; "": none), the only one
    it gives the VM's NIC."""

    role: ClassVar[str] = "destination"
    peer_pubkey: str
    max_image_bytes: int = 0
    vm_ip: str = ""
    vm_mac: str = ""

    @classmethod
    def _own_fields(cls, f: _Fields, mode: str) -> dict[str, Any]:
        peer = f.text("peer_pubkey")
        limit = f.integer("max_image_bytes")  # always sent: 0 says "not vouched" explicitly
        if limit < 0:
            raise f.error("max_image_bytes", f"must be at least 0, got {limit}")
        return {"peer_pubkey": peer, "max_image_bytes": limit,
                "vm_ip": f.text("vm_ip"), "vm_mac": f.text("vm_mac")}  # always sent too


VIEWS: dict[str, type[RoleView]] = {
    v.role: v for v in (SourceView, IntermediateView, LeaderView, DestinationView)
}


def view_from_dict(d: Any) -> RoleView:
    """The typed view of a ``prepare`` op's ``view``, picked by its ``role``; or ``PlanError``."""
    f = _Fields(d, "view")
    role = f.text("role")
    if role not in VIEWS:
        raise f.error("role", f"must be one of {', '.join(VIEWS)}, got {role!r}")
    return VIEWS[role].from_dict(d)
