"""Loopback migrations: every role a separate agent process on its own 127.0.0.x address.

Stealth (3 intermediates, k = 2) and direct both end with a bit-identical VM running at the
destination whose service keeps counting; the fault cases of issue 3 end as they should.
"""

from __future__ import annotations

import os
import time

import pytest

from experiments.loopback import LoopbackBed
from hosts.protocol.mgmt import MgmtError, call
from hosts.vm import ask_service

from .conftest import HOSTS, NET, SOURCE_IP

DEST = "h6"
PACED = {"kind": "fixed", "size": 16384, "gap_s": 0.004}  # ~1 s for 4 MiB through 3 hops


def _stealth(bed: LoopbackBed, mig: str, **kw):
    return bed.plan(mig, "stealth", "h1", DEST, ["h2", "h3", "h4"], "h5", k=2, **kw)


def _assert_migrated(bed: LoopbackBed, res, before: int) -> None:
    assert res.ok, res.reason
    src = res.role_stats["source:h1"]
    assert res.sha256 == src["sha256"]  # destination's image hash = source's at the pause
    assert res.vm_bytes == 4 << 20 and res.downtime_s is not None and res.downtime_s < 5
    after = ask_service(HOSTS[DEST], 7000)
    assert after["vm"] == "vm1" and after["host"] == DEST
    assert after["counter"] == before + 1  # kept counting: no reset
    assert bed.status(DEST)["vm"]["running"]
    assert bed.status("h1")["vm"] is None  # the source released its copy...
    assert not os.path.exists(os.path.join(bed.root, "h1", "vm1.mem"))  # ...and its image
    with pytest.raises(OSError):
        ask_service(SOURCE_IP, 7000, timeout=1)


def _assert_source_kept(bed: LoopbackBed, res, before: int) -> None:
    assert res.status == "aborted" and res.reason
    assert res.source_vm_running is True
    assert ask_service(SOURCE_IP, 7000)["counter"] == before + 1
    assert bed.status(DEST)["vm"] is None


