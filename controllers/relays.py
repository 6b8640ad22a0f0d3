"""The relay book: which migration has which relay installed, and its virtual addresses.

``RelayBook.install`` turns a migration's hops into rules with the pure functions of
``controllers.rules`` (a fresh equal-cost path per hop, a virtual address from
``controllers.addresses.VirtualPool`` for a hidden destination) and hands them to a ``Push``
callback, which the controller app implements by sending them to the switches and waiting for
their barrier replies; ``remove`` deletes them by cookie the same way and frees the addresses.
Used by the app's ``relay``/``relay_remove`` operations and by ``controllers.migrations``; the
book itself talks to no switch, so tests push into a fake flow table instead.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import networkx as nx

from controllers import paths as P
from controllers import rules as R
from controllers.addresses import VirtualAddress, VirtualPool

log = logging.getLogger("stealth_mtd.controller")


class RequestError(ValueError):
    """A management request that cannot be carried out; the reply says why."""


class Push(Protocol):
    """Send each named switch its messages and wait until every one confirms.

    Raises ``RequestError`` when a switch is not connected (with ``connected_only``, such a
    switch is skipped instead) or does not confirm in time.
    """

    def __call__(self, by_switch: dict[str, list], *, connected_only: bool = False) -> None: ...


@dataclass
class Relay:
    """One migration's installed relay."""

    migration: str
    cookie: int
    hops: list[R.RelayHop]
    switches: list[str]


class RelayBook:
    """The installed relays, by migration id; safe to call from several request threads."""

    def __init__(self, g: nx.Graph, topo: P.Topology, push: Push, seed: int | None = None,
                 pool: VirtualPool | None = None) -> None:
        self.g = g
        self.topo = topo
        self.push = push
        self.pool = pool if pool is not None else VirtualPool()
        self.rng = random.Random(seed)  # paths of relays installed without a seed of their own
        self.relays: dict[str, Relay] = {}
        self.seq = 0
        self.lock = threading.Lock()

    def __contains__(self, mid: object) -> bool:
        return mid in self.relays

    def names(self) -> list[str]:
        return sorted(self.relays)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Each relay's cookie and switches."""
        return {m: {"cookie": r.cookie, "switches": r.switches} for m, r in self.relays.items()}

    def virtual(self, ip: str) -> VirtualAddress | None:
        """The virtual address in use with this IP (the app answers ARP for it)."""
        return self.pool.lookup(ip)

    def install(self, mid: str, hop_specs: list[dict[str, Any]], seed: int | None = None,
                idle_timeout: int = 120, hard_timeout: int = 1800) -> dict[str, Any]:
        """Install a migration's relay: ``hop_specs`` are ``{from, to, port, hidden?}``.

        Returns the reply of the ``relay`` operation: cookie, each hop's path and virtual
        address, the switches, the rule count and the time until the switches confirmed.
        """
        if not isinstance(hop_specs, list) or not hop_specs:
            raise RequestError("'hops' must be a non-empty list of {from, to, port}")
        t0 = time.monotonic()
        with self.lock:
            if mid in self.relays:
                raise RequestError(f"migration {mid} already has a relay")
            self.seq += 1
            cookie = R.relay_cookie(self.seq)
            hops, hidden = [], []
            for spec in hop_specs:
                port = int(spec["port"])
                if not 0 < port < 65536:
                    raise RequestError(f"bad TCP port {port}")
                hops.append(R.RelayHop(spec["from"], spec["to"], port))
                hidden.append(bool(spec.get("hidden")))
            rng = random.Random(seed) if seed is not None else self.rng
            R.choose_paths(self.g, self.topo, hops, rng)
            for hop, hide in zip(hops, hidden, strict=True):
                if hide:
                    hop.virtual = self.pool.allocate()
            try:
                by_switch = R.relay_rules(self.g, self.topo, hops, cookie, idle_timeout,
                                          hard_timeout)
            except Exception:
                self._free(hops)
                raise
            self.relays[mid] = Relay(mid, cookie, hops, sorted(by_switch))
        try:
            self.push(by_switch)
        except RequestError:
            self.remove(mid)
            raise
        dt = time.monotonic() - t0
        rules = sum(map(len, by_switch.values()))
        log.info("event=relay_installed migration=%s cookie=%#x switches=%d rules=%d t=%.4f",
                 mid, cookie, len(by_switch), rules, dt)
        return {"migration": mid, "cookie": cookie, "paths": [h.to_dict() for h in hops],
                "switches": sorted(by_switch), "rules": rules, "install_s": dt}

    def restart_counters(self) -> None:
        """A reused testbed between trials: cookies and virtual addresses are given from the
        first again, as by a fresh controller (refused while a relay is installed)."""
        with self.lock:
            if self.relays:
                raise RequestError(f"relays still installed: {sorted(self.relays)}")
            self.seq = 0
            self.pool = VirtualPool(self.pool.size)

    def remove(self, mid: str) -> dict[str, Any]:
        """Delete a migration's rules from the switches still connected; free its addresses."""
        t0 = time.monotonic()
        with self.lock:
            relay = self.relays.pop(mid, None)
        if relay is None:
            raise RequestError(f"no relay for migration {mid}")
        try:
            self.push({sw: [R.delete_cookie(relay.cookie)] for sw in relay.switches},
                      connected_only=True)
        finally:
            with self.lock:
                self._free(relay.hops)
        dt = time.monotonic() - t0
        log.info("event=relay_removed migration=%s cookie=%#x t=%.4f", mid, relay.cookie, dt)
        return {"migration": mid, "removed": True, "remove_s": dt}

    def _free(self, hops: list[R.RelayHop]) -> None:
        for hop in hops:
            if hop.virtual:
                self.pool.free(hop.virtual)
