"""Forwarding and relay rules walked hop by hop through a fake flow table, and the ARP answer
for a virtual address decoded from its packet-out (no switch needed)."""

import random
from types import SimpleNamespace

import pytest
from os_ken.lib.packet import arp, ethernet, ipv4, packet
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofparser

from controllers import paths as P
from controllers import rules as R
from controllers.addresses import VirtualAddress
from tests.unit.fakeoftable import FakeFabric
from topologies.base import describe
from topologies.fattree import FatTreeTopo
from topologies.leafspine import LeafSpineTopo


@pytest.fixture(scope="module")
def fattree():
    topo = describe(FatTreeTopo(4, attackers="c2"))
    return topo, P.build_graph(topo)


def loaded_fabric(topo, g):
    fab = FakeFabric(topo)
    for sw in topo["switches"]:
        fab.switches[sw].apply(R.delete_all() + R.base_rules(g, topo, sw))
    return fab


def ip(topo, name):
    return P.host(topo, name)["ip"]


def tcp(topo, src, dst, dport, sport=40000, dst_ip=None):
    return {"eth_type": R.ETH_IP, "ip_proto": 6, "ipv4_src": ip(topo, src),
            "ipv4_dst": dst_ip or ip(topo, dst), "tcp_src": sport, "tcp_dst": dport}


def test_every_host_reaches_every_host_without_loops(fattree):
    topo, g = fattree
    fab = loaded_fabric(topo, g)
    names = [h["name"] for h in topo["hosts"]]
    for src in names:
        for dst in names:
            if src == dst:
                continue
            got = fab.send(src, tcp(topo, src, dst, 80))
            assert got and {d.host for d in got} == {dst}, (src, dst, got)
            # ECMP: every possible route is a shortest one
            n_sw = len(P.equal_cost_paths(g, topo, src, dst)[0])
            assert all(len(d.switches) == n_sw for d in got)


def test_ecmp_spreads_over_all_core_paths(fattree):
    topo, g = fattree
    fab = loaded_fabric(topo, g)
    got = fab.send("h1", tcp(topo, "h1", "h16", 80))
    assert len({tuple(d.switches) for d in got}) == 4  # (k/2)^2 core paths


def test_arp_goes_to_the_target_only(fattree):
    topo, g = fattree
    fab = loaded_fabric(topo, g)
    arp = {"eth_type": R.ETH_ARP, "arp_tpa": ip(topo, "h9"), "eth_dst": "ff:ff:ff:ff:ff:ff"}
    got = fab.send("h1", arp)
    assert {d.host for d in got} == {"h9"}  # a broadcast that never floods
    unknown = fab.send("h1", {"eth_type": R.ETH_ARP, "arp_tpa": "10.9.9.9"})
    assert [d.host for d in unknown] == [None]


def relay_hops():
    return [R.RelayHop("h1", "h5", 9001), R.RelayHop("h1", "h9", 9002),
            R.RelayHop("h5", "h13", 9100), R.RelayHop("h9", "h13", 9100),
            R.RelayHop("h13", "h16", 9200)]


def install_relay(fab, topo, g, hops, seq=7, seed=1, **kw):
    R.choose_paths(g, topo, hops, random.Random(seed))
    msgs = R.relay_rules(g, topo, hops, R.relay_cookie(seq), **kw)
    fab.apply(msgs)
    return msgs


def test_relay_packets_follow_the_chosen_path_both_ways(fattree):
    topo, g = fattree
    fab = loaded_fabric(topo, g)
    hops = relay_hops()
    msgs = install_relay(fab, topo, g, hops)
    cookie = R.relay_cookie(7)
    for hop in hops:
        got = fab.send(hop.src, tcp(topo, hop.src, hop.dst, hop.port))
        assert len(got) == 1, "relay rules are exact: one path, no ECMP spread"
        assert got[0].host == hop.dst and got[0].switches == hop.path
        back = fab.send(hop.dst, tcp(topo, hop.dst, hop.src, 40000, sport=hop.port))
        assert len(back) == 1 and back[0].host == hop.src
        assert back[0].switches == list(reversed(hop.path))
    # rules sit on exactly the switches of the chosen paths
    on_path = {sw for hop in hops for sw in hop.path}
    assert set(msgs) == on_path
    assert {sw for sw, s in fab.switches.items() if cookie in s.cookies()} == on_path
    assert all(m.idle_timeout > 0 and m.hard_timeout > 0 for ms in msgs.values() for m in ms)


def test_removal_leaves_no_rule_with_the_cookie(fattree):
    topo, g = fattree
    fab = loaded_fabric(topo, g)
    before = {sw: len(s.flows) for sw, s in fab.switches.items()}
    install_relay(fab, topo, g, relay_hops())
    cookie = R.relay_cookie(7)
    for s in fab.switches.values():
        s.apply([R.delete_cookie(cookie)])
    assert not any(cookie in s.cookies() for s in fab.switches.values())
    assert {sw: len(s.flows) for sw, s in fab.switches.items()} == before
    got = fab.send("h1", tcp(topo, "h1", "h5", 9001))  # base forwarding still works
    assert {d.host for d in got} == {"h5"}


