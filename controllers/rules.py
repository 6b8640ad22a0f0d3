"""OpenFlow 1.3 messages for forwarding, the migration relay and its ARP answers: pure functions.

Following Faucet, every function returns a list of os-ken messages built with
``datapath=None``; the app sets the datapath and sends them, and unit tests feed them to a fake
flow table instead. Nothing here talks to a switch.

Rule layout (table 0):
  priority 0     table-miss: drop (fail mode secure, no flooding, so no ARP storms on loops)
  priority 100   per destination host: IPv4 by ipv4_dst and ARP by arp_tpa, to the host's port
                 or to a SELECT group over the equal-cost next hops (ECMP)
  priority 200   per VM with an address of its own: IPv4 by ipv4_dst and ARP by arp_tpa, sent
                 exactly as the traffic of the host that runs the VM now (its port or its
                 group), cookie ``VM_COOKIE``; a move re-adds them (same match: replaced)
  priority 1000  relay: exact match (in_port, ipv4 src/dst, TCP port) on every switch of the
                 hop's chosen path, both directions, cookie = the migration's, with timeouts
  priority 1100  relay: ARP for a virtual destination address, to the controller, which
                 answers with the packet-out of ``answer_arp``
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from os_ken.lib.packet import arp, ethernet, packet
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controllers import paths as P
from controllers.addresses import VirtualAddress

BASE_COOKIE = 0x1
RELAY_COOKIE_TAG = 0x53 << 56  # 'S' in the top byte marks a migration's rules
VM_COOKIE = 0x2
PRIO_MISS, PRIO_BASE, PRIO_VM, PRIO_RELAY, PRIO_VIP_ARP = 0, 100, 200, 1000, 1100
ETH_IP, ETH_ARP, PROTO_TCP = 0x0800, 0x0806, 6
ALL_BITS = 0xFFFFFFFFFFFFFFFF


def relay_cookie(seq: int) -> int:
    """The cookie of the ``seq``-th migration's rules."""
    return RELAY_COOKIE_TAG | (seq & 0x00FFFFFFFFFFFFFF)


def _apply(actions: list) -> list:
    return [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]


def flow_add(match: parser.OFPMatch, actions: list, priority: int, cookie: int,
             idle_timeout: int = 0, hard_timeout: int = 0) -> parser.OFPFlowMod:
    return parser.OFPFlowMod(datapath=None, cookie=cookie, command=ofp.OFPFC_ADD,
                             idle_timeout=idle_timeout, hard_timeout=hard_timeout,
                             priority=priority, flags=0,
                             match=match, instructions=_apply(actions))


def delete_all() -> list:
    """Wipe flows and groups (on switch connect, so a restarted controller starts clean)."""
    return [
        parser.OFPFlowMod(datapath=None, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                          out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch()),
        parser.OFPGroupMod(datapath=None, command=ofp.OFPGC_DELETE, group_id=ofp.OFPG_ALL),
    ]


def delete_cookie(cookie: int) -> parser.OFPFlowMod:
    """Remove every rule carrying exactly ``cookie``."""
    return parser.OFPFlowMod(datapath=None, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                             cookie=cookie, cookie_mask=ALL_BITS, out_port=ofp.OFPP_ANY,
                             out_group=ofp.OFPG_ANY, match=parser.OFPMatch())


def _to_host(g: nx.Graph, topo: P.Topology, switch: str, i: int) -> tuple[list, list]:
    """``(ports, actions)`` that take a packet from ``switch`` towards host ``i`` (its index in
    the topology): its port, one next hop, or group ``i + 1`` over the ECMP next hops."""
    h = topo["hosts"][i]
    if h["switch"] == switch:
        ports = [h["port"]]
    else:
        ports = P.ecmp_next_hops(g, h["switch"]).get(switch, [])
    if not ports:
        return [], []
    if len(ports) == 1:
        return ports, [parser.OFPActionOutput(ports[0])]
    return ports, [parser.OFPActionGroup(i + 1)]


def base_rules(g: nx.Graph, topo: P.Topology, switch: str) -> list:
    """Proactive, loop-free ECMP forwarding to every host, for one switch."""
    groups: list = []
    flows: list = [flow_add(parser.OFPMatch(), [], PRIO_MISS, BASE_COOKIE)]
    for i, h in enumerate(topo["hosts"]):
        ports, actions = _to_host(g, topo, switch, i)
        if not ports:
            continue
        if len(ports) > 1:
            buckets = [parser.OFPBucket(weight=1, watch_port=ofp.OFPP_ANY,
                                        watch_group=ofp.OFPG_ANY,
                                        actions=[parser.OFPActionOutput(p)]) for p in ports]
            groups.append(parser.OFPGroupMod(datapath=None, command=ofp.OFPGC_ADD,
                                             type_=ofp.OFPGT_SELECT, group_id=i + 1,
                                             buckets=buckets))
        flows.append(flow_add(parser.OFPMatch(eth_type=ETH_IP, ipv4_dst=h["ip"]), actions,
                              PRIO_BASE, BASE_COOKIE))
        flows.append(flow_add(parser.OFPMatch(eth_type=ETH_ARP, arp_tpa=h["ip"]), actions,
                              PRIO_BASE, BASE_COOKIE))
    return groups + flows


