"""A migration through the controller's parts without a switch or an agent: ``Migrations`` given
an agent book, a relay book pushing into a fake flow table and a fake management call; the
orchestration ends on the roles' reports and polls their status only as a watchdog."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from controllers import paths as P
from controllers import rules as R
from controllers.agents import AgentBook
from controllers.migrations import Migrations
from controllers.orchestration import Orchestration, ReportRouter, run_migration
from controllers.relays import RelayBook, RequestError
from hosts.protocol import ops
from hosts.protocol.plan import Endpoint, MigrationPlan
from tests.unit.fakeoftable import FakeFabric
from topologies.base import describe
from topologies.fattree import FatTreeTopo


class FakeAgents:
    """Answers the orchestration's management calls as agents would; records every call."""

    def __init__(self, report: Any = None, report_after_s: float = 0.0) -> None:
        self.calls: list[tuple[float, str, str]] = []  # (time, agent socket, op)
        self.report = report  # called with the migration id once the source is started
        self.report_after_s = report_after_s
        self.destination_done = False
        self.messages: list[dict[str, Any]] = []

    def __call__(self, path: str, msg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.calls.append((time.monotonic(), path, msg["op"]))
        self.messages.append(msg)
        if msg["op"] == ops.START and self.report:
            threading.Timer(self.report_after_s, self.report, [msg["migration"]]).start()
        if msg["op"] == ops.STATUS:
            done = self.destination_done and path.endswith("h-dst.sock")
            return {"state": "done" if done else "running",
                    "stats": {"sha256": "ab", "downtime_s": 0.2, "vm_bytes": 1 << 20}}
        return {}

    def ops_between(self, t0: float, t1: float) -> list[str]:
        return [op for t, _, op in self.calls if t0 <= t < t1]


def _books() -> tuple[AgentBook, RelayBook, FakeFabric]:
    topo = describe(FatTreeTopo(4))
    g = P.build_graph(topo)
    fab = FakeFabric(topo)
    for sw in topo["switches"]:
        fab.switches[sw].apply(R.delete_all() + R.base_rules(g, topo, sw))
    agents = AgentBook(h["name"] for h in topo["hosts"])
    for h in topo["hosts"]:
        agents.register({"op": ops.REGISTER, "host": h["name"], "ip": h["ip"],
                         "agent": f"/run/{h['name']}.sock", "pubkey": h["name"] * 4,
                         "vm": "vm1" if h["name"] == "h1" else None,
                         "vm_bytes": 4 << 20 if h["name"] == "h1" else None})
    relays = RelayBook(g, topo, lambda by_switch, **kw: fab.apply(by_switch), seed=1)
    return agents, relays, fab


def _finish(m: Migrations, mid: str) -> None:
    (t,) = [t for t in threading.enumerate() if t.name == f"migration-{mid}"]
    t.join(30)
    assert not t.is_alive(), f"migration {mid} did not end within 30 s"


def test_migrate_installs_reports_end_it_and_the_books_follow() -> None:
    agents, relays, fab = _books()
    started: dict[str, float] = {}
    m: Migrations

    def report(mid: str) -> None:
        started["report"] = time.monotonic()
        rec = m.records[mid]
        m.op_report({"op": ops.MIGRATION_DONE, "migration": mid, "role": "destination",
                     "host": rec["roles"]["destination"], "sha256": "ab", "downtime_s": 0.2})

    fake = FakeAgents(report, report_after_s=0.7)
    m = Migrations(agents, relays, seed=1, caller=fake)
    table = m.operations()
    assert set(table) == {ops.MIGRATE, ops.ANOMALY, ops.MIGRATION_STATUS, ops.DEFAULTS,
                          ops.MIGRATIONS_ACTIVE, ops.MIGRATION_DONE, ops.MIGRATION_FAILED}
    r = table[ops.MIGRATE]({"op": ops.MIGRATE, "source": "h1", "mode": "stealth", "n": 3,
                            "k": 2, "seed": 21, "hide_destination": True})
    mid, dest = r["migration"], r["roles"]["destination"]
    assert r["virtual_ip"] and relays.virtual(r["virtual_ip"]) is not None
    assert any(r["cookie"] in s.cookies() for s in fab.switches.values())
    t_start = next(t for t, _, op in fake.calls if op == ops.START)
    _finish(m, mid)
    rec = m.op_status({"migration": mid})
    assert rec["state"] == "done", rec["result"]["reason"]
    assert rec["result"]["sha256"] == "ab" and rec["relay_removed"]["removed"]
    # the report ended it: no status poll before it (the watchdog's period is longer)
    assert ops.STATUS not in fake.ops_between(t_start, started["report"])
    assert not any(r["cookie"] in s.cookies() for s in fab.switches.values())
    assert relays.virtual(r["virtual_ip"]) is None and len(relays.pool) == 0
    assert agents.vms() == {"vm1": dest}
    assert m.op_active({})["migrations"] == []


def test_the_destination_is_vouched_the_size_the_source_registered() -> None:
    agents, relays, _ = _books()
    fake = FakeAgents()
    m = Migrations(agents, relays, seed=1, caller=fake)
    r = m.operations()[ops.MIGRATE]({"op": ops.MIGRATE, "source": "h1", "mode": "direct",
                                     "seed": 3, "timeout_s": 0.5})
    _finish(m, r["migration"])  # no role reports and no destination done: the timeout ends it
    assert m.op_status({"migration": r["migration"]})["state"] == "aborted"
    vouched = [x["view"].get("max_image_bytes") for x in fake.messages if x["op"] == "prepare"
               and x["view"]["role"] == "destination"]
    assert vouched == [4 << 20], fake.messages


def test_a_registered_size_must_be_a_byte_count_of_a_named_vm() -> None:
    book = AgentBook(["h1"])
    base = {"op": ops.REGISTER, "host": "h1", "ip": "10.0.0.1", "agent": "/a.sock",
            "pubkey": "k" * 8}
    for bad in ({"vm": "vm1", "vm_bytes": -1}, {"vm": "vm1", "vm_bytes": "4 MiB"},
                {"vm": "vm1", "vm_bytes": True}, {"vm": None, "vm_bytes": 4096}):
        with pytest.raises(ValueError, match="vm_bytes"):
            book.register({**base, **bad})
    book.register({**base, "vm": "vm1", "vm_bytes": 4096})


def test_a_failed_install_leaves_no_record_and_no_relay() -> None:
    agents, relays, fab = _books()

    def refuse(by_switch: dict[str, list], *, connected_only: bool = False) -> None:
        if not connected_only:
            raise RequestError("switch e1_1 did not confirm within 10 s")

    relays.push = refuse
    m = Migrations(agents, relays, seed=1, caller=FakeAgents())
    with pytest.raises(RequestError, match="did not confirm"):
        m.op_migrate({"source": "h1", "mode": "direct", "seed": 3})
    assert m.records == {} and relays.names() == [] and len(relays.pool) == 0


def _plan() -> MigrationPlan:
    def ep(h: str) -> Endpoint:
        return Endpoint(host=h, ip="10.0.0.1", agent=f"/run/{h}.sock", port=9000, pubkey="k")

    return MigrationPlan(migration="m1", mode="direct", source=ep("h-src"),
                         destination=ep("h-dst"))


def test_without_reports_the_watchdog_ends_the_migration() -> None:
    fake = FakeAgents()
    fake.destination_done = True
    t0 = time.monotonic()
    res = run_migration(_plan(), timeout_s=30, watchdog_s=0.3, caller=fake)
    assert res.ok and res.sha256 == "ab"
    assert time.monotonic() - t0 >= 0.3  # it waited one watchdog period, not a busy loop


def test_an_intermediate_giving_up_is_no_outcome_the_destination_done_is() -> None:
    fake = FakeAgents()
    orch = Orchestration(_plan(), timeout_s=30, watchdog_s=60, caller=fake)
    router = ReportRouter()
    router.add(orch)

    def reports(mid: str) -> None:
        base = {"migration": mid}
        assert router.on_report({**base, "op": ops.MIGRATION_FAILED, "role": "intermediate",
                                 "host": "h3", "reason": "leader unreachable"})
        time.sleep(0.2)
        assert router.on_report({**base, "op": ops.MIGRATION_DONE, "role": "destination",
                                 "host": "h-dst", "sha256": "cd", "downtime_s": 0.1})

    fake.report = reports
    t0 = time.monotonic()
    res = orch.run()
    assert res.ok and res.sha256 == "cd" and time.monotonic() - t0 < 10
    assert not router.on_report({"migration": "other", "op": ops.MIGRATION_DONE})


def test_no_outcome_by_the_deadline_aborts() -> None:
    fake = FakeAgents()
    res = run_migration(_plan(), timeout_s=0.5, watchdog_s=0.2, caller=fake)
    assert res.status == "aborted" and res.reason.startswith("timed out after")
    assert ops.ABORT in [op for _, _, op in fake.calls]
