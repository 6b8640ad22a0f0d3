"""Active attackers in the real network: sweeps, traceroute, and finding the moved VM's service.

The probes run inside attacker host x1 (scapy needs its namespace and root); their analyses run
here. What they conclude comes from the answers on the wire, never from the controller.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(400)]

PROBE = textwrap.dedent("""
    import json, sys
    from dataclasses import asdict
    from attacks import active
    what, arg = sys.argv[1], json.loads(sys.argv[2])
    if what == "ping":
        out = active.ping_sweep(arg, timeout=2)
    elif what == "arp":
        out = active.arp_sweep(arg, iface="x1-eth0", timeout=2)
    elif what == "trace":
        out = active.traceroute(arg, max_ttl=5, dport=7000, timeout=2)
    else:
        out = active.service_scan(arg, port=7000, timeout=1.0)
    print(json.dumps([asdict(o) for o in out] if isinstance(out, list) else asdict(out)))
""")


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    from experiments.fleet import VMSpec, start_agents
    from experiments.testbed import Testbed
    from topologies.leafspine import LeafSpineTopo

    script = tmp_path_factory.mktemp("probe") / "probe.py"
    script.write_text(PROBE)
    with Testbed(LeafSpineTopo(2, 2, 3, attackers="l1"), seed=9) as tb:
        start_agents(tb, VMSpec("h1", mib=4, dirty_pages_per_s=50))
        tb.probe_script = script
        yield tb


def probe(tb, what, arg):
    out = tb.host("x1").cmd(f"{sys.executable} {tb.probe_script} {what} '{json.dumps(arg)}'")
    return json.loads(out.strip().splitlines()[-1])


def tenants(tb):
    return [h["ip"] for h in tb.description["hosts"] if not h["attacker"]]


def test_sweeps_find_every_tenant(bed):
    from attacks.active import Alive, SweepResult, alive_hosts

    for kind in ("ping", "arp"):
        r = probe(bed, kind, tenants(bed))
        sweep = SweepResult(r["method"], r["probed"], [Alive(**a) for a in r["alive"]],
                            r["started"], r["duration_s"])
        assert set(alive_hosts(sweep)) == set(tenants(bed)), kind


def test_traceroute_reveals_no_switch(bed):
    from attacks.active import Hop, TracerouteResult, analyze_traceroute

    r = probe(bed, "trace", bed.ip("h6"))
    res = TracerouteResult(r["target"], r["dport"], [Hop(**h) for h in r["hops"]])
    a = analyze_traceroute(res)
    # OVS forwards without dec_ttl: the target itself answers the TTL-1 probe
    assert a.reached_at_ttl == 1 and not a.reveals_path and a.routers == []


def test_service_scan_finds_the_vm_address_not_its_host(bed):
    from attacks.active import ServiceProbe, locate_service
    from experiments.fleet import VMSpec, wait_migration

    vm_ip = VMSpec("h1").ip
    # a design-aware scanner: every tenant host and the first VM addresses of the plan
    targets = tenants(bed) + ["10.0.200.1", "10.0.200.2", "10.0.200.3"]
    before = [ServiceProbe(**p) for p in probe(bed, "scan", targets)]
    assert [p.ip for p in before if p.open] == [vm_ip]
    r = bed.mgmt({"op": "migrate", "source": "h1", "mode": "stealth", "n": 2, "k": 2,
                  "seed": 4})
    rec = wait_migration(bed, r["migration"], timeout=200)
    assert rec["state"] == "done", rec["result"]["reason"]
    after = [ServiceProbe(**p) for p in probe(bed, "scan", targets)]
    loc = locate_service(before, after)
    # the scan finds the same VM at the same address: nothing names the host it runs on now
    assert loc.best == vm_ip and loc.same_address and loc.ranking[0][1] == 3.0
    assert [p.ip for p in after if p.open] == [vm_ip]  # the destination's own address is shut
    assert "host" not in json.loads(next(p.banner for p in after if p.open))
