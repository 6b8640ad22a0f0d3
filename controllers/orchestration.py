"""Drives the roles of one migration over the agents' management sockets (Alg 2, the role part).

Pure Python, no os-ken: ``controllers.migrations`` builds a ``MigrationPlan`` (roles, ports,
vouched public keys), installs the relay's flow rules, then calls ``run_migration(plan, router)``
in a worker thread and forwards every ``migration_done`` / ``migration_failed`` message the
controller receives to the ``ReportRouter``, which hands it to the right ``Orchestration``
(``experiments.loopback`` does the same with its stand-in controller). The orchestration waits on
those reports; a watchdog asks each role's ``status`` every ``watchdog_s`` only to catch what no
report tells (a report lost, an agent that died), so without any reports a migration still ends,
just later.

Order: prepare destination, leader, intermediates (receivers listen before anyone sends), then
the source; ``start`` the source; wait for the destination's ``migration_done``; ``release`` the
source's copy. On any failure, timeout or failed prepare: ``abort`` every role — the source
resumes its VM — and return ``status="aborted"`` with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hosts.protocol import mgmt, ops
from hosts.protocol.plan import Endpoint, MigrationPlan

log = logging.getLogger("controllers.orchestration")

Caller = Callable[..., dict[str, Any]]
Outcome = tuple[str, str, dict[str, Any]]  # ("done" | "failed", why, the done stats)

WATCHDOG_S = 2.0  # how often the roles' status is polled when no report decides the outcome


@dataclass
class MigrationResult:
    """What one migration did, for the runner's metrics."""

    migration: str
    mode: str
    status: str = "pending"  # "done" | "aborted"
    reason: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    migration_time_s: float = 0.0
    downtime_s: float | None = None
    vm_bytes: int = 0
    sha256: str = ""
    bytes_per_hop: dict[str, int] = field(default_factory=dict)
    rounds: int | None = None
    failed_intermediates: list[str] = field(default_factory=list)
    source_vm_running: bool | None = None
    goodput_mbps: float | None = None
    role_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Orchestration:
    """One migration's driver; ``on_report`` may be called from any thread."""

    def __init__(
        self,
        plan: MigrationPlan,
        timeout_s: float = 600.0,
        watchdog_s: float = WATCHDOG_S,
        caller: Caller = mgmt.call,
    ) -> None:
        self.plan = plan
        self.timeout_s = timeout_s
        self.watchdog_s = watchdog_s
        self.call = caller
        self.reports: list[dict[str, Any]] = []
        self._reported = threading.Condition()
        self.result = MigrationResult(plan.migration, plan.mode)
        self._prepared: list[tuple[str, Endpoint]] = []
        self._silent: dict[str, int] = {}

    # --- reports from the controller ----------------------------------------------------------
    def on_report(self, msg: dict[str, Any]) -> bool:
        """Take a ``migration_done``/``migration_failed`` message; False if not ours."""
        if msg.get("migration") != self.plan.migration:
            return False
        if msg.get("op") not in ops.REPORTS:
            return False
        with self._reported:
            self.reports.append(dict(msg))
            self._reported.notify_all()
        return True

    def _log(self, event: str, **kv: Any) -> None:
        extra = " ".join(f"{k}={v}" for k, v in kv.items())
        log.info("migration=%s role=controller event=%s %s", self.plan.migration, event, extra)

    # --- the run -----------------------------------------------------------------------------
    def run(self) -> MigrationResult:
        res = self.result
        res.start_time = time.time()
        plan = self.plan
        if not plan.decided_at:  # no decision time from the controller: it is now
            plan.decided_at = res.start_time
        try:
            for role, ep in plan.roles():
                if role == "source":
                    continue
                self._prepare(role, ep)
            self._prepare("source", plan.source)
        except mgmt.MgmtError as exc:
            return self._abort(f"prepare failed: {exc}")
        t0 = time.time()
        try:
            self.call(plan.source.agent, {"op": ops.START, "migration": plan.migration})
        except mgmt.MgmtError as exc:
            return self._abort(f"start failed: {exc}")
        self._log("started", mode=plan.mode, source=plan.source.host)
        outcome = self._wait(time.monotonic() + self.timeout_s)
        if outcome is None:
            return self._abort(f"timed out after {self.timeout_s:.0f}s")
        kind, why, done = outcome
        if kind == "failed":
            # a late failure (e.g. the last ack lost) while the destination already runs the
            # VM: the migration happened; aborting would run the VM twice
            st = self._destination_status()
            if st.get("state") != "done":
                return self._abort(why)
            self._log("late_failure_ignored", why=repr(why))
            done = st.get("stats", {})
        res.end_time = time.time()
        res.migration_time_s = res.end_time - t0
        res.sha256 = str(done.get("sha256", ""))
        res.downtime_s = float(done["downtime_s"]) if done.get("downtime_s") is not None else None
        try:
            self.call(plan.source.agent, {"op": ops.RELEASE, "migration": plan.migration})
        except mgmt.MgmtError as exc:  # the VM runs at the destination; say so, keep going
            self._log("release_failed", why=exc)
            res.reason = f"source copy not released: {exc}"
        self._collect()
        for role, ep in self._prepared:
            if role != "source":
                try:
                    self.call(ep.agent, {"op": ops.RELEASE, "migration": plan.migration},
                              check=False)
                except mgmt.MgmtError:  # a dead intermediate: nothing to release
                    pass
        res.status = "done"
        if res.migration_time_s > 0:
            res.goodput_mbps = res.vm_bytes * 8 / res.migration_time_s / 1e6
        self._log("done", time_s=f"{res.migration_time_s:.3f}", downtime_s=res.downtime_s)
        return res

    def _prepare(self, role: str, ep: Endpoint) -> None:
        view = self.plan.view_for(role, ep).to_dict()
        reply = self.call(ep.agent, {"op": "prepare", "view": view}, timeout=60.0)
        self._prepared.append((role, ep))
        port = int(reply.get("port") or 0)
        if port and not ep.port:
            ep.port = port
            if role == "destination" and not self.plan.dest_port:
                self.plan.dest_port = port

    def _wait(self, deadline: float) -> Outcome | None:
        """Wait for the roles' reports to decide; every ``watchdog_s`` without a decision, ask
        the roles themselves. None once ``deadline`` (monotonic) has passed undecided."""
        seen = 0
        watchdog = time.monotonic() + self.watchdog_s
        while True:
            with self._reported:
                if len(self.reports) == seen:  # nothing new: sleep until a report or a timer
                    self._reported.wait(max(0.0, min(deadline, watchdog) - time.monotonic()))
                reports = list(self.reports)
            if len(reports) > seen:
                seen = len(reports)
                outcome = self._from_reports(reports)
                if outcome is not None:
                    return outcome
            if time.monotonic() >= watchdog:
                outcome = self._watchdog()
                if outcome is not None:
                    return outcome
                watchdog = time.monotonic() + self.watchdog_s
            if time.monotonic() > deadline:
                return None

    def _from_reports(self, reports: list[dict[str, Any]]) -> Outcome | None:
        for msg in reports:
            # an intermediate giving up is not fatal: the source re-sends through the others
            if msg["op"] == ops.MIGRATION_FAILED and msg.get("role") != "intermediate":
                why = f"{msg.get('host')} ({msg.get('role')}): {msg.get('reason')}"
                return "failed", self._diagnose(why), msg
        for msg in reports:
            if msg["op"] == ops.MIGRATION_DONE:
                return "done", "", msg
        return None

    def _watchdog(self) -> Outcome | None:
        """No report has decided (yet): ask the roles themselves."""
        for role, ep in self._prepared:
            try:
                st = self.call(
                    ep.agent, {"op": ops.STATUS, "migration": self.plan.migration}, timeout=5.0
                )
            except mgmt.MgmtError as exc:
                # three silent polls in a row: that agent is gone (one may be a busy moment)
                n = self._silent[ep.host] = self._silent.get(ep.host, 0) + 1
                if role != "intermediate" and n >= 3:
                    return "failed", f"{ep.host} ({role}) unreachable: {exc}", {}
                continue
            self._silent[ep.host] = 0
            if st.get("state") == "failed" and role != "intermediate":
                return "failed", self._diagnose(f"{ep.host} ({role}): {st.get('reason')}"), {}
            if role == "destination" and st.get("state") == "done":
                return "done", "", st.get("stats", {})
        return None

    def _destination_status(self) -> dict[str, Any]:
        ep = self.plan.destination
        if ("destination", ep) not in self._prepared:
            return {}
        try:
            return self.call(
                ep.agent, {"op": ops.STATUS, "migration": self.plan.migration}, timeout=5.0
            )
        except mgmt.MgmtError:
            return {}

    def _diagnose(self, why: str) -> str:
        """Put roles whose agent no longer answers in front of the first reported reason."""
        dead = []
        for role, ep in self._prepared:
            if role == "intermediate":
                continue
            try:
                self.call(ep.agent, {"op": ops.STATUS}, timeout=2.0)
            except mgmt.MgmtError:
                dead.append(f"{ep.host} ({role}) is unreachable")
        return "; ".join([*dead, why])

    def _abort(self, reason: str) -> MigrationResult:
        res = self.result
        self._log("abort", reason=repr(reason))
        for role, ep in reversed(self._prepared):
            try:
                self.call(
                    ep.agent,
                    {"op": ops.ABORT, "migration": self.plan.migration, "reason": reason},
                    timeout=5.0,
                )
            except mgmt.MgmtError as exc:
                self._log("abort_unreachable", host=ep.host, role=role, why=repr(str(exc)))
        res.status = "aborted"
        res.reason = reason
        res.end_time = time.time()
        res.migration_time_s = res.end_time - res.start_time
        self._collect()
        try:
            vm = self.call(self.plan.source.agent, {"op": ops.STATUS}, timeout=5.0).get("vm")
            res.source_vm_running = bool(vm and vm["running"] and not vm["paused"])
        except mgmt.MgmtError:
            res.source_vm_running = None
        return res

    def _collect(self) -> None:
        """Gather each role's stats: bytes per hop, rounds, failed intermediates."""
        res, plan = self.result, self.plan
        names = {
            "source": plan.source.host,
            "destination": plan.destination.host,
            "leader": plan.leader.host if plan.leader else "leader",
            "upstream": (plan.leader or plan.source).host,
            "intermediates": "intermediates",
        }
        for role, ep in self._prepared:
            try:
                st = self.call(ep.agent, {"op": ops.STATUS, "migration": plan.migration},
                               timeout=5.0)
            except mgmt.MgmtError:
                if role == "intermediate":
                    res.failed_intermediates.append(ep.host)
                continue
            stats = st.get("stats", {})
            res.role_stats[f"{role}:{ep.host}"] = {"state": st.get("state"), **stats}
            for peer, n in (stats.get("bytes_sent") or {}).items():
                res.bytes_per_hop[f"{ep.host}->{names.get(peer, peer)}"] = int(n)
            if role == "source":
                res.vm_bytes = int(stats.get("vm_bytes", 0))
                res.rounds = stats.get("rounds")
                for h in stats.get("failed_intermediates", []):
                    if h not in res.failed_intermediates:
                        res.failed_intermediates.append(h)
            if role == "intermediate" and st.get("state") == "failed":
                if ep.host not in res.failed_intermediates:
                    res.failed_intermediates.append(ep.host)


