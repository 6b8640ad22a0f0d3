"""Alg 2, the controller's part of a migration: pick the roles, install the relay, drive it.

``Migrations`` serves the migration operations (``operations()``; op names from
``hosts.protocol.ops``), which the controller app puts into its op table:

- ``migrate``: ``{source, mode: stealth|direct, n, k, chunk_policy, precopy, hide_destination,
  seed, destination?, leader?, intermediates?, timeout_s?}`` — picks the roles among the
  registered agents at random (seeded) unless named, gives every receiver a TCP port from
  ``RELAY_PORTS``, installs the relay's rules (a fresh equal-cost path per hop, the destination
  optionally behind a virtual address), then runs ``controllers.orchestration`` in a thread and
  removes the rules when it ends, done or aborted. Replies at once with the plan's public part.
  A ``faults`` field (test fault injection) is refused unless the controller was started with
  the test switch (``test_faults``) — and the policy table lets only the ``test`` identity send
  it (``hosts.protocol.policy.TEST_ONLY_FIELDS``); a normal run has no path to the fault hooks.
  With ``chunk_policy.kind == "cover"`` the plan's transport is ``cover``: every hop runs
  inside the agents' cover mux (``controllers.cover`` starts it; a migration before
  ``cover_start`` is refused), the receivers' ports are virtual ports of the mux, drawn the same
  way, and no relay rule is installed (nothing on the wire to rewrite; the record's ``paths``
  list the logical hops with no switches, ``cookie`` and ``virtual_ip`` are null).
- ``anomaly``: ``{host, kind?, score?}`` from the monitor (Alg 1) → a ``migrate`` of that host's
  VM with the defaults set by ``defaults`` (only the keys of ``DEFAULT_KEYS``).
- ``migration_status``: ``{migration}`` → state (running | done | aborted) and the result.
- ``migrations_active``: read-only, for the runner and the monitors (Alg 1) — the migrations
  installing or running, each with its hosts, their addresses (and the virtual one) and its relay
  ports, so a monitor can tell a migration's own traffic from its VM's. A monitor is told only
  of the migrations its own host plays a role in, without the role names.
- ``migration_done`` / ``migration_failed``: the roles' reports, forwarded to the orchestration.

When the destination runs the VM (before the source's copy is released) the agent book moves
the VM there and ``route_vm(host)`` is called: the app routes a VM address of its own to the
destination (``controllers.rules.vm_rules``), so the address answers from the new host.

It is given what it needs, not the app: the agent book (``controllers.agents``: who registered,
where each VM runs), the relay book (``controllers.relays``: installs and removes the rules) and
the management call the orchestration sends to the agents with. No OpenFlow here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from controllers.agents import AgentBook
from controllers.cover import CoverOps
from controllers.orchestration import Caller, MigrationResult, ReportRouter, run_migration
from controllers.relays import RelayBook
from hosts.protocol import mgmt, ops
from hosts.protocol.plan import DEFAULTS, Endpoint, MigrationPlan

log = logging.getLogger("stealth_mtd.migrations")

RELAY_PORTS = range(8090, 8100)  # next to the tenants' service ports (8080-8089)
# what a `migrate` request leaves out; the protocol's own defaults are hosts.protocol DEFAULTS
MIGRATE_DEFAULTS: dict[str, Any] = {"mode": "stealth", "n": 3, "k": 2, "hide_destination": True,
                                    "chunk_policy": {"kind": "profile", "sniff_s": 3.0},
                                    "timeout_s": 600.0}
# what the `defaults` op may set
DEFAULT_KEYS = frozenset(MIGRATE_DEFAULTS) | {"precopy", "stall_timeout_s"}


def suspect_relays(result: dict[str, Any], host_of_key: dict[str, str]) -> list[dict[str, Any]]:
    """The intermediates an abnormal migration points at, from its roles' stats (pure).

    A relay that *tampers*: the leader's AES-GCM rejected a chunk it forwarded (``forged_from``,
    its key); the source re-sent through the others. A relay that *drops* (or delays past the
    stall timeout): a role's stall timeout ended the migration (not the overall timeout: slow is
    not guilty), the leader still waiting for chunk ``i`` (its ``chunks`` count), and the
    source's ``unacked_via`` says which relay carried chunk ``i``. Each suspect: host and why.
    """
    stats = result.get("role_stats") or {}
    src = next((v for k, v in stats.items() if k.startswith("source:")), {})
    lead = next((v for k, v in stats.items() if k.startswith("leader:")), {})
    out: list[dict[str, Any]] = []
    for key in dict.fromkeys(lead.get("forged_from") or []):
        out.append({"host": host_of_key.get(key, key[:16]), "why": "forged a chunk "
                    "(the leader's AES-GCM check failed)"})
    reason = str(result.get("reason", ""))
    stuck = str(lead.get("chunks", 0))
    # a stall, not slowness: the migration aborted before the orchestration's overall timeout
    # (slow is not guilty) while the leader was alive to report where it waits. Not read from
    # which role's failure report came first: when the leader's stall timeout fires, the
    # destination's "stream ended" report may arrive before the leader's own.
    stalled = bool(lead) and not reason.startswith("timed out after")
    if result.get("status") == "aborted" and stalled and src.get("unacked_via"):
        for host in src["unacked_via"].get(stuck, []):
            if not any(s["host"] == host for s in out):
                out.append({"host": host, "why": f"chunk {stuck} it carried never reached "
                            "the leader (dropped or held back)"})
    return out


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Migrations:
    """The migration operations of one controller."""

    def __init__(self, agents: AgentBook, relays: RelayBook, seed: int | None = None,
                 caller: Caller = mgmt.call, test_faults: bool = False,
                 route_vm: Callable[[str], None] = lambda host: None,
                 cover: CoverOps | None = None) -> None:
        self.agents = agents
        self.route_vm = route_vm
        self.cover = cover
        self.test_faults = test_faults
        self.relays = relays
        self.call = caller
        self.rng = random.Random(seed)
        self.router = ReportRouter()
        self.records: dict[str, dict[str, Any]] = {}
        self.defaults = dict(MIGRATE_DEFAULTS)
        self.count = 0
        self.lock = threading.Lock()

    def operations(self) -> dict[str, Handler]:
        """The management operations served here, by op name."""
        return {ops.MIGRATE: self.op_migrate, ops.ANOMALY: self.op_anomaly,
                ops.MIGRATION_STATUS: self.op_status, ops.DEFAULTS: self.op_defaults,
                ops.MIGRATIONS_ACTIVE: self.op_active,
                ops.MIGRATION_DONE: self.op_report, ops.MIGRATION_FAILED: self.op_report}

    # -- role choice (pure) -------------------------------------------------------------------
    @staticmethod
    def choose_roles(agents: dict[str, dict[str, Any]], source: str, mode: str, n: int,
                     rng: random.Random, destination: str | None = None,
                     leader: str | None = None,
                     intermediates: list[str] | None = None) -> dict[str, Any]:
        """Pick destination (a host without a VM), leader and n intermediates, all distinct."""
        if source not in agents:
            raise ValueError(f"source {source} has no registered agent")
        if not agents[source].get("vm"):
            raise ValueError(f"source {source} runs no VM")
        taken = {source}
        free = sorted(h for h in agents if h not in taken)
        if destination is None:
            spare = [h for h in free if not agents[h].get("vm")]
            if not spare:
                raise ValueError("no registered host without a VM to be the destination")
            destination = rng.choice(spare)
        elif destination not in agents or agents[destination].get("vm"):
            raise ValueError(f"destination {destination} is not a registered host without a VM")
        taken.add(destination)
        roles: dict[str, Any] = {"destination": destination, "leader": None,
                                 "intermediates": []}
        if mode == "direct":
            return roles
        pool = [h for h in free if h not in taken]
        if leader is None:
            if not pool:
                raise ValueError("no host left to lead")
            leader = rng.choice(pool)
        if leader in taken or leader not in agents:
            raise ValueError(f"leader {leader} is not a free registered host")
        taken.add(leader)
        pool = [h for h in pool if h not in taken]
        if intermediates is None:
            if len(pool) < n:
                raise ValueError(f"need {n} intermediates, only {len(pool)} hosts are free")
            intermediates = rng.sample(pool, n)
        if len(set(intermediates)) != len(intermediates) or set(intermediates) & taken:
            raise ValueError("intermediates must be distinct and not play another role")
        roles.update(leader=leader, intermediates=list(intermediates))
        return roles

    @staticmethod
    def relay_hops(source: str, roles: dict[str, Any], rng: random.Random,
                   hide: bool) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Each receiver's TCP port (drawn from ``RELAY_PORTS``) and the relay's hops: source →
        each intermediate → leader → destination (hidden if asked), or source → destination."""
        leader, inter, dst = roles["leader"], roles["intermediates"], roles["destination"]
        ports = {h: rng.choice(RELAY_PORTS) for h in [dst, *([leader] if leader else []), *inter]}
        if not leader:
            return ports, [{"from": source, "to": dst, "port": ports[dst], "hidden": hide}]
        hops = [{"from": source, "to": h, "port": ports[h]} for h in inter]
        hops += [{"from": h, "to": leader, "port": ports[leader]} for h in inter]
        hops.append({"from": leader, "to": dst, "port": ports[dst], "hidden": hide})
        return ports, hops

    # -- operations ---------------------------------------------------------------------------
    def endpoint(self, host: str, port: int) -> Endpoint:
        a = self.agents.lookup(host)
        return Endpoint(host=host, ip=a["ip"], agent=a["agent"], port=port, pubkey=a["pubkey"])

    def op_defaults(self, msg: dict[str, Any]) -> dict[str, Any]:
        new = {k: v for k, v in msg.items() if k != "op"}
        unknown = sorted(set(new) - DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"defaults: unknown keys {unknown}; allowed: {sorted(DEFAULT_KEYS)}")
        self.defaults.update(new)
        return {"defaults": self.defaults}

    def op_anomaly(self, msg: dict[str, Any]) -> dict[str, Any]:
        host = str(msg["host"])
        log.info("event=anomaly host=%s kind=%s score=%s", host, msg.get("kind"),
                 msg.get("score"))
        for rec in self.records.values():
            if rec["state"] == "running" and host in rec["hosts"]:
                return {"migration": rec["migration"], "already": True}
        req = {**self.defaults, "source": host, "trigger": msg}
        if msg.get("seed") is not None:
            req["seed"] = msg["seed"]
        return self.op_migrate(req)

    def op_migrate(self, msg: dict[str, Any]) -> dict[str, Any]:
        if "faults" in msg and not self.test_faults:
            log.error("event=faults_refused source=%s (test-only; this controller runs without "
                      "the test switch)", str(msg.get("source"))[:64])
            raise ValueError("migrate: 'faults' is test-only fault injection; this controller "
                             "was not started with the test switch")
        source = str(msg["source"])
        mode = str(msg.get("mode", self.defaults["mode"]))
        n = int(msg.get("n", self.defaults["n"]))
        k = int(msg.get("k", self.defaults["k"]))
        seed = int(msg["seed"]) if msg.get("seed") is not None else self.rng.randrange(1 << 30)
        rng = random.Random(seed)
        decided_at = time.time()
        policy = dict(msg.get("chunk_policy") or self.defaults["chunk_policy"])
        transport = "cover" if policy.get("kind") == "cover" else "tcp"
        if transport == "cover" and not (self.cover is not None and self.cover.active):
            raise ValueError("migrate: the cover chunk policy needs the agents' cover traffic; "
                             "send cover_start first")
        with self.lock:
            busy = {h for r in self.records.values() if r["state"] == "running"
                    for h in r["hosts"]}
            agents = {h: a for h, a in self.agents.snapshot().items()
                      if h not in busy or h == source}
            if source in busy:
                raise ValueError(f"{source} is already migrating")
            roles = self.choose_roles(agents, source, mode, n, rng, msg.get("destination"),
                                      msg.get("leader"), msg.get("intermediates"))
            self.count += 1
            mid = str(msg.get("migration") or f"m{self.count}-{seed % 100000}")
            if mid in self.records:
                raise ValueError(f"migration {mid} exists")
            hosts = [source, roles["destination"]] + ([roles["leader"]] if roles["leader"]
                                                      else []) + roles["intermediates"]
            self.records[mid] = {"migration": mid, "state": "installing", "hosts": hosts}
        try:
            hide = bool(msg.get("hide_destination", self.defaults["hide_destination"]))
            ports, hops = self.relay_hops(source, roles, rng, hide)
            dst = self.endpoint(roles["destination"], ports[roles["destination"]])
            inter = [self.endpoint(h, ports[h]) for h in roles["intermediates"]]
            lead = self.endpoint(roles["leader"], ports[roles["leader"]]) if roles["leader"] \
                else None
            if transport == "cover":  # inside the cover mux: no rule, nothing to rewrite
                relay = {"paths": [{"from": h["from"], "to": h["to"], "port": h["port"],
                                    "switches": [], "virtual_ip": None} for h in hops],
                         "cookie": None, "install_s": 0.0}
            else:
                relay = self.relays.install(mid, hops, seed)
            vip = next((p["virtual_ip"] for p in relay["paths"] if p["virtual_ip"]), None)
            if policy.get("kind") == "profile" and not (
                    policy.get("profile") or policy.get("pcap") or policy.get("sniff_iface")):
                # measure the source's own normal traffic (Mininet names it <host>-eth0)
                policy["sniff_iface"] = f"{source}-eth0"
            plan = MigrationPlan(
                migration=mid, mode=mode, source=self.endpoint(source, 0), destination=dst,
                intermediates=inter, leader=lead, n=len(inter), k=k if mode == "stealth" else 0,
                dest_address=vip or dst.ip, dest_port=dst.port,
                chunk_policy=policy,
                precopy=dict(msg.get("precopy") or {}), seed=seed,
                stall_timeout_s=float(msg.get("stall_timeout_s", DEFAULTS.stall_timeout_s)),
                faults=dict(msg.get("faults") or {}),
                max_image_bytes=int(agents[source].get("vm_bytes") or 0),  # as it registered
                vm_ip=agents[source].get("vm_ip") or "", vm_mac=agents[source].get("vm_mac") or "",
                transport=transport, decided_at=decided_at)
        except Exception:
            with self.lock:
                self.records.pop(mid, None)
            if mid in self.relays:
                self.relays.remove(mid)
            raise
        rec = self.records[mid]
        rec.update(state="running", mode=mode, transport=transport, decided_at=decided_at,
                   roles=roles, paths=relay["paths"],
                   virtual_ip=vip, cookie=relay["cookie"], seed=seed, requested=time.time(),
                   install_s=relay["install_s"], result=None, trigger=msg.get("trigger"))
        timeout = float(msg.get("timeout_s", self.defaults["timeout_s"]))
        threading.Thread(target=self._run, args=(plan, timeout), name=f"migration-{mid}",
                         daemon=True).start()
        log.info("event=migration_started migration=%s mode=%s source=%s roles=%s", mid, mode,
                 source, roles)
        return {k: rec[k] for k in ("migration", "mode", "transport", "roles", "paths",
                                    "virtual_ip", "cookie", "seed", "install_s")}

    def _run(self, plan: MigrationPlan, timeout: float) -> None:
        mid = plan.migration
        try:
            result = run_migration(plan, self.router, timeout_s=timeout, caller=self.call,
                                   on_done=self._moved)
        except Exception as exc:  # the thread must always end with a record
            log.exception("migration=%s crashed", mid)
            result = MigrationResult(mid, plan.mode, status="aborted", reason=f"crash: {exc}")
        try:  # a cover-transport migration installed none; make sure none is left either way
            removed = (self.relays.remove(mid) if mid in self.relays else
                       {"migration": mid, "removed": True, "installed": False})
        except Exception as exc:
            removed = {"removed": False, "error": str(exc)}
            log.error("migration=%s event=relay_remove_failed error=%s", mid, exc)
        rec = self.records[mid]
        out = result.to_dict()
        out["suspect_relays"] = suspect_relays(
            out, {e.pubkey: e.host for e in plan.intermediates})
        for s in out["suspect_relays"]:
            log.warning("event=suspect_relay migration=%s host=%s why=%r", mid, s["host"],
                        s["why"])
        rec.update(state=result.status, result=out, relay_removed=removed)
        log.info("event=migration_%s migration=%s reason=%r", result.status, mid, result.reason)

    def _moved(self, plan: MigrationPlan) -> None:
        """The destination runs the VM: move it in the book, then route its own address there
        (before the source releases its copy, so the address always has a host)."""
        self.agents.move_vm(plan.source.host, plan.destination.host)
        self.route_vm(plan.destination.host)

    def forget_finished(self) -> int:
        """A reused testbed between trials: drop every finished migration's record and count
        from 0 again (as a fresh controller; refused while one runs); returns how many went."""
        with self.lock:
            if any(r["state"] in ("installing", "running") for r in self.records.values()):
                raise ValueError("a migration is still under way")
            n = len(self.records)
            self.records.clear()
            self.count = 0
        return n

    def op_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        mid = str(msg["migration"])
        if mid not in self.records:
            raise ValueError(f"no migration {mid}")
        return dict(self.records[mid])

    def op_active(self, msg: dict[str, Any], only_host: str | None = None) -> dict[str, Any]:
        """The migrations in progress: hosts, addresses and relay ports (read-only); with
        ``only_host`` (a monitor asks) just those that host is in, without role names."""
        out = []
        for rec in list(self.records.values()):
            if rec["state"] not in ("installing", "running"):
                continue
            if only_host is not None and only_host not in rec["hosts"]:
                continue
            hosts = list(rec["hosts"])
            ips = [self.agents.lookup(h)["ip"] for h in hosts if h in self.agents]
            if rec.get("virtual_ip"):
                ips.append(rec["virtual_ip"])
            if rec.get("transport") == "cover" and self.cover is not None and \
                    self.cover.settings is not None:  # its bytes ride in the cover records
                ports = [self.cover.settings.port]
            else:
                ports = sorted({int(p["port"]) for p in rec.get("paths") or []}) or \
                    list(RELAY_PORTS)
            if only_host is not None:
                out.append({"state": rec["state"], "hosts": [only_host], "ips": ips,
                            "ports": ports})
                continue
            out.append({"migration": rec["migration"], "state": rec["state"], "hosts": hosts,
                        "roles": rec.get("roles"), "ips": ips, "ports": ports})
        return {"migrations": out}

    def op_report(self, msg: dict[str, Any]) -> dict[str, Any]:
        taken = self.router.on_report(msg)
        log.info("event=report op=%s migration=%s host=%s taken=%s", msg["op"],
                 msg.get("migration"), msg.get("host"), taken)
        return {"taken": taken}
