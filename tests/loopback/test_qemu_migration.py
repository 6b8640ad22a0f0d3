"""A real QEMU guest migrated by QEMU itself, its stream carried by the roles (loopback agents).

h1 boots the guest (``--vm-kind qemu``); a dead leader (h5) leaves it running at h1 (QEMU's
migration cancelled, the counter goes on, the destination's QEMU gone); a stealth migration (3
intermediates, k = 2, leader h7) moves it to h6 and a direct one back to h1: the counter keeps
counting (the same boot), QEMU's ``query-migrate`` figures come back in the role stats, and the
source's QEMU process is gone. One bed for the
module (a guest boot costs ~10 s under TCG); the tests run in file order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from experiments.loopback import LoopbackBed
from hosts import qemu
from hosts.vm import ask_service
from tests.qemu_procs import qemus_under

from .conftest import HOSTS

WHY = qemu.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"QEMU guest cannot run here: {WHY}")

PACED = {"kind": "fixed", "size": 16384, "gap_s": 0.004}


@pytest.fixture(scope="module")
def qbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackBed]:
    b = LoopbackBed(str(tmp_path_factory.mktemp("qemu") / "bed"), test_faults=True)
    try:
        b.add_agent("h1", HOSTS["h1"], vm="vm1", vm_mib=96, vm_kind="qemu", wait=False)
        for h in ("h2", "h3", "h4", "h5", "h6", "h7"):
            b.add_agent(h, HOSTS[h], wait=False)
        b.wait_registered(["h1", "h2", "h3", "h4", "h5", "h6", "h7"], timeout=240)
        yield b
    finally:
        b.close()
        left = qemus_under(b.root)
        for pid in left:
            os.kill(pid, 9)
        assert not left, f"QEMU processes left behind: {left}"
        for h in ("h1", "h2", "h3", "h4", "h5", "h6", "h7"):
            log = os.path.join(b.root, f"{h}.log")
            if os.path.exists(log):
                with open(log) as f:
                    text = f.read()
                assert "Traceback" not in text, f"{h} logged a traceback:\n{text[-3000:]}"


def _ask(host: str) -> dict:
    return ask_service(HOSTS[host], 7000, timeout=10.0)


def _stealth(bed: LoopbackBed, mig: str, src: str, dst: str, leader: str = "h5", **kw):
    return bed.plan(mig, "stealth", src, dst, ["h2", "h3", "h4"], leader, k=2, **kw)


def _qemu_pid(bed: LoopbackBed, host: str) -> int:
    vm = bed.status(host)["vm"]
    assert vm["kind"] == "qemu" and vm["running"], vm
    return int(vm["pid"])


def _assert_moved(bed: LoopbackBed, res, src: str, dst: str, before: dict, pid: int) -> None:
    assert res.ok, res.reason
    after = _ask(dst)
    assert after["boot_id"] == before["boot_id"]  # the same guest, not a reboot
    assert after["counter"] == before["counter"] + 1  # kept counting
    assert bed.status(src)["vm"] is None
    assert not os.path.exists(f"/proc/{pid}")  # the source's QEMU is gone
    with pytest.raises(OSError):
        ask_service(HOSTS[src], 7000, timeout=1)
    d = res.role_stats[f"destination:{dst}"]
    fig = d["qemu"]
    assert d["kind"] == "qemu" and fig["status"] == "completed"
    assert fig["dirty_sync_count"] >= 2 and fig["transferred_bytes"] > 1_000_000
    assert res.downtime_s is not None and 0 < res.downtime_s < 30
    print(f"\n{res.mode} {src}->{dst}: downtime "
          f"{res.downtime_s:.3f}s, QEMU total {fig['total_time_ms']} ms, QEMU downtime "
          f"{fig['downtime_ms']} ms, stream {d['stream_bytes']} B, load {d['qemu_load_s']:.3f}s")


def test_dead_leader_leaves_the_guest_running(qbed: LoopbackBed) -> None:
    before = _ask("h1")
    pid = _qemu_pid(qbed, "h1")
    plan = _stealth(qbed, "q-leader", "h1", "h6", chunk_policy=PACED,
                    faults={"h5": {"die_after_chunks": 20}})
    res = qbed.migrate(plan)
    assert res.status == "aborted" and "leader" in res.reason
    assert res.source_vm_running is True
    assert not qbed.alive("h5")
    after = _ask("h1")
    assert after["counter"] == before["counter"] + 1 and after["boot_id"] == before["boot_id"]
    assert _qemu_pid(qbed, "h1") == pid  # the same QEMU, running again
    assert qbed.status("h6")["vm"] is None
    time.sleep(1)
    assert qemus_under(qbed.root) == [pid]  # the destination's QEMU is gone


def test_stealth_then_direct_back(qbed: LoopbackBed) -> None:
    before = _ask("h1")
    pid = _qemu_pid(qbed, "h1")
    res = qbed.migrate(_stealth(qbed, "q-stealth", "h1", "h6", leader="h7"), timeout_s=300)
    _assert_moved(qbed, res, "h1", "h6", before, pid)
    for hop in ("h1->h2", "h1->h3", "h1->h4", "h7->h6"):
        assert res.bytes_per_hop[hop] > 0, hop

    before = _ask("h6")
    pid = _qemu_pid(qbed, "h6")
    res = qbed.migrate(qbed.plan("q-direct", "direct", "h6", "h1"), timeout_s=300)
    _assert_moved(qbed, res, "h6", "h1", before, pid)
    assert res.bytes_per_hop["h6->h1"] > 1_000_000
