"""A small fake OpenFlow 1.3 flow table, after Faucet's ``clib/fakeoftable.py``.

``FakeSwitch.apply()`` takes the os-ken messages that ``controllers.rules`` returns; a
``FakeFabric`` walks a packet (a dict of match fields) hop by hop through the switches of a
topology description, following outputs, SELECT groups (every bucket) and set-field actions.
Test support only: the controller itself never uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser


@dataclass
class Flow:
    priority: int
    cookie: int
    match: dict[str, Any]
    actions: list
    packets: int = 0


@dataclass
class FakeSwitch:
    name: str
    flows: list[Flow] = field(default_factory=list)
    groups: dict[int, list[list]] = field(default_factory=dict)

    def apply(self, msgs: list) -> None:
        for msg in msgs:
            if isinstance(msg, parser.OFPFlowMod):
                self._flow_mod(msg)
            elif isinstance(msg, parser.OFPGroupMod):
                self._group_mod(msg)
            else:
                raise TypeError(f"unexpected message {type(msg).__name__}")

    def _flow_mod(self, msg: parser.OFPFlowMod) -> None:
        match = dict(msg.match.items())
        if msg.command == ofp.OFPFC_ADD:
            if msg.instructions and not all(
                isinstance(i, parser.OFPInstructionActions) for i in msg.instructions
            ):
                raise ValueError("only apply-actions instructions are modelled")
            actions = [a for i in msg.instructions for a in i.actions]
            for a in actions:
                if isinstance(a, parser.OFPActionGroup) and a.group_id not in self.groups:
                    raise ValueError(f"{self.name}: flow refers to missing group {a.group_id}")
            self.flows = [f for f in self.flows
                          if not (f.priority == msg.priority and f.match == match)]
            self.flows.append(Flow(msg.priority, msg.cookie, match, actions))
        elif msg.command == ofp.OFPFC_DELETE:
            mask = msg.cookie_mask

            def doomed(f: Flow) -> bool:
                if mask and (f.cookie & mask) != (msg.cookie & mask):
                    return False
                return all(f.match.get(k) == v for k, v in match.items())

            self.flows = [f for f in self.flows if not doomed(f)]
        else:
            raise ValueError(f"flow-mod command {msg.command} not modelled")

    def _group_mod(self, msg: parser.OFPGroupMod) -> None:
        if msg.command == ofp.OFPGC_ADD:
            if msg.group_id in self.groups:
                raise ValueError(f"{self.name}: group {msg.group_id} exists")
            self.groups[msg.group_id] = [list(b.actions) for b in msg.buckets]
        elif msg.command == ofp.OFPGC_DELETE:
            if msg.group_id == ofp.OFPG_ALL:
                self.groups.clear()
            else:
                self.groups.pop(msg.group_id, None)
        else:
            raise ValueError(f"group-mod command {msg.command} not modelled")

    def lookup(self, pkt: dict[str, Any]) -> Flow | None:
        best = None
        for f in self.flows:
            if all(pkt.get(k) == v for k, v in f.match.items()):
                if best is None or f.priority > best.priority:
                    best = f
        return best

    def cookies(self) -> set[int]:
        return {f.cookie for f in self.flows}


@dataclass
class Delivery:
    """Where a packet ended up and how it looked there."""

    host: str | None
    switches: list[str]
    packet: dict[str, Any]
    to_controller: bool = False


class FakeFabric:
    """Switches of a topology description, wired by its links, with hosts on edge ports."""

    def __init__(self, topo: dict[str, Any]) -> None:
        self.topo = topo
        self.switches = {name: FakeSwitch(name) for name in topo["switches"]}
        self.wire: dict[tuple[str, int], tuple[str, int]] = {}
        for link in topo["links"]:
            self.wire[(link["a"], link["a_port"])] = (link["b"], link["b_port"])
            self.wire[(link["b"], link["b_port"])] = (link["a"], link["a_port"])
        self.host_at = {(h["switch"], h["port"]): h["name"] for h in topo["hosts"]}
        self.hosts = {h["name"]: h for h in topo["hosts"]}

    def apply(self, msgs_by_switch: dict[str, list]) -> None:
        for sw, msgs in msgs_by_switch.items():
            self.switches[sw].apply(msgs)

    def send(self, src: str, pkt: dict[str, Any], max_hops: int = 32) -> list[Delivery]:
        """Inject ``pkt`` from host ``src``; return every delivery over all ECMP choices."""
        h = self.hosts[src]
        return self._walk(h["switch"], h["port"], dict(pkt), [], max_hops)

    def _walk(self, sw: str, in_port: int, pkt: dict[str, Any], trail: list[str],
              budget: int) -> list[Delivery]:
        if budget == 0 or sw in trail:
            raise AssertionError(f"forwarding loop: {trail + [sw]}")
        trail = trail + [sw]
        p = dict(pkt, in_port=in_port)
        flow = self.switches[sw].lookup(p)
        if flow is None or not flow.actions:
            return [Delivery(None, trail, p)]  # dropped
        flow.packets += 1
        return self._act(sw, flow.actions, p, trail, budget)

    def _act(self, sw: str, actions: list, p: dict[str, Any], trail: list[str],
             budget: int) -> list[Delivery]:
        out: list[Delivery] = []
        p = dict(p)
        for a in actions:
            if isinstance(a, parser.OFPActionSetField):
                p[a.key] = a.value
            elif isinstance(a, parser.OFPActionGroup):
                for bucket in self.switches[sw].groups[a.group_id]:
                    out += self._act(sw, bucket, p, trail, budget)
            elif isinstance(a, parser.OFPActionOutput):
                if a.port == ofp.OFPP_CONTROLLER:
                    out.append(Delivery(None, trail, p, to_controller=True))
                elif (sw, a.port) in self.host_at:
                    out.append(Delivery(self.host_at[(sw, a.port)], trail, p))
                else:
                    nsw, nport = self.wire[(sw, a.port)]
                    q = {k: v for k, v in p.items() if k != "in_port"}
                    out += self._walk(nsw, nport, q, trail, budget - 1)
            else:
                raise ValueError(f"action {type(a).__name__} not modelled")
        return out
