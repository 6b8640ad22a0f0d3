"""Virtual destination addresses: the pool a hidden destination's address comes from.

A hidden destination is reached through a virtual IPv4 and MAC address that only its edge switch
rewrites (``controllers.rules.relay_rules``). ``VirtualPool`` hands out each address to one
migration at a time and takes it back when that migration's relay is removed
(``controllers.relays.RelayBook``). Pure bookkeeping, no OpenFlow, no I/O.

Address ``i`` of the pool (1 ≤ i ≤ 65534) is ``10.255.(i >> 8).(i & 255)`` with MAC
``02:ff:00:00:(i >> 8):(i & 255)`` (locally administered), so the IP and the MAC of one address
always belong together and no address is the network or broadcast address of 10.0.0.0/8.
Addresses are given round-robin (the next free one after the last one given), so an address
just freed is not handed out again at once.
"""

from __future__ import annotations

from dataclasses import dataclass

POOL_SIZE = 65534  # 10.255.0.1 .. 10.255.255.254


@dataclass(frozen=True)
class VirtualAddress:
    """The address the destination hides behind; only its edge switch rewrites it."""

    ip: str
    mac: str


class PoolExhausted(RuntimeError):
    """Every virtual address is in use by a migration whose relay is still installed."""


def address(index: int) -> VirtualAddress:
    """The pool's ``index``-th address (1-based)."""
    if not 1 <= index <= POOL_SIZE:
        raise ValueError(f"virtual address index {index} outside 1..{POOL_SIZE}")
    hi, lo = index >> 8, index & 255
    return VirtualAddress(f"10.255.{hi}.{lo}", f"02:ff:00:00:{hi:02x}:{lo:02x}")


class VirtualPool:
    """Virtual addresses in use, by IP; ``allocate`` never gives an address that is in use."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        if not 1 <= size <= POOL_SIZE:
            raise ValueError(f"pool size must be within 1..{POOL_SIZE}, got {size}")
        self.size = size
        self._last = 0  # index of the address given last
        self._in_use: dict[str, VirtualAddress] = {}

    def allocate(self) -> VirtualAddress:
        """The next free address after the last one given; ``PoolExhausted`` if none is free."""
        if len(self._in_use) >= self.size:
            raise PoolExhausted(f"all {self.size} virtual addresses are in use: remove a "
                                "finished migration's relay first")
        index = self._last
        while True:
            index = index % self.size + 1
            v = address(index)
            if v.ip not in self._in_use:
                self._last = index
                self._in_use[v.ip] = v
                return v

    def free(self, v: VirtualAddress) -> None:
        """Give ``v`` back (a no-op if it is not in use)."""
        self._in_use.pop(v.ip, None)

    def lookup(self, ip: str) -> VirtualAddress | None:
        """The address in use with this IP, if any (for answering ARP)."""
        return self._in_use.get(ip)

    def __len__(self) -> int:
        return len(self._in_use)
