"""The controller's part of the cover traffic: tell every registered agent its cover config.

``cover_start`` (``hosts.protocol.ops.COVER_START``, from the runner or a test) carries the run's
``CoverSettings``; ``CoverOps`` turns them into one ``CoverConfig`` per registered tenant agent —
its peers are every other registered agent (host, address, the static key it registered, which
the controller vouches for), its seed is derived from the settings' seed and its host name
(``agent_seed``), so the schedule of every VM is fixed by the run's seed before any migration —
sends each agent its own (in parallel, as ``controller``) and replies once all have started.
``cover_stop`` stops them all. ``active`` says whether cover runs: a migration over the cover
transport needs it (``controllers.migrations``). Pure bookkeeping plus the given management call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from controllers.agents import AgentBook
from hosts.protocol import mgmt, ops
from hosts.protocol.cover import CoverConfig, CoverPeer, CoverSettings

log = logging.getLogger("stealth_mtd.cover")

AGENT_TIMEOUT_S = 30.0


class CoverRequestError(ValueError):
    """A cover request that could not be carried out (the reply names the agents)."""


def agent_seed(seed: int, host: str) -> int:
    """The cover seed of ``host``'s agent: a hash of the run's cover seed and the host name."""
    digest = hashlib.sha256(f"stealth-mtd cover|{seed}|{host}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # < 2**62


def cover_configs(agents: dict[str, dict[str, Any]], settings: CoverSettings
                  ) -> dict[str, CoverConfig]:
    """Each registered agent's config: the run's settings as they are (the same for every VM),
    its own seed, every other agent as a peer (pure)."""
    hosts = sorted(agents)
    out = {}
    for h in hosts:
        peers = tuple(CoverPeer(p, str(agents[p]["ip"]), str(agents[p]["pubkey"]))
                      for p in hosts if p != h)
        out[h] = CoverConfig(settings, h, str(agents[h]["ip"]), peers,
                             seed=agent_seed(settings.seed, h))
    return out


class CoverOps:
    """The cover operations of one controller."""

    def __init__(self, agents: AgentBook, caller: Any = mgmt.call) -> None:
        self.agents = agents
        self.call = caller
        self.settings: CoverSettings | None = None
        self.hosts: list[str] = []
        self.lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.settings is not None

    def operations(self) -> dict[str, Any]:
        return {ops.COVER_START: self.op_start, ops.COVER_STOP: self.op_stop}

    def _each(self, msgs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
        """Send each host its message at once; (replies, errors) by host."""
        replies: dict[str, Any] = {}
        errors: dict[str, str] = {}

        def one(host: str, msg: dict[str, Any]) -> None:
            try:
                replies[host] = self.call(self.agents.lookup(host)["agent"], msg,
                                          timeout=AGENT_TIMEOUT_S)
            except (mgmt.MgmtError, ValueError, OSError) as exc:
                errors[host] = str(exc)

        threads = [threading.Thread(target=one, args=(h, m), daemon=True)
                   for h, m in msgs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(AGENT_TIMEOUT_S + 5)
        for h in msgs:
            if h not in replies and h not in errors:
                errors[h] = "no reply"
        return replies, errors

    def op_start(self, msg: dict[str, Any]) -> dict[str, Any]:
        """``{settings: CoverSettings.to_dict()}`` → every registered agent runs its cover."""
        if "settings" not in msg:
            raise CoverRequestError("cover_start needs settings (CoverSettings.to_dict())")
        settings = CoverSettings.from_dict(msg["settings"])
        with self.lock:
            agents = self.agents.snapshot()
            if len(agents) < 2:
                raise CoverRequestError(f"cover needs at least 2 registered agents, "
                                        f"got {sorted(agents)}")
            configs = cover_configs(agents, settings)
            replies, errors = self._each({h: {"op": ops.COVER_START, "config": c.to_dict()}
                                          for h, c in configs.items()})
            if errors:
                self._each({h: {"op": ops.COVER_STOP} for h in replies})  # all or none
                self.settings, self.hosts = None, []
                raise CoverRequestError(f"cover did not start on {sorted(errors)}: {errors}")
            self.settings, self.hosts = settings, sorted(configs)
        log.info("event=cover_started hosts=%d rate_bytes_per_s=%s port=%d", len(configs),
                 settings.rate_bytes_per_s, settings.port)
        return {"started": sorted(configs),
                "seeds": {h: c.seed for h, c in configs.items()}}

    def op_stop(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stop the cover of every agent it was started on (and of any registered since)."""
        with self.lock:
            hosts = sorted(set(self.hosts) | set(self.agents.names()))
            replies, errors = self._each({h: {"op": ops.COVER_STOP} for h in hosts})
            self.settings, self.hosts = None, []
        log.info("event=cover_stopped hosts=%d errors=%d", len(replies), len(errors))
        return {"stopped": sorted(replies), "errors": errors,
                "stats": {h: r.get("stats") for h, r in replies.items()}}
