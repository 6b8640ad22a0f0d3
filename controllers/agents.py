"""The agent book: the role agents that registered with the controller, and where each VM runs.

Every host's agent sends ``register`` (``hosts.protocol.ops.REGISTER``) with its address, agent
socket, public key and the VM it runs, if any. The controller app records it here; the migration
operations (``controllers.migrations``) read the book to pick roles and vouch for keys, and
move a VM's entry when its migration is done. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from controllers.paths import UnknownHost


class AgentBook:
    """Registered agents by host name; only hosts of the topology may register."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self.hosts = frozenset(hosts)
        self._agents: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def register(self, msg: dict[str, Any]) -> str:
        """Record a ``register`` request (every field but ``op``); returns the host's name."""
        host = msg["host"]
        if host not in self.hosts:
            raise UnknownHost(host)
        with self._lock:
            self._agents[host] = {k: v for k, v in msg.items() if k != "op"}
        return host

    def __contains__(self, host: object) -> bool:
        return host in self._agents

    def lookup(self, host: str) -> dict[str, Any]:
        """A registered agent's record; ``ValueError`` if that host has not registered."""
        try:
            return self._agents[host]
        except KeyError:
            raise ValueError(f"{host} has no registered agent") from None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy of every record, by host (what role choice reads)."""
        with self._lock:
            return {h: dict(a) for h, a in self._agents.items()}

    def names(self) -> list[str]:
        return sorted(self._agents)

    def vms(self) -> dict[str, str]:
        """Where each VM runs: VM name -> host."""
        with self._lock:
            return {a["vm"]: h for h, a in self._agents.items() if a.get("vm")}

    def move_vm(self, source: str, destination: str) -> None:
        """After a done migration: the source's VM now runs at the destination."""
        with self._lock:
            for key in ("vm", "vm_bytes"):  # the VM and the size its source registered
                self._agents[destination][key] = self._agents.get(source, {}).get(key)
                self._agents[source][key] = None
