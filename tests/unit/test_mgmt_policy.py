"""The caller policy (``hosts.protocol.policy``): every op × every identity against a table
written out here independently, the host binding of agents and monitors, the test-only fields;
and the controller's side: pinned registration, no faults without the test switch, a monitor
told only of its own host's migrations."""

from __future__ import annotations

import pytest

from controllers import paths as P
from controllers.agents import AgentBook
from controllers.migrations import Migrations
from controllers.relays import RelayBook
from hosts.protocol import ops
from hosts.protocol.policy import AGENT_OPS, CONTROLLER_OPS, PolicyError, check
from topologies.base import describe
from topologies.linear import LinearTopo

IDENTITIES = ["runner", "test", "controller", "agent:h1", "monitor:h1", "agent:x1", "nobody",
              "agent"]
R, T, C, A, M = "runner", "test", "controller", "agent:h1", "monitor:h1"
# who may call what, written out by hand (own host h1 for the host-bound ops)
EXPECTED_CONTROLLER = {
    ops.STATUS: {R, T}, ops.REGISTER: {A, "agent:x1"}, ops.RELAY: {R, T},
    ops.RELAY_REMOVE: {R, T}, ops.FLOWS: {R, T}, ops.DEFAULTS: {R, T},
    ops.ANOMALY: {R, T, M}, ops.MIGRATE: {R, T}, ops.MIGRATION_STATUS: {R, T},
    ops.MIGRATIONS_ACTIVE: {R, T, M}, ops.MIGRATION_DONE: {A, "agent:x1"},
    ops.MIGRATION_FAILED: {A, "agent:x1"}, ops.COVER_START: {R, T}, ops.COVER_STOP: {R, T},
    ops.RESET_TRIAL: {R, T},
}
EXPECTED_AGENT = {
    ops.STATUS: {C, R}, ops.PREPARE: {C}, ops.START: {C}, ops.RELEASE: {C}, ops.ABORT: {C},
    ops.FORGET: {C}, ops.RESET_PEAK: {R}, ops.SHUTDOWN: {R}, ops.COVER_START: {C},
    ops.COVER_STOP: {C}, ops.VM_RESET: {R},
}


def _allowed(server: str, op: str, caller: str, msg: dict) -> bool:
    try:
        check(server, op, caller, msg)
        return True
    except PolicyError:
        return False


def _own(caller: str) -> dict:
    host = caller.partition(":")[2] or "h1"
    return {"host": host}


@pytest.mark.parametrize("server,expected", [("controller", EXPECTED_CONTROLLER),
                                             ("agent:h1", EXPECTED_AGENT)])
def test_every_op_times_every_identity(server, expected):
    assert set(expected) == set(CONTROLLER_OPS if server == "controller" else AGENT_OPS)
    rows = []
    for op, who in expected.items():
        got = {i for i in IDENTITIES if _allowed(server, op, i, {"op": op, **_own(i)})}
        rows.append(f"{server:10} {op:18} {sorted(got)}")
        assert got == who, (op, got)
    print("\n".join(rows))
    # agent:x1 passes the *table* as an agent kind; its requests are still refused: the
    # controller knows no key for it (only the tenants' identities) and its book refuses x1
    assert not _allowed(server, "no_such_op", "runner", {"op": "no_such_op"})


def test_agents_and_monitors_act_only_for_their_own_host():
    for op in (ops.REGISTER, ops.MIGRATION_DONE, ops.MIGRATION_FAILED):
        assert _allowed("controller", op, "agent:h1", {"host": "h1"})
        with pytest.raises(PolicyError, match="own host h1"):
            check("controller", op, "agent:h1", {"host": "h2"})
        with pytest.raises(PolicyError):
            check("controller", op, "agent:h1", {})
    assert _allowed("controller", ops.ANOMALY, "monitor:h1", {"host": "h1"})
    with pytest.raises(PolicyError, match="own host"):  # a forged alarm for a victim's VM
        check("controller", ops.ANOMALY, "monitor:h1", {"host": "h2"})
    assert _allowed("controller", ops.ANOMALY, "runner", {"host": "h2"})  # the scenario trigger


