"""The monitor (Alg 1) in the real network: a clean VM under normal load triggers nothing; an
injected anomaly is reported by the VM's own monitor and ends, with no human step, in a
completed stealth migration the controller was told about (Alg 1 → 2 … 6)."""

from __future__ import annotations

import json
import sys
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

TRAIN_S = 15


def monitor_log(tb, host: str) -> list[dict]:
    path = tb.run_dir / "monitor" / f"{host}.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def bed():
    from experiments.fleet import VMSpec, start_agents, start_workload
    from experiments.monitor_eval import MonitorSettings, start_monitors, wait_trained
    from experiments.testbed import Testbed
    from topologies.leafspine import LeafSpineTopo

    with Testbed(LeafSpineTopo(4, 2, 4), seed=11) as tb:
        start_agents(tb, VMSpec("h1", mib=8, dirty_pages_per_s=50))
        start_workload(tb, seed=11, flows_per_s=1.0, cap_bytes=1_000_000, bulk_per_min=1.0,
                       bulk_max_bytes=4_000_000)
        tb.mgmt({"op": "defaults", "chunk_policy": {"kind": "profile", "sniff_s": 2.0,
                                                     "rate_budget_bps": 5e6}})
        hosts = [h for h in tb.description["hosts"] if h["name"] in ("h1", "h6")]
        logs = start_monitors(tb, hosts, MonitorSettings(train_s=TRAIN_S), seed=11)
        wait_trained(logs, TRAIN_S + 60)
        yield tb
        text = (tb.run_dir / "controller.log").read_text()
        assert "Traceback" not in text, text[-3000:]
        for h in ("h1", "h6"):
            mon = (tb.run_dir / f"monitor-{h}.log").read_text()
            assert "Traceback" not in mon, mon[-3000:]


def test_clean_vm_under_normal_load_triggers_nothing(bed):
    tb = bed
    time.sleep(15)
    assert tb.mgmt({"op": "migrations_active"})["migrations"] == []
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": "h1"}
    for h in ("h1", "h6"):
        judged = [r for r in monitor_log(tb, h) if "aware" in r]
        assert len(judged) >= 10, f"{h} judged only {len(judged)} intervals"
        alerts = [r for r in judged if r["aware"]["alert"]]
        assert not alerts, f"{h} false alarm: {alerts[:2]}"
        assert not any(r.get("reported") for r in monitor_log(tb, h))


def test_injected_scan_ends_in_a_completed_stealth_migration(bed):
    from experiments.fleet import wait_migration

    tb = bed
    t0 = time.time()
    targets = ",".join(tb.ip(h) for h in ("h5", "h9"))
    tb.popen("h1", [sys.executable, "-m", "hosts.anomalies", "scan", "--ip", tb.ip("h1"),
                    "--target", targets, "--ports", "1-300"], log_name="anomaly-scan.log",
             unprivileged=True)  # as the runner runs anomalies: a tenant's program
    mid = None
    deadline = time.monotonic() + 30
    while mid is None and time.monotonic() < deadline:
        for m in tb.mgmt({"op": "migrations_active"})["migrations"]:
            if m["hosts"][0] == "h1":
                mid = m["migration"]
        time.sleep(0.2)
    assert mid, f"no migration of h1's VM 30 s after the scan started: {monitor_log(tb, 'h1')[-3:]}"
    rep = next(r["reported"] for r in monitor_log(tb, "h1") if r.get("reported"))
    assert rep["reply"]["migration"] == mid
    rec = wait_migration(tb, mid, timeout=200)
    assert rec["state"] == "done", rec["result"]["reason"]
    assert rec["mode"] == "stealth" and len(rec["roles"]["intermediates"]) == 3
    assert rec["trigger"]["kind"] == "port_scan" and rec["trigger"]["host"] == "h1"
    assert rec["trigger"]["detected_at"] - t0 < 10, "detection took longer than 10 s"
    assert rec["result"]["sha256"] and rec["relay_removed"]["removed"]
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": rec["roles"]["destination"]}
