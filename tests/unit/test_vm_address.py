"""The VM's own address, without root: the address plan, the controller's VM routes walked
through a fake flow table (before and after a move), the agent book that moves the address with
the VM, the manifest fields, and the host-side NIC commands."""

from __future__ import annotations

import json

import pytest

from controllers import paths as P
from controllers import rules as R
from controllers.agents import AgentBook
from hosts import vnic
from hosts.roles.destination import ManifestError, read_manifest
from tests.unit.fakeoftable import FakeFabric
from topologies.base import attacker_ip, describe, host_ip, mac_for, vm_ip
from topologies.fattree import FatTreeTopo
from topologies.leafspine import LeafSpineTopo

VMIP = vm_ip(1)


@pytest.fixture(scope="module")
def fattree():
    topo = describe(FatTreeTopo(4, attackers="c2+e3"))
    return topo, P.build_graph(topo)


def fabric(topo, g, vms):
    fab = FakeFabric(topo)
    for sw in topo["switches"]:
        fab.switches[sw].apply(R.delete_all() + R.base_rules(g, topo, sw)
                               + R.vm_rules(g, topo, sw, vms))
    return fab


def to_vm(topo, src, kind="ip"):
    ip = P.host(topo, src)["ip"]
    if kind == "arp":
        return {"eth_type": R.ETH_ARP, "arp_spa": ip, "arp_tpa": VMIP}
    return {"eth_type": R.ETH_IP, "ip_proto": 6, "ipv4_src": ip, "ipv4_dst": VMIP,
            "tcp_src": 40000, "tcp_dst": 7000}


def delivered(fab, src, pkt):
    got = fab.send(src, pkt)
    return {d.host for d in got}, got


def test_the_plan_keeps_vm_addresses_apart():
    vms = {vm_ip(i) for i in range(1, 250 * 50 + 1)}
    assert len(vms) == 250 * 50 and VMIP == "10.0.200.1" and vm_ip(251) == "10.0.201.1"
    assert not vms & {host_ip(i) for i in range(1, 250 * 200 + 1)}
    assert not vms & {attacker_ip(i) for i in range(1, 251)}
    assert all(ip.startswith("10.0.") for ip in vms)  # the tenants' 10.0.0.0/8
    for bad in (0, 250 * 50 + 1):
        with pytest.raises(ValueError, match="VM index"):
            vm_ip(bad)


def test_the_vm_address_reaches_the_host_that_runs_it_and_follows_a_move(fattree):
    topo, g = fattree
    names = [h["name"] for h in topo["hosts"]]
    fab = fabric(topo, g, {VMIP: "h3"})
    n_flows = {sw: len(s.flows) for sw, s in fab.switches.items()}
    for where in ("h3", "h14"):
        if where != "h3":  # the move: the same rules, re-added towards the new host
            fab.apply({sw: R.vm_rules(g, topo, sw, {VMIP: where}) for sw in topo["switches"]})
            assert {sw: len(s.flows) for sw, s in fab.switches.items()} == n_flows  # replaced
        for src in names:
            if src == where:
                continue
            for kind in ("ip", "arp"):
                hosts, got = delivered(fab, src, to_vm(topo, src, kind))
                assert hosts == {where}, (src, kind, got)
                # unchanged on the way: the VM's NIC answers at its own address and MAC
                pkt = to_vm(topo, src, kind)
                assert all({k: d.packet[k] for k in pkt} == pkt for d in got)
        # every host's own address still reaches that host
        for dst in ("h3", "h14"):
            hosts, _ = delivered(fab, "h1", {"eth_type": R.ETH_IP, "ip_proto": 6,
                                             "ipv4_src": P.host(topo, "h1")["ip"],
                                             "ipv4_dst": P.host(topo, dst)["ip"]})
            assert hosts == {dst}


def test_vm_rules_sit_above_the_base_rules_under_their_own_cookie(fattree):
    topo, g = fattree
    flows = R.vm_rules(g, topo, "c1", {VMIP: "h5", vm_ip(2): "h9"})
    assert len(flows) == 4
    assert {f.priority for f in flows} == {R.PRIO_VM} and R.PRIO_BASE < R.PRIO_VM < R.PRIO_RELAY
    assert {f.cookie for f in flows} == {R.VM_COOKIE} and R.VM_COOKIE != R.BASE_COOKIE
    assert R.vm_rules(g, topo, "c1", {}) == []


