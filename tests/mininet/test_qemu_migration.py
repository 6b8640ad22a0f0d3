"""A real QEMU guest on the real testbed (fat-tree k=4): live-migrated by QEMU, its stream carried
by the roles, driven by the controller. A dead leader leaves the guest running at h1; stealth
moves it away and direct brings it back; an outside client's counter keeps counting (the same
boot), and the QEMU left behind at a source is gone. Its own module: its testbed (with the
test-only fault switch) holds the machine-wide lock for the whole module. Skips, saying why,
where QEMU cannot run."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from hosts import qemu
from tests.qemu_procs import qemus_under

WHY = qemu.available()
pytestmark = [pytest.mark.root, pytest.mark.timeout(900),
              pytest.mark.skipif(WHY is not None, reason=f"QEMU guest cannot run here: {WHY}")]


UNSHAPED = {"kind": "fixed", "size": 262144}  # ~70 MB of QEMU stream: no pacing, as bench net


@pytest.fixture(scope="module")
def bed():
    from experiments.fleet import VMSpec, start_agents
    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    with Testbed(FatTreeTopo(4), seed=9, test_faults=True) as tb:
        t0 = time.monotonic()
        start_agents(tb, VMSpec("h1", mib=96, dirty_pages_per_s=100, kind="qemu"))
        print(f"\nagents up, the QEMU guest booted in h1: {time.monotonic() - t0:.1f}s")
        yield tb
        log = (tb.run_dir / "controller.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    left = qemus_under(str(tb.run_dir))
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"QEMU processes left behind: {left}"


def ask(tb, client: str, ip: str) -> dict:
    """The guest's counter, asked from another host, as an outside client would."""
    out = tb.host(client).cmd(
        f"{sys.executable} -c \"import json; from hosts.vm import ask_service; "
        f"print(json.dumps(ask_service('{ip}', 7000, timeout=10)))\"")
    return json.loads(out.strip().splitlines()[-1])


def qemu_pid(tb, host: str) -> int:
    vm = tb.agent_call(host, {"op": "status"})["vm"]
    assert vm and vm["kind"] == "qemu" and vm["running"], vm
    return int(vm["pid"])


def migrate(tb, **req) -> dict:
    from experiments.fleet import wait_migration

    r = tb.mgmt({"op": "migrate", **req}, as_test=True)
    rec = wait_migration(tb, r["migration"], timeout=400)
    rec["request"] = r
    return rec


def test_dead_leader_then_stealth_then_direct(bed) -> None:
    from experiments.fleet import VMSpec

    tb = bed
    vm_ip = VMSpec("h1").ip
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": "h1"}
    before = ask(tb, "h2", vm_ip)
    assert before["kind"] == "qemu"
    pid = qemu_pid(tb, "h1")

    # a dead leader: the guest keeps running at h1, in the same QEMU, and no QEMU at h9 is left
    rec = migrate(tb, source="h1", mode="stealth", n=3, k=2, destination="h9", leader="h5",
                  seed=3, faults={"h5": {"die_after_chunks": 20}})
    assert rec["state"] != "done", rec
    now = ask(tb, "h2", vm_ip)
    assert now["boot_id"] == before["boot_id"] and now["counter"] == before["counter"] + 1
    assert qemu_pid(tb, "h1") == pid and tb.mgmt({"op": "status"})["vms"] == {"vm1": "h1"}
    time.sleep(1)
    assert qemus_under(str(tb.work_dir("h9"))) == []

    # stealth, to h9
    rec = migrate(tb, source="h1", mode="stealth", n=3, k=2, destination="h9", leader="h6",
                  hide_destination=True, seed=4, chunk_policy=UNSHAPED)
    assert rec["state"] == "done", rec["result"]["reason"]
    after = ask(tb, "h3", vm_ip)
    assert after["boot_id"] == before["boot_id"] and after["counter"] == now["counter"] + 1
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": "h9"}
    assert not os.path.exists(f"/proc/{pid}")  # the source's QEMU is gone
    stats = rec["result"]["role_stats"]["destination:h9"]
    assert stats["kind"] == "qemu" and stats["qemu"]["status"] == "completed"
    print(f"stealth h1->h9: downtime {rec['result']['downtime_s']:.3f}s, migration "
          f"{rec['result']['migration_time_s']:.2f}s, stream {stats['stream_bytes']} B, QEMU "
          f"{json.dumps(stats['qemu'])}")

    # direct, back to h1
    pid = qemu_pid(tb, "h9")
    rec = migrate(tb, source="h9", mode="direct", destination="h1", hide_destination=False,
                  chunk_policy=UNSHAPED)
    assert rec["state"] == "done", rec["result"]["reason"]
    again = ask(tb, "h4", vm_ip)
    assert again["boot_id"] == before["boot_id"] and again["counter"] == after["counter"] + 1
    assert not os.path.exists(f"/proc/{pid}")
    stats = rec["result"]["role_stats"]["destination:h1"]
    print(f"direct h9->h1: downtime {rec['result']['downtime_s']:.3f}s, migration "
          f"{rec['result']['migration_time_s']:.2f}s, stream {stats['stream_bytes']} B, QEMU "
          f"{json.dumps(stats['qemu'])}")
