"""Fault injection for the tests: a role that dies, drops, forges, replays or slows on purpose.

A plan's ``faults`` entry for a host (``MigrationPlan.faults``, e.g. ``{"h3":
{"die_after_chunks": 5}}``) reaches that host's role as its view's ``fault`` dict; the role turns
it into a ``Faults`` with ``faults_for`` and calls it at a few points of the protocol. With no
fault configured that is ``NO_FAULTS``, whose hooks do nothing. The faults a plan may ask for:

- ``die_on_share``: an intermediate exits as its key share arrives;
- ``drop_share``: an intermediate keeps its share from the leader;
- ``die_after_chunks: N``: an intermediate (after forwarding its Nth chunk) or the leader (after
  opening N chunks) exits;
- ``die_after_done``: the leader exits once the destination confirmed, before its last ack;
- ``delay_chunk_s: S``, ``drop_chunk: N``, ``forge_chunk: N``, ``replay_chunk: N``: an
  intermediate sleeps S before each chunk, or drops, flips a bit of or sends twice its Nth chunk;
- ``record_key: PATH``: the source writes the migration key and its shares to PATH, so a test
  can look for them on the wire.

"Exits" is ``os._exit(17)``: the process dies for real, as a crashed host would.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any


class Faults:
    """The fault hooks the roles call; this base injects nothing (it is ``NO_FAULTS``)."""

    def on_share(self) -> bool:
        """An intermediate received its key share: False keeps it from the leader."""
        return True

    def on_chunk(self, body: bytes, nth: int, index: int) -> tuple[bytes, int]:
        """An intermediate is about to forward its ``nth`` chunk (stream ``index``): the body
        to send and how many copies of it (0: dropped)."""
        return body, 1

    def after_chunk(self, n: int, copies: int = 1) -> None:
        """A relay passed on its ``n``-th chunk, in ``copies`` copies."""

    def after_done(self) -> None:
        """The leader has the destination's confirmation, the source does not have it yet."""

    def on_key(self, key: bytes, shares: list[bytes]) -> None:
        """The source made the migration key and split it into ``shares``."""


NO_FAULTS = Faults()


class InjectedFaults(Faults):
    """The faults one host's ``fault`` dict asks for; ``log`` is the role's ``Role.log``."""

    def __init__(self, spec: dict[str, Any], log: Callable[..., None]) -> None:
        self.spec = spec
        self.log = log

    def _die_at(self, counter: str, n: int) -> None:
        limit = self.spec.get(counter)
        if limit is not None and n >= int(limit):
            self.log("fault_injected_exit", fault=counter, at=n)
            logging.shutdown()
            os._exit(17)

    def on_share(self) -> bool:
        self._die_at("die_on_share", 1)
        if self.spec.get("drop_share"):
            self.log("fault_dropped_share")
            return False
        return True

    def on_chunk(self, body: bytes, nth: int, index: int) -> tuple[bytes, int]:
        f = self.spec
        if f.get("delay_chunk_s"):
            time.sleep(float(f["delay_chunk_s"]))
        if f.get("drop_chunk") == nth:
            self.log("fault_dropped_chunk", index=index)
            return body, 0
        if f.get("forge_chunk") == nth:
            body = body[:-1] + bytes([body[-1] ^ 1])
            self.log("fault_forged_chunk", index=index)
        if f.get("replay_chunk") == nth:
            self.log("fault_replayed_chunk", index=index)
            return body, 2
        return body, 1

    def after_chunk(self, n: int, copies: int = 1) -> None:
        if copies:
            self._die_at("die_after_chunks", n)

    def after_done(self) -> None:
        self._die_at("die_after_done", 1)

    def on_key(self, key: bytes, shares: list[bytes]) -> None:
        path = self.spec.get("record_key")
        if path:
            with open(path, "w") as f:
                json.dump({"key": key.hex(), "shares": [s.hex() for s in shares]}, f)


def faults_for(spec: dict[str, Any], log: Callable[..., None]) -> Faults:
    """The faults of one role: ``NO_FAULTS`` for an empty ``spec``."""
    return InjectedFaults(spec, log) if spec else NO_FAULTS
