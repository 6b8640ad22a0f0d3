"""The agent book: the role agents that registered with the controller, and where each VM runs.

Every tenant host's agent sends ``register`` (``hosts.protocol.ops.REGISTER``) with its address,
agent socket, public key and the VM it runs, if any. The controller app records it here; the
migration operations (``controllers.migrations``) read the book to pick roles and vouch for keys,
and move a VM's entry when its migration is done. Pure bookkeeping, no I/O.

Registration is pinned: only the tenant hosts the runner listed (the topology's non-attacker
hosts, with their addresses) may register, each with the address the runner gave it (the
management plane has already checked that the request came from that host's own agent), and a
host's first public key and socket stay: a second ``register`` naming another key or socket is
refused, so no one can swap the key the controller vouches for to the other roles.
A VM may have an address of its own (``vm_ip``/``vm_mac``, ``hosts.vnic``): it is taken at the
first registration of the VM (an IPv4 address that is no tenant's and no other VM's) and moves
with the VM (``move_vm``); ``vm_addresses`` says which host each such address is routed to.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterable
from typing import Any

from controllers.paths import UnknownHost

FIELDS = ("host", "ip", "agent", "pubkey", "vm", "vm_bytes", "vm_ip", "vm_mac")
VM_KEYS = ("vm", "vm_bytes", "vm_ip", "vm_mac")  # what moves with a VM
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class AgentBook:
    """Registered agents by host name; only the given tenant hosts may register.

    ``hosts`` is host -> its address (the runner's list), or just the host names (then any
    address is taken)."""

    def __init__(self, hosts: Iterable[str] | dict[str, str]) -> None:
        self.ips: dict[str, str | None] = (dict(hosts) if isinstance(hosts, dict)
                                           else dict.fromkeys(hosts))
        self.hosts = frozenset(self.ips)
        self._agents: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def register(self, msg: dict[str, Any]) -> str:
        """Record a ``register`` request (its ``FIELDS``); returns the host's name. A host not
        in the list, another address than the listed one, or a second registration with another
        key or socket is a ``ValueError`` (``UnknownHost`` for the first)."""
        host = msg["host"]
        if not isinstance(host, str) or host not in self.hosts:
            raise UnknownHost(str(host)[:64])
        rec = {k: msg.get(k) for k in FIELDS}
        for k in ("ip", "agent", "pubkey"):
            if not isinstance(rec[k], str) or not rec[k] or len(rec[k]) > 4096:
                raise ValueError(f"register: field {k!r} must be a non-empty string")
        if rec["vm"] is not None and not isinstance(rec["vm"], str):
            raise ValueError("register: field 'vm' must be a string or null")
        size = rec["vm_bytes"]  # the image size the controller vouches for to the destination
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0
                                 or rec["vm"] is None):
            raise ValueError("register: field 'vm_bytes' must be a byte count >= 0 of the VM "
                             f"named in 'vm', or null; got {size!r}")
        if self.ips[host] is not None and rec["ip"] != self.ips[host]:
            raise ValueError(f"register: {host} has address {self.ips[host]}, not {rec['ip']}")
        self._check_vm_address(rec)
        with self._lock:
            old = self._agents.get(host)
            if old is not None:
                for k in ("pubkey", "agent"):
                    if old[k] != rec[k]:
                        raise ValueError(f"register: {host} is registered with another {k}; "
                                         "a registration is never replaced")
                for key in VM_KEYS:  # where a VM runs is the controller's book, not the agent's
                    rec[key] = old.get(key)
            elif rec["vm_ip"] is not None:
                for h, a in self._agents.items():
                    if rec["vm_ip"] in (a["ip"], a.get("vm_ip")):
                        raise ValueError(f"register: address {rec['vm_ip']} is {h}'s")
            self._agents[host] = rec
        return host

    def _check_vm_address(self, rec: dict[str, Any]) -> None:
        ip, mac = rec["vm_ip"], rec["vm_mac"]
        if ip is None and mac is None:
            return
        if rec["vm"] is None or not isinstance(ip, str) or not isinstance(mac, str):
            raise ValueError("register: 'vm_ip' and 'vm_mac' come as two strings, with a 'vm'")
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise ValueError(f"register: vm_ip {ip[:64]!r} is not an IPv4 address") from None
        if not addr.is_private or addr.is_loopback or ip in self.ips.values() or \
                ip == rec["ip"]:
            raise ValueError(f"register: vm_ip {ip} is not a free tenant-plan address")
        if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
            raise ValueError(f"register: vm_mac {mac[:64]!r} is not a unicast MAC")

    def vm_addresses(self) -> dict[str, str]:
        """Each VM address of its own -> the host that runs its VM now."""
        with self._lock:
            return {a["vm_ip"]: h for h, a in self._agents.items() if a.get("vm_ip")}

    def host_of_socket(self, path: str) -> str:
        """The registered host whose agent serves the socket at ``path``."""
        with self._lock:
            for h, a in self._agents.items():
                if a["agent"] == path:
                    return h
        raise ValueError(f"no registered agent serves {path}")

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

    def place_vm(self, vm: str, host: str) -> str:
        """A reused testbed between trials: VM ``vm`` runs at registered ``host`` again (its
        entry moves there from where it is); returns the host it was at."""
        if host not in self._agents:
            raise ValueError(f"place_vm: {host} has no registered agent")
        at = self.vms().get(vm)
        if at is None:
            raise ValueError(f"place_vm: no VM {vm!r} in the book")
        if at != host:
            self.move_vm(at, host)
        return at

    def move_vm(self, source: str, destination: str) -> None:
        """After a done migration: the source's VM now runs at the destination."""
        with self._lock:
            for key in VM_KEYS:  # the VM, the size its source registered, its own address
                self._agents[destination][key] = self._agents.get(source, {}).get(key)
                self._agents[source][key] = None
