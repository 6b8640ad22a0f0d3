"""The real network: fat-tree k=4 on OVS (userspace datapath) with the os-ken controller."""

from __future__ import annotations

import re

import pytest

from hosts.protocol.mgmt import MgmtError, call

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]


def flows_with_cookie(tb, cookie):
    return {sw: tb.dump_flows(sw, cookie) for sw in tb.description["switches"]}


def n_packets(line: str) -> int:
    return int(re.search(r"n_packets=(\d+)", line).group(1))


def test_all_hosts_reach_each_other(fattree_bed):
    loss = fattree_bed.net.pingAll(timeout=2)
    assert loss == 0.0


def test_tcp_between_far_hosts(fattree_bed):
    bps = fattree_bed.iperf("h1", "h16")["sum_received"]["bits_per_second"]
    assert bps > 1e6, f"only {bps / 1e6:.2f} Mbit/s between h1 and h16"


def test_relay_rules_on_exactly_the_chosen_paths_and_counted(fattree_bed):
    tb = fattree_bed
    hops = [{"from": "h1", "to": "h5", "port": 9001}, {"from": "h1", "to": "h9", "port": 9002},
            {"from": "h5", "to": "h13", "port": 9100}, {"from": "h9", "to": "h13", "port": 9100},
            {"from": "h13", "to": "h16", "port": 9200}]
    reply = tb.mgmt({"op": "relay", "migration": "t-relay", "hops": hops, "seed": 11})
    cookie = reply["cookie"]
    on_path = {sw for p in reply["paths"] for sw in p["switches"]}
    flows = flows_with_cookie(tb, cookie)
    assert {sw for sw, lines in flows.items() if lines} == on_path
    assert sum(len(lines) for lines in flows.values()) == reply["rules"]
    assert all("idle_timeout=" in line and "hard_timeout=" in line
               for lines in flows.values() for line in lines)

    # real traffic along the first hop bumps the counters of every switch on its path
    tb.iperf("h1", "h5", port=9001, seconds=1)
    first = next(p for p in reply["paths"] if p["to"] == "h5")
    for sw in first["switches"]:
        counted = [n_packets(line) for line in tb.dump_flows(sw, cookie)
                   if "tp_dst=9001" in line]
        assert counted and max(counted) > 0, f"{sw}: relay rule saw no packets"

    tb.mgmt({"op": "relay_remove", "migration": "t-relay"})
    assert not any(flows_with_cookie(tb, cookie).values())


def test_repeated_relays_take_different_core_paths(fattree_bed):
    tb = fattree_bed
    paths = set()
    for i in range(8):
        r = tb.mgmt({"op": "relay", "migration": f"t-rep-{i}",
                     "hops": [{"from": "h1", "to": "h16", "port": 9300}]})
        paths.add(tuple(r["paths"][0]["switches"]))
        tb.mgmt({"op": "relay_remove", "migration": f"t-rep-{i}"})
    assert len(paths) >= 2, f"8 relays all took {paths}"


def test_hidden_destination_is_reachable_by_its_virtual_address(fattree_bed):
    tb = fattree_bed
    r = tb.mgmt({"op": "relay", "migration": "t-vip",
                 "hops": [{"from": "h13", "to": "h1", "port": 9400, "hidden": True}]})
    vip = r["paths"][0]["virtual_ip"]
    assert vip and vip != tb.ip("h1")
    assert tb.iperf("h13", "h1", port=9400, seconds=1, dst_ip=vip)["sum_received"]["bytes"] > 0
    edge = next(h["switch"] for h in tb.description["hosts"] if h["name"] == "h1")
    for sw, lines in flows_with_cookie(tb, r["cookie"]).items():
        if sw != edge:
            assert not any(tb.ip("h1") + "," in ln or ln.endswith(tb.ip("h1")) for ln in lines)
    tb.mgmt({"op": "relay_remove", "migration": "t-vip"})


def test_malformed_requests_get_errors_and_the_controller_lives(fattree_bed):
    tb = fattree_bed
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.connect(tb.mgmt_path)
        s.sendall(b"this is not json\n")
        assert b'"ok":false' in s.recv(4096)
    for bad in ({"op": "nope"}, {"op": "relay"}, {"op": "relay", "migration": "x", "hops": []},
                {"op": "relay", "migration": "x", "hops": [{"from": "h1", "to": "h99",
                                                             "port": 1}]},
                {"op": "relay_remove", "migration": "never"}):
        with pytest.raises(MgmtError):
            call(tb.mgmt_path, bad, tb.cred)
    assert tb.mgmt({"op": "status"})["ready"]