def test_vm_rules_refuse_a_host_address_and_an_unknown_host(fattree):
    topo, g = fattree
    with pytest.raises(ValueError, match="host's own address"):
        R.vm_rules(g, topo, "c1", {P.host(topo, "h2")["ip"]: "h3"})
    with pytest.raises(P.UnknownHost):
        R.vm_rules(g, topo, "c1", {VMIP: "h99"})


def test_a_leafspine_move_across_leaves():
    topo = describe(LeafSpineTopo(2, 2, 3, attackers="l1"))
    g = P.build_graph(topo)
    fab = fabric(topo, g, {VMIP: "h1"})
    assert delivered(fab, "x1", to_vm(topo, "x1"))[0] == {"h1"}
    fab.apply({sw: R.vm_rules(g, topo, sw, {VMIP: "h6"}) for sw in topo["switches"]})
    assert delivered(fab, "x1", to_vm(topo, "x1"))[0] == {"h6"}
    assert delivered(fab, "h5", to_vm(topo, "h5", "arp"))[0] == {"h6"}


def register(book, host, ip, vm=None, vm_ip_=None, vm_mac=None):
    return book.register({"host": host, "ip": ip, "agent": f"/s/{host}", "pubkey": host * 8,
                          "vm": vm, "vm_ip": vm_ip_, "vm_mac": vm_mac})


def test_the_agent_book_moves_the_address_with_the_vm():
    book = AgentBook({"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"})
    register(book, "h1", "10.0.0.1", "vm1", VMIP, mac_for(VMIP))
    register(book, "h2", "10.0.0.2")
    assert book.vm_addresses() == {VMIP: "h1"}
    book.move_vm("h1", "h2")
    assert book.vm_addresses() == {VMIP: "h2"} and book.vms() == {"vm1": "h2"}
    assert book.lookup("h2")["vm_mac"] == mac_for(VMIP) and book.lookup("h1")["vm_ip"] is None
    # the source registering again (an agent restart) does not take the address back
    register(book, "h1", "10.0.0.1", "vm1", VMIP, mac_for(VMIP))
    assert book.vm_addresses() == {VMIP: "h2"}


@pytest.mark.parametrize(("vm", "ip", "mac", "why"), [
    ("vm1", "10.0.0.2", mac_for(VMIP), "not a free tenant-plan address"),  # a tenant's
    ("vm1", "10.0.0.3", mac_for(VMIP), "not a free tenant-plan address"),  # its own host's
    ("vm1", "8.8.8.8", mac_for(VMIP), "not a free tenant-plan address"),
    ("vm1", "127.0.0.9", mac_for(VMIP), "not a free tenant-plan address"),
    ("vm1", "10.0.200.x", mac_for(VMIP), "not an IPv4 address"),
    ("vm1", VMIP, "03:00:0a:00:c8:01", "not a unicast MAC"),
    ("vm1", VMIP, "nope", "not a unicast MAC"),
    ("vm1", VMIP, None, "two strings"),
    (None, VMIP, mac_for(VMIP), "with a 'vm'"),
])
def test_the_agent_book_refuses_a_bad_vm_address(vm, ip, mac, why):
    book = AgentBook({"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"})
    with pytest.raises(ValueError, match=why):
        register(book, "h3", "10.0.0.3", vm, ip, mac)


def test_the_agent_book_refuses_a_second_vm_with_the_same_address():
    book = AgentBook({"h1": "10.0.0.1", "h2": "10.0.0.2"})
    register(book, "h1", "10.0.0.1", "vm1", VMIP, mac_for(VMIP))
    with pytest.raises(ValueError, match="is h1's"):
        register(book, "h2", "10.0.0.2", "vm2", VMIP, mac_for(VMIP))


GOOD = {"vm": "vm1", "mib": 4, "dirty_pages_per_s": 1.0, "seed": 1}


