"""The os-ken (Ryu API) controller app: proactive ECMP forwarding, relay rules, management plane.

Thin shell: the rules come from ``controllers.rules`` and the paths from ``controllers.paths``.
The topology is given by the runner (a JSON description, ``topologies.base.describe``) rather than
discovered by LLDP: the runner built the network and knows it exactly, proactive rules can go in
the moment a switch connects, and no LLDP or ARP flooding ever crosses the tenant network, where
attackers listen. Requests arrive over the management socket (``hosts.protocol.mgmt``) on their own
threads; each waits on OpenFlow barriers, so a reply means the rules are in the switches.

Management operations: ``status``, ``register``, ``relay``, ``relay_remove``, ``flows``; the
migration operations (``migrate``, ``anomaly``, ``migration_status``, reports) are added by
``controllers.migrations``.
Started by ``python -m controllers`` (see ``controllers/__main__.py``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import arp, ethernet, packet
from os_ken.ofproto import ofproto_v1_3

from controllers import paths as P
from controllers import rules as R
from hosts.protocol.mgmt import MgmtServer

log = logging.getLogger("stealth_mtd.controller")


@dataclass
class Settings:
    """What ``python -m controllers`` hands the app before os-ken instantiates it."""

    topology: str = ""
    mgmt: str = "/tmp/stealth-mtd/mgmt.sock"
    seed: int | None = None
    barrier_timeout: float = 10.0


SETTINGS = Settings()


class RequestError(ValueError):
    """A management request that cannot be carried out; the reply says why."""


class StealthController(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with open(SETTINGS.topology) as f:
            self.topo: P.Topology = json.load(f)
        self.g = P.build_graph(self.topo)
        self.name_of = {info["dpid"]: name for name, info in self.topo["switches"].items()}
        self.datapaths: dict[str, Any] = {}
        self.ready: set[str] = set()
        self.errors: list[str] = []
        self.send_lock = threading.Lock()
        self.barrier_waits: dict[tuple[int, int], threading.Event] = {}
        self.relays: dict[str, dict[str, Any]] = {}
        self.virtual: dict[str, R.VirtualAddress] = {}  # ip -> address, for ARP answers
        self.agents: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.rng = random.Random(SETTINGS.seed)
        self.ops = {"status": self.op_status, "register": self.op_register,
                    "relay": self.op_relay, "relay_remove": self.op_relay_remove,
                    "flows": self.op_flows}
        from controllers.migrations import Migrations

        self.migrations = Migrations(self, SETTINGS.seed)
        self.mgmt = MgmtServer(SETTINGS.mgmt, self.handle)
        self.mgmt.start()
        log.info("event=started switches=%d hosts=%d mgmt=%s", len(self.topo["switches"]),
                 len(self.topo["hosts"]), SETTINGS.mgmt)

    def close(self) -> None:
        self.mgmt.close()
        super().close()

    # -- OpenFlow -------------------------------------------------------------------------------
    def send(self, dp: Any, msgs: list) -> None:
        with self.send_lock:
            for m in msgs:
                m.datapath = dp
                m.xid = None
                dp.send_msg(m)

    def barrier(self, dp: Any) -> threading.Event:
        """Send a barrier request; the returned event is set when the switch answers."""
        ev = threading.Event()
        with self.send_lock:
            req = dp.ofproto_parser.OFPBarrierRequest(dp)
            dp.set_xid(req)
            self.barrier_waits[(dp.id, req.xid)] = ev
            dp.send_msg(req)
        return ev

    def confirm(self, names: list[str]) -> None:
        """Barrier on each named switch and wait for all answers."""
        events = {n: self.barrier(self.dp(n)) for n in names}
        deadline = time.monotonic() + SETTINGS.barrier_timeout
        for n, ev in events.items():
            if not ev.wait(max(0.0, deadline - time.monotonic())):
                raise RequestError(f"switch {n} did not confirm within "
                                   f"{SETTINGS.barrier_timeout:.0f} s")

    def dp(self, name: str) -> Any:
        try:
            return self.datapaths[name]
        except KeyError:
            raise RequestError(f"switch {name} is not connected") from None

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        name = self.name_of.get(dp.id)
        if name is None:
            log.warning("event=unknown_switch dpid=%016x (not in the topology; ignored)", dp.id)
            return
        self.datapaths[name] = dp
        self.ready.discard(name)
        self.send(dp, R.delete_all() + R.base_rules(self.g, self.topo, name))
        ev_done = self.barrier(dp)
        threading.Thread(target=self._mark_ready, args=(name, ev_done), daemon=True).start()

    def _mark_ready(self, name: str, ev: threading.Event) -> None:
        if ev.wait(30):
            self.ready.add(name)
            log.info("event=switch_ready switch=%s ready=%d/%d", name, len(self.ready),
                     len(self.topo["switches"]))
        else:
            log.error("event=switch_not_ready switch=%s", name)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def on_barrier(self, ev: Any) -> None:
        e = self.barrier_waits.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if e:
            e.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def on_error(self, ev: Any) -> None:
        m = ev.msg
        text = (f"switch={self.name_of.get(m.datapath.id, m.datapath.id)} type={m.type} "
                f"code={m.code} xid={m.xid}")
        self.errors.append(text)
        log.error("event=openflow_error %s", text)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def on_packet_in(self, ev: Any) -> None:
        """Answer ARP for a virtual destination address (the relay sends only those here)."""
        msg = ev.msg
        pkt = packet.Packet(msg.data)
        req = pkt.get_protocol(arp.arp)
        if req is None or req.opcode != arp.ARP_REQUEST or req.dst_ip not in self.virtual:
            return
        v = self.virtual[req.dst_ip]
        reply = packet.Packet()
        reply.add_protocol(ethernet.ethernet(ethertype=0x0806, dst=req.src_mac, src=v.mac))
        reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=v.mac, src_ip=v.ip,
                                   dst_mac=req.src_mac, dst_ip=req.src_ip))
        reply.serialize()
        dp = msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        out = parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                  in_port=ofp.OFPP_CONTROLLER,
                                  actions=[parser.OFPActionOutput(msg.match["in_port"])],
                                  data=reply.data)
        with self.send_lock:
            dp.send_msg(out)

    # -- management plane --------------------------------------------------------------------
    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = self.ops.get(msg["op"])
        if op is None:
            return {"ok": False, "error": f"unknown op {msg['op']!r}; known: {sorted(self.ops)}"}
        try:
            return op(msg)
        except (RequestError, P.UnknownHost, KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}

    def op_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        n = len(self.topo["switches"])
        return {"ready": len(self.ready) == n, "switches_ready": len(self.ready),
                "switches_expected": n, "relays": sorted(self.relays),
                "agents": sorted(self.agents),
                "vms": {a["vm"]: h for h, a in self.agents.items() if a.get("vm")},
                "openflow_errors": self.errors[-20:]}

    def op_register(self, msg: dict[str, Any]) -> dict[str, Any]:
        host = msg["host"]
        P.host(self.topo, host)
        self.agents[host] = {k: v for k, v in msg.items() if k != "op"}
        log.info("event=register host=%s vm=%s", host, msg.get("vm"))
        return {"registered": host}

    def op_relay(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Install a migration's relay. Request: ``migration``, ``hops`` ([{from, to, port,
        hidden?}]), optional ``seed``, ``idle_timeout``, ``hard_timeout``."""
        return self.install_relay(str(msg["migration"]), msg["hops"], msg.get("seed"),
                                  int(msg.get("idle_timeout", 120)),
                                  int(msg.get("hard_timeout", 1800)))

    def install_relay(self, mid: str, hop_specs: list[dict[str, Any]], seed: int | None,
                      idle_timeout: int = 120, hard_timeout: int = 1800) -> dict[str, Any]:
        if mid in self.relays:
            raise RequestError(f"migration {mid} already has a relay")
        if not isinstance(hop_specs, list) or not hop_specs:
            raise RequestError("'hops' must be a non-empty list of {from, to, port}")
        t0 = time.monotonic()
        self.seq += 1
        cookie = R.relay_cookie(self.seq)
        hops = []
        for spec in hop_specs:
            port = int(spec["port"])
            if not 0 < port < 65536:
                raise RequestError(f"bad TCP port {port}")
            virtual = None
            if spec.get("hidden"):
                virtual = R.VirtualAddress(f"10.255.{self.seq >> 8 & 255}.{self.seq & 255 or 1}",
                                           f"02:ff:00:00:{self.seq >> 8 & 255:02x}:"
                                           f"{self.seq & 255:02x}")
            hops.append(R.RelayHop(spec["from"], spec["to"], port, virtual=virtual))
        rng = random.Random(seed) if seed is not None else self.rng
        R.choose_paths(self.g, self.topo, hops, rng)
        by_switch = R.relay_rules(self.g, self.topo, hops, cookie, idle_timeout, hard_timeout)
        for h in hops:
            if h.virtual:
                self.virtual[h.virtual.ip] = h.virtual
        self.relays[mid] = {"cookie": cookie, "hops": hops, "switches": sorted(by_switch)}
        try:
            for sw, msgs in by_switch.items():
                self.send(self.dp(sw), msgs)
            self.confirm(sorted(by_switch))
        except RequestError:
            self.remove_relay(mid)
            raise
        dt = time.monotonic() - t0
        log.info("event=relay_installed migration=%s cookie=%#x switches=%d rules=%d t=%.4f",
                 mid, cookie, len(by_switch), sum(map(len, by_switch.values())), dt)
        return {"migration": mid, "cookie": cookie, "paths": [h.to_dict() for h in hops],
                "switches": sorted(by_switch),
                "rules": sum(map(len, by_switch.values())), "install_s": dt}

    def op_relay_remove(self, msg: dict[str, Any]) -> dict[str, Any]:
        mid = str(msg["migration"])
        if mid not in self.relays:
            raise RequestError(f"no relay for migration {mid}")
        return self.remove_relay(mid)

    def remove_relay(self, mid: str) -> dict[str, Any]:
        t0 = time.monotonic()
        relay = self.relays.pop(mid)
        for h in relay["hops"]:
            if h.virtual:
                self.virtual.pop(h.virtual.ip, None)
        names = [n for n in relay["switches"] if n in self.datapaths]
        for n in names:
            self.send(self.datapaths[n], [R.delete_cookie(relay["cookie"])])
        self.confirm(names)
        dt = time.monotonic() - t0
        log.info("event=relay_removed migration=%s cookie=%#x t=%.4f", mid, relay["cookie"], dt)
        return {"migration": mid, "removed": True, "remove_s": dt}

    def op_flows(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Which relays exist and on which switches (the switches themselves are the truth:
        tests read them with ovs-ofctl)."""
        return {"relays": {m: {"cookie": r["cookie"], "switches": r["switches"]}
                           for m, r in self.relays.items()}}
