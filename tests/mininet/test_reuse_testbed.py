"""Two trials on one reused testbed (``reuse_testbed``): a direct migration, then a cover-arm
one. After the first the testbed is dirty in the ways a reset must undo (the VM and the book at
the destination), the reset check says so; the second trial's reset puts it back (VM fresh at the
source, cover restarted with the trial's settings) and its ground truth is well-formed; after it
the reset leaves nothing. Its own module: the shared testbed takes the testbed lock itself.
"""

from __future__ import annotations

import copy

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]


def _scenario():
    from experiments.scenario import load

    sc = copy.deepcopy(load("quick"))
    sc.reuse_testbed = True
    sc.vm.mib, sc.vm.dirty_pages_per_s = 4, 10
    bg = sc.background
    # quick's warm-up: on a loaded 2-core machine the cover mesh (16 muxes, 15 links each)
    # needs seconds of handshake retries before a cover migration can ride it
    bg.warmup_s, bg.start_jitter_s, bg.cooldown_s = 8.0, 0.0, 1.0
    bg.settle_s = 0.0  # the test checks the reset, not the traffic's steady state
    sc.attackers.vantage = ["switch:l1"]
    sc.timeout_s = 180
    return sc


def test_two_trials_on_one_reused_testbed(open_run_dir) -> None:
    from experiments.reuse import SharedTestbed, reset_problems
    from experiments.runner import run_trial
    from experiments.trial import arms_meta, read_ground_truth, write_ground_truth

    sc = _scenario()
    tmp_path = open_run_dir  # quick's probers run in every trial, as nobody
    took1: dict[str, float] = {}
    took2: dict[str, float] = {}
    with SharedTestbed() as shared:
        gt1 = run_trial(sc, "direct", 0, 0, tmp_path, timings=took1, shared=shared)
        tb = shared.tb
        assert tb is not None and took1["reused"] == 0.0, "the first trial brings it up"
        assert gt1["status"] == "done", gt1["reason"]
        dst1 = gt1["destination"]["host"]
        assert dst1 != sc.vm.host
        # between the trials, before the reset: the workload and captures are gone, the VM
        # is where the migration left it, and the check says so
        dirty = reset_problems(*shared.observe(), vm=sc.vm.name, source=sc.vm.host)
        assert any("controller's book" in p for p in dirty), dirty
        assert any(f"agent {dst1}: still holds a VM" in p for p in dirty), dirty
        assert any(f"agent {sc.vm.host}: the VM" in p for p in dirty), dirty
        assert not any("trial process" in p or "relay rule" in p for p in dirty), dirty
        # the source's kernel remembers the destination from the migration's connection
        assert any(f"host {sc.vm.host}: TCP metrics" in p for p in dirty), dirty
        assert tb.cover is None

        gt2 = run_trial(sc, "cover", 1, 1, tmp_path, timings=took2, shared=shared)
        assert shared.tb is tb and took2["reused"] == 1.0, "the second trial reuses it"
        assert took2["bringup_s"] < took1["bringup_s"], (took1, took2)
        assert gt2["status"] == "done", gt2["reason"]
        assert gt2["source"]["host"] == sc.vm.host  # the VM ran at the source again
        assert gt2["seed"] == gt1["seed"] + 1
        assert (tmp_path / gt2["pcaps"]["switch-l1"]).stat().st_size > 24
        assert tb.cover is None, "the cover stopped with the trial"
        # the same reset again leaves nothing behind
        shared.reset(sc, gt2["seed"] + 1)
        assert reset_problems(*shared.observe(), vm=sc.vm.name, source=sc.vm.host) == []
        st = tb.agent_call(sc.vm.host, {"op": "status"})
        assert st["vm"]["running"] and st["roles"] == {}
    assert shared.tb is None and tb.net is None, "the shared testbed is down after the block"
    path = tmp_path / "ground_truth.json"
    write_ground_truth(path, [gt1, gt2], arms_meta(sc))  # checked against attacks.truth
    back = read_ground_truth(path)
    assert [t["mode"] for t in back] == ["direct", "cover"]
    assert back[1]["destination"]["host"] in {h["host"] for h in back[1]["hosts"]}
