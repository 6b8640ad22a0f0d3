"""Stealth and direct migrations in the real network, driven by the controller (Alg 2-6)."""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def bed():
    from experiments.fleet import VMSpec, start_agents
    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    with Testbed(FatTreeTopo(4), seed=5) as tb:
        start_agents(tb, VMSpec("h1", mib=8, dirty_pages_per_s=100))
        yield tb
        log = (tb.run_dir / "controller.log").read_text()
        assert "Traceback" not in log, log[-3000:]


def vm_service(tb, client, ip):
    """Ask the VM's service from another host, as an outside client would."""
    out = tb.host(client).cmd(
        f"{sys.executable} -c \"import json; from hosts.vm import ask_service; "
        f"print(json.dumps(ask_service('{ip}', 7000)))\"")
    return json.loads(out.strip().splitlines()[-1])


def migrate(tb, **req):
    from experiments.fleet import wait_migration

    r = tb.mgmt({"op": "migrate", **req})
    rules = sum(len(tb.dump_flows(sw, r["cookie"])) for sw in tb.description["switches"])
    rec = wait_migration(tb, r["migration"], timeout=300)
    return r, rules, rec


def test_stealth_then_direct_migration(bed):
    from experiments.fleet import VMSpec

    tb = bed
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": "h1"}
    vm_ip = VMSpec("h1").ip  # the VM answers at its own address wherever it runs
    before = vm_service(tb, "h2", vm_ip)
    r, rules, rec = migrate(tb, source="h1", mode="stealth", n=3, k=2, hide_destination=True,
                            seed=21)
    roles = r["roles"]
    assert len(roles["intermediates"]) == 3 and roles["leader"] and roles["destination"]
    assert rules > 0, "the relay's rules were not in the switches while it ran"
    assert rec["state"] == "done", rec["result"]["reason"]
    res = rec["result"]
    assert res["sha256"] and res["vm_bytes"] >= 8 << 20
    assert rec["relay_removed"]["removed"]
    assert not any(tb.dump_flows(sw, r["cookie"]) for sw in tb.description["switches"])
    dest = roles["destination"]
    after = vm_service(tb, "h2", vm_ip)
    assert after["vm"] == before["vm"] and after["counter"] > before["counter"]  # no reset
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": dest}

    # and back, the way today's live migration does it
    r2, rules2, rec2 = migrate(tb, source=dest, mode="direct", destination="h1",
                               hide_destination=False)
    assert rec2["state"] == "done", rec2["result"]["reason"]
    assert rules2 > 0 and rec2["relay_removed"]["removed"]
    again = vm_service(tb, "h3", vm_ip)
    assert again["vm"] == before["vm"] and again["counter"] > after["counter"]
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": "h1"}


def test_a_bad_request_leaves_the_vm_where_it_is(bed):
    from hosts.protocol.mgmt import MgmtError

    tb = bed
    vms = tb.mgmt({"op": "status"})["vms"]
    with pytest.raises(MgmtError, match="runs no VM"):
        tb.mgmt({"op": "migrate", "source": "h7", "mode": "stealth"})
    with pytest.raises(MgmtError, match="intermediates"):
        tb.mgmt({"op": "migrate", "source": vms["vm1"], "mode": "stealth", "n": 40})
    assert tb.mgmt({"op": "status"})["vms"] == vms
    assert not tb.mgmt({"op": "status"})["relays"]
