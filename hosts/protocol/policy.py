"""Who may call which management op: the one table, checked by ``hosts.protocol.mgmt`` on every
authenticated request before the op's handler runs.

Callers are identities (``hosts.protocol.auth``): ``runner``, ``controller``, ``agent:<host>``,
``monitor:<host>`` and ``test`` (the root tests' identity; it can do what the runner does and is
the only one that may ask for fault injection, see ``TEST_ONLY_FIELDS``). A caller with a host
(an agent or a monitor) acts only for that host: the ops in ``HOST_BOUND`` carry a ``host`` field
that must name the caller's own host. Anything not in a table is refused.
"""

from __future__ import annotations

from typing import Any

from hosts.protocol import ops
from hosts.protocol.auth import CONTROLLER, RUNNER, TEST, split_identity

AGENT, MONITOR = "agent", "monitor"
BOSS = frozenset({RUNNER, TEST})  # the runner (and the tests standing in for it)

# server "controller": op -> the caller kinds allowed
CONTROLLER_OPS: dict[str, frozenset[str]] = {
    ops.STATUS: BOSS,
    ops.REGISTER: frozenset({AGENT}),
    ops.RELAY: BOSS,
    ops.RELAY_REMOVE: BOSS,
    ops.FLOWS: BOSS,
    ops.DEFAULTS: BOSS,
    ops.ANOMALY: BOSS | {MONITOR},  # a monitor: its own host only (HOST_BOUND)
    ops.MIGRATE: BOSS,
    ops.MIGRATION_STATUS: BOSS,
    ops.MIGRATIONS_ACTIVE: BOSS | {MONITOR},  # a monitor sees only its own host's migrations
    ops.MIGRATION_DONE: frozenset({AGENT}),
    ops.MIGRATION_FAILED: frozenset({AGENT}),
    ops.COVER_START: BOSS,
    ops.COVER_STOP: BOSS,
    ops.RESET_TRIAL: BOSS,
}

# server "agent:<host>": op -> the caller kinds allowed
AGENT_OPS: dict[str, frozenset[str]] = {
    ops.STATUS: frozenset({CONTROLLER, RUNNER}),
    ops.PREPARE: frozenset({CONTROLLER}),
    ops.START: frozenset({CONTROLLER}),
    ops.RELEASE: frozenset({CONTROLLER}),
    ops.ABORT: frozenset({CONTROLLER}),
    ops.FORGET: frozenset({CONTROLLER}),
    ops.RESET_PEAK: frozenset({RUNNER}),
    ops.SHUTDOWN: frozenset({RUNNER}),
    ops.VM_RESET: frozenset({RUNNER}),
    ops.COVER_START: frozenset({CONTROLLER}),  # its peers' keys come from the controller only
    ops.COVER_STOP: frozenset({CONTROLLER}),
}

# ops whose "host" field must be the caller's own host when the caller is an agent or a monitor
HOST_BOUND = frozenset({ops.REGISTER, ops.ANOMALY, ops.MIGRATION_DONE, ops.MIGRATION_FAILED})

# request fields only the test identity may send (and only to a controller started with the
# test switch, see controllers.migrations)
TEST_ONLY_FIELDS: dict[str, frozenset[str]] = {ops.MIGRATE: frozenset({"faults"})}


class PolicyError(PermissionError):
    """The caller may not do this; the message says who may."""


def table_for(server: str) -> dict[str, frozenset[str]]:
    kind, _ = split_identity(server)
    if kind == CONTROLLER:
        return CONTROLLER_OPS
    if kind == AGENT:
        return AGENT_OPS
    raise PolicyError(f"no policy for server {server!r}")


def check(server: str, op: str, caller: str, msg: dict[str, Any]) -> None:
    """Raise ``PolicyError`` unless ``caller`` may send ``msg`` (op ``op``) to ``server``."""
    table = table_for(server)
    kind, host = split_identity(caller)
    allowed = table.get(op)
    if allowed is None:
        raise PolicyError(f"unknown op {op!r} for {server}")
    if kind not in allowed:
        raise PolicyError(f"{caller} may not call {op!r} on {server} "
                          f"(only {', '.join(sorted(allowed))})")
    if kind in (AGENT, MONITOR):
        if host is None:
            raise PolicyError(f"identity {caller!r} names no host")
        if op in HOST_BOUND and msg.get("host") != host:
            raise PolicyError(f"{caller} may call {op!r} only for its own host {host}, "
                              f"not {msg.get('host')!r}")
    for name in TEST_ONLY_FIELDS.get(op, ()):
        if name in msg and caller != TEST:
            raise PolicyError(f"{op!r} with {name!r} is a test-only request; refused from "
                              f"{caller}")