def test_stealth_migration(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    res = bed.migrate(_stealth(bed, "m-stealth"))
    _assert_migrated(bed, res, before)
    assert res.rounds and res.rounds >= 2
    assert 0 < res.role_stats["leader:h5"]["peak_buffer"] <= 32  # bounded by the window
    for hop in ("h1->h2", "h1->h3", "h1->h4", "h2->h5", "h3->h5", "h4->h5", "h5->h6"):
        assert res.bytes_per_hop[hop] > 0, hop
    assert sum(res.bytes_per_hop[f"h1->{h}"] for h in ("h2", "h3", "h4")) > 4 << 20
    assert [r["op"] for r in bed.reports] == ["migration_done"]
    assert bed.reports[0]["host"] == DEST


def test_direct_migration(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    res = bed.migrate(bed.plan("m-direct", "direct", "h1", DEST))
    _assert_migrated(bed, res, before)
    assert res.bytes_per_hop["h1->h6"] > 4 << 20
    assert set(res.bytes_per_hop) == {"h1->h6", "h6->h1"}  # the stream, the confirmation


def test_vm_migrates_on_and_back(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    assert bed.migrate(bed.plan("m-a", "direct", "h1", DEST)).ok
    plan = bed.plan("m-b", "stealth", DEST, "h1", ["h2", "h3", "h4"], "h5", k=3)
    res = bed.migrate(plan)
    assert res.ok, res.reason
    assert ask_service(SOURCE_IP, 7000)["counter"] == before + 1


@pytest.mark.slow
def test_intermediate_killed_mid_transfer(bed: LoopbackBed) -> None:
    import threading

    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-kill", chunk_policy=PACED)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(res=bed.migrate(plan)))
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if bed.status("h3", migration="m-kill")["stats"].get("chunks", 0) >= 10:
                break
        except MgmtError:
            pass
        time.sleep(0.02)
    bed.kill("h3")  # SIGKILL, mid-transfer
    t.join(60)
    res = out["res"]
    _assert_migrated(bed, res, before)
    assert res.failed_intermediates == ["h3"]
    assert res.role_stats["source:h1"]["resent"] >= 0


def test_n_minus_k_intermediates_die(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = bed.plan(
        "m-nk",
        "stealth",
        "h1",
        DEST,
        ["h2", "h3", "h4", "h7"],
        "h5",
        k=2,
        chunk_policy={"kind": "fixed", "size": 16384},
        faults={"h3": {"die_after_chunks": 5}, "h7": {"die_after_chunks": 12}},
    )
    res = bed.migrate(plan)
    _assert_migrated(bed, res, before)
    assert sorted(res.failed_intermediates) == ["h3", "h7"]
    assert not bed.alive("h3") and not bed.alive("h7")


def test_fewer_than_k_shares_aborts(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-shares", faults={"h2": {"die_on_share": 1}, "h4": {"die_on_share": 1}})
    res = bed.migrate(plan)
    _assert_source_kept(bed, res, before)
    assert "share" in res.reason or "intermediate" in res.reason


def test_withheld_shares_abort(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(
        bed,
        "m-withheld",
        stall_timeout_s=3.0,
        faults={"h2": {"drop_share": True}, "h3": {"drop_share": True}},
    )
    res = bed.migrate(plan)
    _assert_source_kept(bed, res, before)


def test_dead_leader_aborts(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-leader", chunk_policy=PACED, faults={"h5": {"die_after_chunks": 20}})
    res = bed.migrate(plan)
    _assert_source_kept(bed, res, before)
    assert "leader" in res.reason
    assert not bed.alive("h5")


def test_leader_dying_after_the_destination_confirmed(bed: LoopbackBed) -> None:
    """The source never hears the end, but the VM runs at the destination: no second copy."""
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-late", stall_timeout_s=3.0, faults={"h5": {"die_after_done": 1}})
    res = bed.migrate(plan)
    _assert_migrated(bed, res, before)
    assert not bed.alive("h5")


def test_unreachable_destination_aborts(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-nodest", dest_address="127.0.0.99", dest_port=9)
    res = bed.migrate(plan)
    _assert_source_kept(bed, res, before)
    assert "destination unreachable" in res.reason


def test_agent_survives_bad_commands(bed: LoopbackBed) -> None:
    sock = bed.registered["h2"]["agent"]
    for msg in (
        {"op": "nonsense"},
        {"op": "prepare"},
        {"op": "prepare", "view": {"role": "teleporter"}},
        {"op": "start", "migration": "nope"},
        {"op": "release", "migration": "nope"},
        {"op": "prepare", "view": {"role": "source", "migration": "x", "me": {}}},
    ):
        reply = call(sock, msg, bed.cred, server="agent:h2", check=False)
        assert reply["ok"] is False and reply["error"]
    me = {"host": "h2", "ip": HOSTS["h2"], "agent": sock}
    view = {"role": "destination", "migration": "x", "mode": "direct", "me": me, "peer_pubkey": 7}
    reply = call(sock, {"op": "prepare", "view": view}, bed.cred, server="agent:h2", check=False)
    assert reply == {
        "ok": False,
        "error": "PlanError: destination view: field 'peer_pubkey' must be a string, got 7",
    }
    assert call(sock, {"op": "status"}, bed.cred, server="agent:h2")["host"] == "h2"


def test_agents_work_without_a_controller(tmp_path) -> None:
    """No --mgmt: nobody gets reports, the orchestration learns the outcome by polling."""
    from controllers.orchestration import run_migration

    bed = LoopbackBed(str(tmp_path / "noctl"))
    try:
        bed.add_agent("a1", f"{NET}21", vm="vm9", vm_mib=2, controller=False, wait=False)
        bed.add_agent("a2", f"{NET}22", controller=False, wait=False)
        bed.wait_registered(["a1", "a2"])
        res = run_migration(bed.plan("m-noctl", "direct", "a1", "a2"), timeout_s=60,
                            watchdog_s=0.2, caller=bed.call_agent)
        assert res.ok, res.reason
        assert res.downtime_s is not None and res.sha256
        assert ask_service(f"{NET}22", 7000)["vm"] == "vm9"
        assert bed.reports == []
    finally:
        bed.close()