def test_the_manifest_carries_the_vm_address():
    m = read_manifest(json.dumps({**GOOD, "ip": VMIP, "mac": mac_for(VMIP)}).encode(), 0)
    assert (m.ip, m.mac) == (VMIP, mac_for(VMIP))
    assert read_manifest(json.dumps(GOOD).encode(), 0).ip is None
    for bad in ({**GOOD, "ip": VMIP}, {**GOOD, "mac": "02:00:00:00:00:01"},
                {**GOOD, "ip": 7, "mac": mac_for(VMIP)}):
        with pytest.raises(ManifestError, match="'ip' and 'mac'"):
            read_manifest(json.dumps(bad).encode(), 0)


@pytest.mark.parametrize(("ip", "mac", "why"), [
    ("10.0.0.1", mac_for(VMIP), "may not be"),  # the host's own
    ("127.0.0.1", mac_for(VMIP), "may not be"),
    ("224.0.0.1", mac_for(VMIP), "may not be"),
    ("0.0.0.0", mac_for(VMIP), "may not be"),
    ("10.0.200.300", mac_for(VMIP), "not an IPv4"),
    (VMIP, "ff:ff:ff:ff:ff:ff", "not a unicast MAC"),
    (VMIP, "02:00:0A:00:C8:01", "not a unicast MAC"),  # lower case, as the kernel prints it
    (VMIP, "", "not a unicast MAC"),
])
def test_a_nic_needs_an_address_that_is_not_the_hosts(ip, mac, why):
    with pytest.raises(vnic.NicError, match=why):
        vnic.VmNic(ip, mac, "10.0.0.1")


ADDR = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: h3-eth0    inet 10.0.0.3/8 brd 10.255.255.255 scope global h3-eth0\\       valid_lft forever
"""


def test_the_nic_sits_on_the_interface_of_the_host_address():
    assert vnic.parent_of(ADDR, "10.0.0.3") == ("h3-eth0", "10.0.0.0/8")
    with pytest.raises(vnic.NicError, match="no interface holds"):
        vnic.parent_of(ADDR, "10.0.0.4")
    nic = vnic.VmNic(VMIP, mac_for(VMIP), "10.0.0.3")
    create, up = vnic.up_batch(nic, "h3-eth0", "10.0.0.0/8")
    assert create == [f"link add {vnic.NAME} link h3-eth0 address {nic.mac} "
                      "type macvlan mode bridge"]
    assert up.index(f"link set {vnic.NAME} up") == 1  # after its address, before its routes
    assert f"addr add {VMIP}/32 dev {vnic.NAME}" in up
    # what leaves from the VM's address leaves through its NIC, with its MAC
    assert f"route replace 10.0.0.0/8 dev {vnic.NAME} src {VMIP} table {vnic.TABLE}" in up
    assert f"rule add from {VMIP}/32 lookup {vnic.TABLE} priority {vnic.TABLE}" in up
    assert vnic.down_batch(nic)[-1] == f"link del {vnic.NAME}"
    assert vnic.SYSCTLS["net/ipv4/conf/all/arp_ignore"] == "1"


def test_a_scan_that_finds_the_same_address_learns_no_host():
    from attacks.active import ServiceProbe, locate_service

    def probe(ip, counter=None):
        banner = json.dumps({"vm": "vm1", "counter": counter}) if counter else None
        return ServiceProbe(ip, 7000, counter is not None, banner)

    hosts = ["10.0.0.1", "10.0.0.4"]
    before = [probe(h) for h in hosts] + [probe(VMIP, 5)]
    kept = locate_service(before, [probe(h) for h in hosts] + [probe(VMIP, 9)])
    assert kept.best == VMIP and kept.same_address and kept.previous == [VMIP]
    # the old way: the VM answered at its host's address, and the scan followed it
    moved = locate_service([probe("10.0.0.1", 5), probe("10.0.0.4")],
                           [probe("10.0.0.1"), probe("10.0.0.4", 9)])
    assert moved.best == "10.0.0.4" and not moved.same_address
    assert not locate_service(before, [probe(h) for h in hosts]).same_address  # nothing found