def vm_rules(g: nx.Graph, topo: P.Topology, switch: str, vms: dict[str, str]) -> list:
    """Forwarding for VMs with addresses of their own, on one switch: ``vms`` maps each VM
    address to the host that runs the VM now. Packets (IPv4 and ARP) for the VM's address
    take the way of that host's own (the groups of ``base_rules``, which must be installed),
    above the base rules; the host's VM NIC answers them (``hosts.vnic``). An address that is
    a host's own, or a host not in the topology, is a ``ValueError``."""
    index = {h["name"]: i for i, h in enumerate(topo["hosts"])}
    own = {h["ip"] for h in topo["hosts"]}
    flows: list = []
    for ip, host in sorted(vms.items()):
        if ip in own:
            raise ValueError(f"VM address {ip} is a host's own address")
        if host not in index:
            raise P.UnknownHost(host)
        ports, actions = _to_host(g, topo, switch, index[host])
        if not ports:
            continue
        flows.append(flow_add(parser.OFPMatch(eth_type=ETH_IP, ipv4_dst=ip), actions,
                              PRIO_VM, VM_COOKIE))
        flows.append(flow_add(parser.OFPMatch(eth_type=ETH_ARP, arp_tpa=ip), actions,
                              PRIO_VM, VM_COOKIE))
    return flows


@dataclass
class RelayHop:
    """One TCP hop of a migration: ``src`` connects to ``dst``'s ``port``."""

    src: str
    dst: str
    port: int
    path: list[str] = field(default_factory=list)
    virtual: VirtualAddress | None = None  # set on the hop into the destination, if hidden

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "port": self.port, "switches": self.path,
                "virtual_ip": self.virtual.ip if self.virtual else None}


def choose_paths(g: nx.Graph, topo: P.Topology, hops: list[RelayHop], rng: random.Random) -> None:
    """Pick each hop's path at random among its equal-cost paths (in place)."""
    for hop in hops:
        hop.path = P.pick_path(rng, P.equal_cost_paths(g, topo, hop.src, hop.dst))


def relay_rules(g: nx.Graph, topo: P.Topology, hops: list[RelayHop], cookie: int,
                idle_timeout: int = 120, hard_timeout: int = 1800) -> dict[str, list]:
    """Exact-match rules for every hop along its chosen path, both directions, by switch."""
    out: dict[str, list] = {}

    def add(sw: str, match: parser.OFPMatch, actions: list, prio: int = PRIO_RELAY) -> None:
        out.setdefault(sw, []).append(flow_add(match, actions, prio, cookie,
                                               idle_timeout, hard_timeout))

    for hop in hops:
        if not hop.path:
            raise ValueError(f"hop {hop.src}->{hop.dst} has no path: call choose_paths first")
        s, d = P.host(topo, hop.src), P.host(topo, hop.dst)
        shown_dst = hop.virtual.ip if hop.virtual else d["ip"]
        fwd_out = P.path_ports(g, topo, hop.path, hop.dst)
        fwd_in = P.in_ports(g, topo, hop.path, hop.src)
        last = len(hop.path) - 1
        for i, (sw, port) in enumerate(fwd_out):
            match = parser.OFPMatch(in_port=fwd_in[i], eth_type=ETH_IP, ip_proto=PROTO_TCP,
                                    ipv4_src=s["ip"], ipv4_dst=shown_dst, tcp_dst=hop.port)
            actions: list = []
            if hop.virtual and i == last:
                actions += [parser.OFPActionSetField(ipv4_dst=d["ip"]),
                            parser.OFPActionSetField(eth_dst=d["mac"])]
            add(sw, match, actions + [parser.OFPActionOutput(port)])
        back = list(reversed(hop.path))
        rev_out = P.path_ports(g, topo, back, hop.src)
        rev_in = P.in_ports(g, topo, back, hop.dst)
        for i, (sw, port) in enumerate(rev_out):
            src_ip = d["ip"] if (i == 0 or not hop.virtual) else hop.virtual.ip
            match = parser.OFPMatch(in_port=rev_in[i], eth_type=ETH_IP, ip_proto=PROTO_TCP,
                                    ipv4_src=src_ip, ipv4_dst=s["ip"], tcp_src=hop.port)
            actions = []
            if hop.virtual and i == 0:
                actions += [parser.OFPActionSetField(ipv4_src=hop.virtual.ip),
                            parser.OFPActionSetField(eth_src=hop.virtual.mac)]
            add(sw, match, actions + [parser.OFPActionOutput(port)])
        if hop.virtual:
            add(hop.path[0], parser.OFPMatch(in_port=s["port"], eth_type=ETH_ARP,
                                             arp_tpa=hop.virtual.ip),
                [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)],
                PRIO_VIP_ARP)
    return out


def arp_reply(request: arp.arp, virtual: VirtualAddress, out_port: int) -> parser.OFPPacketOut:
    """The packet-out that answers ``request`` for ``virtual``'s IP with its MAC, out of
    ``out_port`` (the port the request came in on)."""
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(ethertype=ETH_ARP, dst=request.src_mac,
                                         src=virtual.mac))
    reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=virtual.mac, src_ip=virtual.ip,
                               dst_mac=request.src_mac, dst_ip=request.src_ip))
    reply.serialize()
    return parser.OFPPacketOut(datapath=None, buffer_id=ofp.OFP_NO_BUFFER,
                               in_port=ofp.OFPP_CONTROLLER,
                               actions=[parser.OFPActionOutput(out_port)], data=reply.data)


def answer_arp(data: bytes, in_port: int,
               lookup: Callable[[str], VirtualAddress | None]) -> list:
    """What to send for a packet-in: the ARP reply if ``data`` is an ARP request for a virtual
    address that ``lookup`` knows, else nothing."""
    req = packet.Packet(data).get_protocol(arp.arp)
    if req is None or req.opcode != arp.ARP_REQUEST:
        return []
    virtual = lookup(req.dst_ip)
    return [arp_reply(req, virtual, in_port)] if virtual else []