def test_fresh_paths_per_migration(fattree):
    topo, g = fattree
    rng = random.Random(3)
    seen = set()
    for _ in range(20):
        hops = [R.RelayHop("h1", "h16", 9001)]
        R.choose_paths(g, topo, hops, rng)
        seen.add(tuple(hops[0].path))
    assert len(seen) == 4


def test_virtual_destination_never_crosses_the_core(fattree):
    topo, g = fattree
    fab = loaded_fabric(topo, g)
    vip = VirtualAddress("10.255.0.9", "02:ff:00:00:00:09")
    hop = R.RelayHop("h13", "h1", 9200, virtual=vip)
    install_relay(fab, topo, g, [hop])
    got = fab.send("h13", tcp(topo, "h13", "h1", 9200, dst_ip=vip.ip))
    assert len(got) == 1 and got[0].host == "h1"
    assert got[0].packet["ipv4_dst"] == ip(topo, "h1") and got[0].packet["eth_dst"] == \
        P.host(topo, "h1")["mac"]
    # the real address appears in rules only on the destination's edge switch
    real = ip(topo, "h1")
    for sw, s in fab.switches.items():
        relay = [f for f in s.flows if f.cookie == R.relay_cookie(7)]
        mentions = [f for f in relay if real in f.match.values()]
        assert not mentions or sw == P.host(topo, "h1")["switch"], sw
    back = fab.send("h1", tcp(topo, "h1", "h13", 40000, sport=9200))
    assert len(back) == 1 and back[0].host == "h13"
    assert back[0].packet["ipv4_src"] == vip.ip and back[0].packet["eth_src"] == vip.mac
    arp = fab.send("h13", {"eth_type": R.ETH_ARP, "arp_tpa": vip.ip})
    assert [d.to_controller for d in arp] == [True]


def test_relay_needs_paths(fattree):
    topo, g = fattree
    with pytest.raises(ValueError, match="no path"):
        R.relay_rules(g, topo, [R.RelayHop("h1", "h2", 1)], 5)
    with pytest.raises(P.UnknownHost):
        P.equal_cost_paths(g, topo, "h1", "h99")


def test_leafspine_paths():
    topo = describe(LeafSpineTopo(4, 3, 2))
    g = P.build_graph(topo)
    assert len(P.equal_cost_paths(g, topo, "h1", "h8")) == 3
    fab = loaded_fabric(topo, g)
    assert {d.host for d in fab.send("h1", tcp(topo, "h1", "h8", 1))} == {"h8"}


def _arp_request(src_mac: str, src_ip: str, dst_ip: str, opcode: int = arp.ARP_REQUEST) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(ethertype=R.ETH_ARP, dst="ff:ff:ff:ff:ff:ff",
                                       src=src_mac))
    pkt.add_protocol(arp.arp(opcode=opcode, src_mac=src_mac, src_ip=src_ip,
                             dst_mac="00:00:00:00:00:00", dst_ip=dst_ip))
    pkt.serialize()
    return bytes(pkt.data)


def test_arp_reply_for_a_virtual_address_is_a_packet_out_without_a_switch():
    vip = VirtualAddress("10.255.0.7", "02:ff:00:00:00:07")
    known = {vip.ip: vip}.get
    (out,) = R.answer_arp(_arp_request("00:00:00:00:00:0d", "10.0.0.13", vip.ip), 3, known)
    assert isinstance(out, ofparser.OFPPacketOut) and out.datapath is None
    assert out.in_port == ofp.OFPP_CONTROLLER and out.buffer_id == ofp.OFP_NO_BUFFER
    assert [a.port for a in out.actions] == [3]  # back out of the port it came in on
    reply = packet.Packet(out.data)
    eth, ans = reply.get_protocol(ethernet.ethernet), reply.get_protocol(arp.arp)
    assert (eth.ethertype, eth.src, eth.dst) == (R.ETH_ARP, vip.mac, "00:00:00:00:00:0d")
    assert ans.opcode == arp.ARP_REPLY
    assert (ans.src_mac, ans.src_ip) == (vip.mac, vip.ip)
    assert (ans.dst_mac, ans.dst_ip) == ("00:00:00:00:00:0d", "10.0.0.13")
    # the app sets the datapath when it sends: the message then serializes as OpenFlow 1.3
    out.datapath = SimpleNamespace(ofproto=ofp, ofproto_parser=ofparser)
    out.set_xid(1)
    out.serialize()
    assert out.buf[0] == ofp.OFP_VERSION and out.msg_type == ofp.OFPT_PACKET_OUT


def test_arp_for_other_addresses_or_other_packets_gets_no_answer():
    vip = VirtualAddress("10.255.0.7", "02:ff:00:00:00:07")
    known = {vip.ip: vip}.get
    assert R.answer_arp(_arp_request("00:00:00:00:00:0d", "10.0.0.13", "10.0.0.1"), 3,
                        known) == []
    assert R.answer_arp(_arp_request("00:00:00:00:00:0d", "10.0.0.13", vip.ip,
                                     opcode=arp.ARP_REPLY), 3, known) == []
    ip4 = packet.Packet()
    ip4.add_protocol(ethernet.ethernet(ethertype=R.ETH_IP))
    ip4.add_protocol(ipv4.ipv4(src="10.0.0.13", dst=vip.ip))
    ip4.serialize()
    assert R.answer_arp(bytes(ip4.data), 3, known) == []
