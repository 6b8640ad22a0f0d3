"""A reused testbed's reset: the pure check of what is left (experiments.reuse), the agent's
``vm_reset`` on a real VM, the controller book's ``place_vm``, the option and its key."""

from __future__ import annotations

import copy
import socket

import pytest

from controllers.agents import AgentBook
from experiments import reuse, timings
from experiments.scenario import load
from hosts.agent import Agent
from hosts.roles.base import RoleError
from topologies.base import mac_for, vm_ip

VMIP = vm_ip(1)
RELAY = "cookie=0x5300000000000003, duration=1.2s, table=0, n_packets=4, priority=1000,tcp"
BASE = "cookie=0x1, duration=9.1s, table=0, n_packets=40, priority=100,ip,nw_dst=10.0.0.1"
VMRULE = "cookie=0x2, duration=9.1s, table=0, n_packets=3, priority=200,ip,nw_dst=10.0.200.1"


def clean() -> dict:
    """The observations of a clean testbed: VM vm1 at h1, nothing else anywhere."""
    vm = {"name": "vm1", "running": True, "paused": False, "counter": 3}
    return {"controller": {"relays": [], "cover": None, "vms": {"vm1": "h1"}}, "active": [],
            "agents": {"h1": {"roles": {}, "cover": None, "vm": vm},
                       "h2": {"roles": {}, "cover": None, "vm": None}},
            "flows": {"l1": [BASE, VMRULE], "s1": [BASE]}, "mirrors": {"l1": "[]", "s1": "[]"},
            "leftovers": [], "tcp_metrics": {"h1": "", "h2": "\n"}}


def problems(obs: dict) -> list[str]:
    return reuse.reset_problems(**obs, vm="vm1", source="h1")


def test_a_clean_testbed_has_no_problems():
    assert problems(clean()) == []


@pytest.mark.parametrize(("edit", "says"), [
    (lambda o: o["active"].append({"migration": "m3-1"}), "migrations still active"),
    (lambda o: o["controller"].update(relays=["m3-1"]), "controller still has relays"),
    (lambda o: o["controller"].update(cover={"rate": 1}), "still runs cover"),
    (lambda o: o["controller"].update(vms={"vm1": "h2"}), "controller's book"),
    (lambda o: o["flows"]["s1"].append(RELAY), "switch s1: 1 relay rule"),
    (lambda o: o["mirrors"].update(l1="[7b0c1a2e-0000-4000-8000-000000000001]"),
     "switch l1: port mirror"),
    (lambda o: o["agents"]["h2"].update(roles={"m3-1": {"role": "destination"}}),
     "agent h2: roles left"),
    (lambda o: o["agents"]["h2"].update(cover={"records": 4}), "agent h2: cover mux"),
    (lambda o: o["agents"]["h2"].update(vm={"name": "vm1", "running": True}),
     "agent h2: still holds a VM"),
    (lambda o: o["agents"]["h1"].update(vm=None), "agent h1: the VM vm1 should run here"),
    (lambda o: o["agents"]["h1"]["vm"].update(paused=True), "should run here"),
    (lambda o: o["leftovers"].append("python -m hosts.workload client"),
     "trial process still running"),
    (lambda o: o["tcp_metrics"].update(
        h2="10.0.0.1 age 3.2sec cwnd 10 rtt 1200us rttvar 600us source 10.0.0.2\n"),
     "host h2: TCP metrics of 1 peer(s) cached"),
])
def test_each_left_piece_is_named(edit, says):
    obs = copy.deepcopy(clean())
    edit(obs)
    got = problems(obs)
    assert len(got) == 1 and says in got[0], got


def test_relay_rules_are_told_by_the_cookie_tag_only():
    assert reuse.relay_rules([BASE, VMRULE, RELAY]) == [RELAY]
    assert reuse.relay_rules(["cookie=0x53, priority=1000"]) == []  # 0x53 low, not the tag
    assert reuse.relay_rules(["cookie=junk, x", "no cookie here"]) == []


def test_the_key_tells_topology_and_vm_apart_but_not_seed_or_arm():
    sc = load("quick")
    other = copy.deepcopy(sc)
    other.seed, other.modes, other.background.flows_per_s = 9, ["direct"], 3.0
    assert reuse._key(sc) == reuse._key(other)
    moved = copy.deepcopy(sc)
    moved.vm.host = "h2"
    bigger = copy.deepcopy(sc)
    bigger.topology.args = [4, 2, 5]
    assert len({reuse._key(sc), reuse._key(moved), reuse._key(bigger)}) == 3


def test_the_option_is_off_by_default_and_a_bool():
    assert load("quick").reuse_testbed is False
    from experiments.scenario import ScenarioError, from_dict

    assert from_dict({"name": "x", "reuse_testbed": True}).reuse_testbed is True
    with pytest.raises(ScenarioError, match="reuse_testbed"):
        from_dict({"name": "x", "reuse_testbed": "yes"})


def test_timings_rows_carry_the_reused_flag(tmp_path):
    rows = [timings.row("", 0, "direct", 0, {"bringup_s": 9.0}),
            timings.row("", 1, "direct", 1, {"bringup_s": 1.0, "reused": 1.0})]
    timings.write_csv(tmp_path, rows)
    assert [r["reused"] for r in timings.read_csv(tmp_path)] == [0, 1]