def test_faults_are_for_the_test_identity_only():
    msg = {"op": ops.MIGRATE, "source": "h1", "faults": {"h1": {"record_key": "/tmp/k"}}}
    for who in ("runner", "controller", "monitor:h1", "agent:h1"):
        with pytest.raises(PolicyError):
            check("controller", ops.MIGRATE, who, msg)
    check("controller", ops.MIGRATE, "test", msg)


# -- the controller's side ------------------------------------------------------------------------
def _topo():
    return describe(LinearTopo(4, 2, attackers="s1"))


def _reg(host: str, ip: str, key: str = "k1", sock: str | None = None) -> dict:
    return {"op": ops.REGISTER, "host": host, "ip": ip, "agent": sock or f"/run/{host}.sock",
            "pubkey": key, "vm": None}


def test_registration_is_pinned_to_the_runners_tenants_and_first_key():
    topo = _topo()
    tenants = {h["name"]: h["ip"] for h in topo["hosts"] if not h["attacker"]}
    x1 = next(h for h in topo["hosts"] if h["attacker"])
    book = AgentBook(tenants)
    with pytest.raises(P.UnknownHost):
        book.register(_reg(x1["name"], x1["ip"]))  # an attacker host never registers
    with pytest.raises(ValueError, match="has address"):
        book.register(_reg("h1", "10.9.9.9"))
    assert book.register(_reg("h1", tenants["h1"], "k1")) == "h1"
    assert book.register(_reg("h1", tenants["h1"], "k1")) == "h1"  # the same again is fine
    with pytest.raises(ValueError, match="another pubkey"):
        book.register(_reg("h1", tenants["h1"], "attacker-key"))
    with pytest.raises(ValueError, match="another agent"):
        book.register(_reg("h1", tenants["h1"], "k1", sock="/tmp/evil.sock"))
    assert book.lookup("h1")["pubkey"] == "k1"
    assert book.host_of_socket("/run/h1.sock") == "h1"
    with pytest.raises(ValueError):
        book.register({**_reg("h2", tenants["h2"]), "pubkey": 7})


def _migrations(test_faults: bool = False) -> Migrations:
    topo = _topo()
    book = AgentBook({h["name"]: h["ip"] for h in topo["hosts"] if not h["attacker"]})
    for h in topo["hosts"]:
        if not h["attacker"]:
            book.register(_reg(h["name"], h["ip"]))
    relays = RelayBook(P.build_graph(topo), topo, push=lambda by_switch, **kw: None)
    return Migrations(book, relays, seed=1, test_faults=test_faults)


def test_migrate_with_faults_is_refused_without_the_test_switch():
    m = _migrations()
    with pytest.raises(ValueError, match="test-only"):
        m.op_migrate({"op": ops.MIGRATE, "source": "h1", "faults": {}})
    assert m.records == {}
    with pytest.raises(ValueError, match="unknown keys \\['faults'\\]"):
        m.op_defaults({"op": ops.DEFAULTS, "faults": {"h1": {"record_key": "/tmp/k"}}})
    assert "faults" not in m.defaults
    assert m.op_defaults({"op": ops.DEFAULTS, "n": 2})["defaults"]["n"] == 2


def test_a_monitor_hears_only_of_its_own_hosts_migrations():
    m = _migrations()
    m.records = {
        "m1": {"migration": "m1", "state": "running", "hosts": ["h1", "h6", "h5"],
               "roles": {"destination": "h6"}, "paths": [{"port": 8093}]},
        "m2": {"migration": "m2", "state": "running", "hosts": ["h2", "h3"], "paths": []},
    }
    assert len(m.op_active({})["migrations"]) == 2  # the runner sees all
    mine = m.op_active({}, only_host="h5")["migrations"]
    assert mine == [{"state": "running", "hosts": ["h5"], "ports": [8093],
                     "ips": ["10.0.0.1", "10.0.0.6", "10.0.0.5"]}]
    assert m.op_active({}, only_host="h4")["migrations"] == []