class ReportRouter:
    """Forwards controller reports to the orchestration of the right migration."""

    def __init__(self) -> None:
        self._by_id: dict[str, Orchestration] = {}
        self._lock = threading.Lock()

    def add(self, orch: Orchestration) -> None:
        with self._lock:
            self._by_id[orch.plan.migration] = orch

    def remove(self, migration: str) -> None:
        with self._lock:
            self._by_id.pop(migration, None)

    def on_report(self, msg: dict[str, Any]) -> bool:
        with self._lock:
            orch = self._by_id.get(str(msg.get("migration")))
        return orch.on_report(msg) if orch else False


def run_migration(
    plan: MigrationPlan,
    router: ReportRouter | None = None,
    timeout_s: float = 600.0,
    watchdog_s: float = WATCHDOG_S,
    caller: Caller = mgmt.call,
) -> MigrationResult:
    """Run one migration to its end (blocking); register with ``router`` for reports if given.

    ``caller`` sends a management request to an agent (``hosts.protocol.mgmt.call``)."""
    orch = Orchestration(plan, timeout_s=timeout_s, watchdog_s=watchdog_s, caller=caller)
    if router is not None:
        router.add(orch)
    try:
        return orch.run()
    finally:
        if router is not None:
            router.remove(plan.migration)