def register(book, host, ip, vm=None, vmip=None):
    book.register({"host": host, "ip": ip, "agent": f"/s/{host}", "pubkey": host * 8,
                   "vm": vm, "vm_ip": vmip, "vm_mac": mac_for(vmip) if vmip else None})


def test_place_vm_puts_the_book_back_at_the_source():
    book = AgentBook({"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"})
    register(book, "h1", "10.0.0.1", "vm1", VMIP)
    register(book, "h2", "10.0.0.2")
    book.move_vm("h1", "h2")  # a trial's migration
    assert book.place_vm("vm1", "h1") == "h2"
    assert book.vms() == {"vm1": "h1"} and book.vm_addresses() == {VMIP: "h1"}
    assert book.lookup("h1")["vm_bytes"] is None and book.lookup("h2")["vm"] is None
    assert book.place_vm("vm1", "h1") == "h1"  # already there: unchanged
    assert book.vms() == {"vm1": "h1"}
    with pytest.raises(ValueError, match="no registered agent"):
        book.place_vm("vm1", "h3")
    with pytest.raises(ValueError, match="no VM 'vm9'"):
        book.place_vm("vm9", "h1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Role:  # what vm_reset reads of a role: its state
    name = "destination"

    def __init__(self, state: str) -> None:
        self.state = state


def test_vm_reset_starts_a_fresh_vm_and_drops_it_elsewhere(tmp_path):
    port = _free_port()
    a = Agent("h1", "127.0.0.1", str(tmp_path / "h1.sock"), str(tmp_path / "w"), vm_port=port)
    spec = {"name": "vm1", "mib": 1, "dirty_pages_per_s": 10.0, "seed": 5}
    try:
        a.roles["m1-1"] = _Role("released")
        got = a.handle({"op": "vm_reset", "vm": spec})
        assert got["vm"]["name"] == "vm1" and got["vm"]["running"] and a.roles == {}
        assert a.vm is not None and a.vm.seed == 5 and (tmp_path / "w" / "vm1.mem").exists()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the fresh VM's service answers
        first = a.vm
        again = a.handle({"op": "vm_reset", "vm": {**spec, "seed": 6}})
        assert again["vm"]["running"] and a.vm is not first and a.vm.seed == 6
        assert not first.running
        a.roles["m2-1"] = _Role("running")
        refused = a.handle({"op": "vm_reset", "vm": None})
        assert refused["ok"] is False and "roles still active" in refused["error"]
        assert a.vm is not None and "m2-1" in a.roles  # nothing was dropped
        a.roles["m2-1"].state = "done"
        assert a.handle({"op": "vm_reset", "vm": None}) == {"vm": None}
        assert a.vm is None and not (tmp_path / "w" / "vm1.mem").exists()
        bad = a.handle({"op": "vm_reset", "vm": "vm1"})
        assert bad["ok"] is False and "VM spec" in bad["error"]
    finally:
        if a.vm is not None:
            a.vm.destroy()


def test_role_error_is_what_a_busy_reset_raises(tmp_path):
    a = Agent("h1", "127.0.0.1", str(tmp_path / "h1.sock"), str(tmp_path / "w"))
    a.roles["m1"] = _Role("prepared")
    with pytest.raises(RoleError, match="m1"):
        a.vm_reset(None)


def test_between_trials_the_controller_counts_from_the_start_again():
    """The same seed after the reset gets the id, cookie and virtual address a fresh
    controller gives (the first migration's); while a migration runs, the reset is refused."""
    from controllers.migrations import Migrations
    from hosts.protocol import ops
    from tests.unit.test_controller_migrate import FakeAgents, _books, _finish

    agents, relays, _ = _books()
    m: Migrations

    def report(mid: str) -> None:
        rec = m.records[mid]
        m.op_report({"op": ops.MIGRATION_DONE, "migration": mid, "role": "destination",
                     "host": rec["roles"]["destination"], "sha256": "ab", "downtime_s": 0.1})

    m = Migrations(agents, relays, seed=1, caller=FakeAgents(report, report_after_s=0.5))
    req = {"source": "h1", "mode": "stealth", "n": 3, "k": 2, "seed": 21,
           "hide_destination": True}
    first = m.op_migrate(dict(req))
    with pytest.raises(ValueError, match="under way"):
        m.forget_finished()
    _finish(m, first["migration"])
    assert m.records[first["migration"]]["state"] == "done"
    agents.place_vm("vm1", "h1")
    assert m.forget_finished() == 1 and m.records == {}
    relays.restart_counters()
    again = m.op_migrate(dict(req))
    assert (again["migration"], again["cookie"], again["virtual_ip"], again["roles"]) == \
        (first["migration"], first["cookie"], first["virtual_ip"], first["roles"])
    from controllers.relays import RequestError

    with pytest.raises(RequestError, match="relays still installed"):
        relays.restart_counters()
    _finish(m, again["migration"])


def test_a_reused_testbed_is_refused_with_a_qemu_guest() -> None:
    import tomllib

    from experiments.scenario import ScenarioError, from_dict

    text = 'name = "r"\nreuse_testbed = true\n[vm]\nkind = "qemu"\nmib = 128\n'
    with pytest.raises(ScenarioError, match="reuse_testbed"):
        from_dict(tomllib.loads(text), "test")
