"""The controller's side of the monitor: ``migrations_active`` (what a monitor discounts) and
``suspect_relays`` (naming the relay of an abnormal migration); pure, no root."""

from __future__ import annotations

from controllers import paths as P
from controllers.agents import AgentBook
from controllers.migrations import RELAY_PORTS, Migrations, suspect_relays
from controllers.relays import RelayBook
from hosts.protocol import ops
from topologies.base import describe
from topologies.linear import LinearTopo


def _migrations() -> Migrations:
    topo = describe(LinearTopo(4, 2))
    agents = AgentBook(h["name"] for h in topo["hosts"])
    for i in range(1, 8):
        agents.register({"op": ops.REGISTER, "host": f"h{i}", "ip": f"10.0.0.{i}",
                         "agent": f"/run/h{i}.sock", "pubkey": f"key{i}"})
    relays = RelayBook(P.build_graph(topo), topo, push=lambda by_switch, **kw: None)
    m = Migrations(agents, relays, seed=1)
    m.records = {
        "m1": {"migration": "m1", "state": "running", "hosts": ["h1", "h6", "h5", "h2"],
               "roles": {"destination": "h6"}, "virtual_ip": "10.255.0.1",
               "paths": [{"port": 8093}, {"port": 8091}, {"port": 8093}]},
        "m0": {"migration": "m0", "state": "done", "hosts": ["h3", "h4"], "paths": []},
        "m2": {"migration": "m2", "state": "installing", "hosts": ["h7", "h3"]},
    }
    return m


def test_migrations_active_lists_hosts_addresses_and_ports() -> None:
    m = _migrations()
    assert ops.MIGRATIONS_ACTIVE in m.operations()
    got = {x["migration"]: x for x in m.op_active({"op": "migrations_active"})["migrations"]}
    assert set(got) == {"m1", "m2"}  # m0 is over
    assert got["m1"]["ports"] == [8091, 8093] and "10.255.0.1" in got["m1"]["ips"]
    assert got["m1"]["ips"][:2] == ["10.0.0.1", "10.0.0.6"]
    assert got["m2"]["ports"] == list(RELAY_PORTS)  # no ports chosen yet: the whole range


def _result(status: str, leader: dict, source: dict, reason: str = "") -> dict:
    return {"status": status, "reason": reason,
            "role_stats": {"leader:h5": leader, "source:h1": source,
                           "intermediate:h2": {"chunks": 9}}}


def test_suspects_name_the_forger_and_the_dropper() -> None:
    keys = {"aa" * 32: "h2", "bb" * 32: "h3"}
    forged = _result("done", {"chunks": 40, "forged_from": ["bb" * 32, "bb" * 32]}, {})
    assert [s["host"] for s in suspect_relays(forged, keys)] == ["h3"]
    why = "h5 (leader): no progress for 3s while waiting for chunk 7"
    dropped = _result("aborted", {"chunks": 7}, {"unacked_via": {"7": ["h2"], "8": ["h3"]}},
                      why)
    (s,) = suspect_relays(dropped, keys)
    assert s["host"] == "h2" and "chunk 7" in s["why"]
    # the destination's report of the cut stream may come first: the same relay is named
    cut = {**dropped, "reason": "h6 (destination): stream ended before the trailer (truncated)"}
    assert [x["host"] for x in suspect_relays(cut, keys)] == ["h2"]
    # the same state after the orchestration's overall timeout: slow is not guilty
    slow = {**dropped, "reason": "timed out after 150s"}
    assert suspect_relays(slow, keys) == []
    held = _result("aborted", {"chunks": 0}, {"unacked_via": {"0": ["h3"]}},
                   "h5 (leader): no progress for 2s while waiting for 2 key shares and the "
                   "manifest")
    assert [s["host"] for s in suspect_relays(held, keys)] == ["h3"]


def test_no_suspects_in_an_honest_or_unexplained_outcome() -> None:
    assert suspect_relays(_result("done", {"chunks": 40}, {"unacked_via": {}}), {}) == []
    # the leader's own failure with nothing pending at a relay names no relay
    assert suspect_relays(_result("aborted", {"chunks": 3}, {"unacked_via": {"9": ["h2"]}}),
                          {}) == []
    assert suspect_relays({"status": "aborted"}, {}) == []
