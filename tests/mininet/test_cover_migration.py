"""A cover-transport migration on the real testbed (issue 14): every tenant agent runs its cover
mux, the migration's hops ride inside the cover records. It completes, the VM answers from the
destination, no relay rule is ever installed (none is left), and a capture at the source's leaf
switch shows only TCP to the tenants' service port 8080 and the cover port 8443.

What the testbed itself runs on the tenant network during the capture: the tenant workload
(``hosts.workload``, port 8080) and the cover links (8443); the controller's OpenFlow and the
management plane stay off it (127.0.0.1 and unix sockets in the root namespace). The VM's service
(7000) is asked only after the capture stopped. Its own module: it takes the testbed lock itself.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]

RATE = 400_000.0  # cover bytes/s per VM (16 VMs: 6.4 MB/s of cover on the fabric)
TENANT_PORTS = {8080, 8443}
VM_MIB = 2  # enough pages for several pre-copy rounds; the test checks the wire, not the goodput
DIRTY = 10  # pages/s: 40 kB/s, well under what the cover gives the migration (pre-copy converges)


def _cookies(tb) -> dict[str, set[str]]:
    return {sw: {re.search(r"cookie=(0x[0-9a-f]+)", line).group(1) for line in tb.dump_flows(sw)}
            for sw in tb.description["switches"]}


def _role_log(tb, mid: str) -> str:
    """The roles' log lines of migration ``mid`` from every agent log, in time order."""
    lines = [line for f in sorted(tb.run_dir.glob("agent-*.log"))
             for line in f.read_text(errors="replace").splitlines()
             if f"migration={mid} " in line or "WARNING" in line]
    return "\n".join(sorted(lines)[-60:])


def _vm_service(tb, client: str, ip: str) -> dict:
    out = tb.host(client).cmd(
        f"{sys.executable} -c \"import json; from hosts.vm import ask_service; "
        f"print(json.dumps(ask_service('{ip}', 7000)))\"")
    return json.loads(out.strip().splitlines()[-1])


def test_a_cover_migration_on_the_testbed(tmp_path) -> None:
    import numpy as np

    from attacks.capture import int_to_ip, ip_to_int, read_pcap
    from experiments import vantage
    from experiments.fleet import VMSpec, start_agents, start_workload, tenants, wait_migration
    from experiments.testbed import Testbed
    from hosts.protocol.cover import CoverSettings
    from topologies.leafspine import LeafSpineTopo

    with Testbed(LeafSpineTopo(4, 2, 4, attackers=["l1"]), seed=11) as tb:
        spec = VMSpec("h1", mib=VM_MIB, dirty_pages_per_s=DIRTY)
        start_agents(tb, spec)
        start_workload(tb, seed=11, flows_per_s=0.5, cap_bytes=200_000, bulk_per_min=0)
        before_vm = _vm_service(tb, "h2", spec.ip)  # the VM's own address
        rules_before = _cookies(tb)
        tb.start_cover(CoverSettings(RATE, seed=11))
        stats = tb.cover_stats()
        assert set(stats) == {h["name"] for h in tenants(tb)} and all(stats.values())
        edge = vantage.start(tb, "switch:l1", tmp_path)
        try:
            time.sleep(3)  # cover links up, some tenant flows
            t0, h1_before = time.monotonic(), tb.cover_stats()["h1"]["total"]
            r = tb.mgmt({"op": "migrate", "source": "h1", "mode": "stealth", "n": 3, "k": 2,
                         "seed": 21, "chunk_policy": {"kind": "cover"}})
            assert r["transport"] == "cover" and r["cookie"] is None and r["virtual_ip"] is None
            rules_during: list[dict[str, set[str]]] = []

            def tick(rec: dict) -> None:
                if len(rules_during) < 20:
                    rules_during.append(_cookies(tb))

            rec = wait_migration(tb, r["migration"], timeout=900, on_tick=tick)
            elapsed, h1_after = time.monotonic() - t0, tb.cover_stats()["h1"]["total"]
            time.sleep(1)
        finally:
            cap_stats = vantage.stop(edge)
        res = rec["result"]
        assert rec["state"] == "done", f"{res['reason']}\n{_role_log(tb, r['migration'])}"
        assert res["sha256"] == res["role_stats"]["source:h1"]["sha256"]
        assert rec["relay_removed"] == {"migration": r["migration"], "removed": True,
                                        "installed": False}
        assert tb.mgmt({"op": "flows"})["relays"] == {}
        assert rules_during and all(x == rules_before for x in rules_during), \
            "a relay rule appeared while the cover migration ran"
        assert _cookies(tb) == rules_before
        dest = r["roles"]["destination"]
        after_vm = _vm_service(tb, "h2", spec.ip)  # the same address, now served by dest
        assert after_vm["vm"] == before_vm["vm"] and after_vm["counter"] > before_vm["counter"]
        assert tb.mgmt({"op": "status"})["vms"] == {"vm1": dest}

        pk = read_pcap(edge.pcap).packets
        tcp = pk[pk["proto"] == 6]
        tenant_ips = np.array([ip_to_int(h["ip"]) for h in tenants(tb)], dtype="u4")
        ours = tcp[np.isin(tcp["src"], tenant_ips) & np.isin(tcp["dst"], tenant_ips)]
        ports = np.array(sorted(TENANT_PORTS), dtype="u2")
        outside = ours[~np.isin(ours["sport"], ports) & ~np.isin(ours["dport"], ports)]
        syn = ours[(ours["flags"] & 0x12) == 0x02]  # SYN without ACK: a connection attempt
        print(f"\ncapture at l1: {len(pk)} packets, {len(ours)} tenant TCP, "
              f"{cap_stats}; SYNs to ports {sorted(set(syn['dport'].tolist()))}")
        assert len(ours) > 1000 and (ours["dport"] == 8443).any() and (ours["dport"] == 8080).any()
        assert not len(outside), "TCP outside the tenant ports: " + ", ".join(
            f"{int_to_ip(p['src'])}:{p['sport']}->{int_to_ip(p['dst'])}:{p['dport']}"
            for p in outside[:10])
        assert set(syn["dport"].tolist()) <= TENANT_PORTS

        src = res["role_stats"]["source:h1"]
        moved = 4096 * sum(src.get("pages_per_round") or [0])
        goodput = moved / res["migration_time_s"]
        sent = {k: h1_after[k] - h1_before[k] for k in ("bytes_sent", "data_bytes", "skipped")}
        print(f"cover migration: {VM_MIB} MiB VM, {moved / 1e6:.1f} MB of pages in "
              f"{res['migration_time_s']:.1f} s ({src.get('rounds')} rounds, downtime "
              f"{res['downtime_s']:.2f} s, drain {src.get('drain_s', 0):.2f} s), goodput "
              f"{goodput / 1e3:.0f} kB/s = {goodput / RATE:.2f} x the cover rate "
              f"{RATE / 1e3:.0f} kB/s per VM; decision->start "
              f"{src.get('decision_to_start_s', -1):.3f} s, ->first byte "
              f"{src.get('decision_to_first_byte_s', -1):.3f} s; h1's mux meanwhile sent "
              f"{sent['bytes_sent'] / elapsed / 1e3:.0f} kB/s on the wire, "
              f"{sent['data_bytes'] / elapsed / 1e3:.0f} kB/s of it stream data, "
              f"{sent['skipped']} slots skipped")
        # item 5's target is 0.5 s (printed above); asserted loosely, 2 cores are shared
        assert 0 < src["decision_to_first_byte_s"] < 3.0
