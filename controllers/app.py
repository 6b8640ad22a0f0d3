"""The os-ken (Ryu API) controller app: OpenFlow and management-plane handlers that delegate.

Handlers only, after Faucet: every message it sends comes from a pure function — the forwarding
and relay rules and the ARP answer for a virtual address from ``controllers.rules`` (built with
``datapath=None``), the relays from ``controllers.relays.RelayBook``, the registered agents in
``controllers.agents.AgentBook``, the migrations from ``controllers.migrations.Migrations``. The
app's own work is the plumbing: set the datapath, send, wait for barrier replies. A VM with an
address of its own is routed to the host that registered it and, after each move, to its
destination (``route_vm``, before the source releases its copy).

The topology is given by the runner (a JSON description, ``topologies.base.describe``) rather than
discovered by LLDP: the runner built the network and knows it exactly, proactive rules can go in
the moment a switch connects, and no LLDP or ARP flooding ever crosses the tenant network, where
attackers listen. Requests arrive over the management socket (``hosts.protocol.mgmt``) on their own
threads; each waits on OpenFlow barriers, so a reply means the rules are in the switches.

Management operations (``hosts.protocol.ops``): ``status``, ``register``, ``relay``,
``relay_remove``, ``flows`` here, the migration operations of ``Migrations.operations()`` and
the cover operations of ``controllers.cover.CoverOps.operations()``;
the op table below lists them all. Every request reaching a handler has passed the transport's
checks (``hosts.protocol.mgmt``: peer uid, size, MAC with the run secret's keys) and the
caller policy (``hosts.protocol.policy``); the controller accepts the identities ``runner``,
``agent:<tenant>`` and ``monitor:<tenant>`` of the runner's tenant list (and ``test`` only when
started with the test switch). It calls the agents as ``controller``.
Started by ``python -m controllers`` (see ``controllers/__main__.py``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from controllers import paths as P
from controllers import rules as R
from controllers.addresses import PoolExhausted
from controllers.agents import AgentBook
from controllers.cover import CoverOps
from controllers.migrations import Migrations
from controllers.relays import RelayBook, RequestError
from hosts.protocol import auth, ops
from hosts.protocol.mgmt import MgmtServer, call
from hosts.protocol.policy import AGENT, MONITOR

log = logging.getLogger("stealth_mtd.controller")


@dataclass
class Settings:
    """What ``python -m controllers`` hands the app before os-ken instantiates it."""

    topology: str = ""
    mgmt: str = ""
    secret_file: str = ""
    seed: int | None = None
    barrier_timeout: float = 10.0
    test_faults: bool = False  # the test switch: the `test` identity and `migrate` faults


SETTINGS = Settings()


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
        # the runner's tenant list: only these hosts may register (attacker hosts never)
        self.tenants = {h["name"]: h["ip"] for h in self.topo["hosts"] if not h.get("attacker")}
        secret = auth.read_private(SETTINGS.secret_file)
        self.cred = auth.Credential.from_secret(secret, auth.CONTROLLER)
        self.agents = AgentBook(self.tenants)
        self.relays = RelayBook(self.g, self.topo, self.push, SETTINGS.seed)
        self.cover = CoverOps(self.agents, caller=self.call_agent)
        self.migrations = Migrations(self.agents, self.relays, SETTINGS.seed,
                                     caller=self.call_agent, test_faults=SETTINGS.test_faults,
                                     route_vm=self.route_vm, cover=self.cover)
        self.ops = {ops.STATUS: self.op_status, ops.REGISTER: self.op_register,
                    ops.RELAY: self.op_relay, ops.RELAY_REMOVE: self.op_relay_remove,
                    ops.FLOWS: self.op_flows, ops.RESET_TRIAL: self.op_reset_trial,
                    **self.migrations.operations(),
                    **self.cover.operations()}
        callers = {auth.RUNNER} | ({auth.TEST} if SETTINGS.test_faults else set())
        callers |= {f(h) for h in self.tenants for f in (auth.agent_id, auth.monitor_id)}
        self.mgmt = MgmtServer(SETTINGS.mgmt, self.handle, auth.Verifier(
            auth.CONTROLLER, lambda i: auth.request_key(secret, i, auth.CONTROLLER)
            if i in callers else None))
        self.mgmt.start()
        log.info("event=started switches=%d hosts=%d tenants=%d mgmt=%s test_faults=%s",
                 len(self.topo["switches"]), len(self.topo["hosts"]), len(self.tenants),
                 SETTINGS.mgmt, SETTINGS.test_faults)

    def close(self) -> None:
        self.mgmt.close()
        super().close()

    def call_agent(self, path: str, msg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """The orchestration's management call: to a registered agent, as ``controller``."""
        host = self.agents.host_of_socket(path)
        return call(path, msg, self.cred, server=auth.agent_id(host), **kw)

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

    def push(self, by_switch: dict[str, list], *, connected_only: bool = False) -> None:
        """The relay book's ``Push``: send each switch its messages, then confirm them all."""
        if connected_only:
            by_switch = {n: m for n, m in by_switch.items() if n in self.datapaths}
        for n, msgs in by_switch.items():
            self.send(self.dp(n), msgs)
        self.confirm(sorted(by_switch))

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
        self.send(dp, R.delete_all() + R.base_rules(self.g, self.topo, name)
                  + R.vm_rules(self.g, self.topo, name, self.agents.vm_addresses()))
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
        self.send(msg.datapath, R.answer_arp(msg.data, msg.match["in_port"],
                                             self.relays.virtual))

    # -- management plane --------------------------------------------------------------------
    def handle(self, msg: dict[str, Any], caller: str) -> dict[str, Any]:
        op = self.ops.get(msg["op"])
        if op is None:
            return {"ok": False, "error": f"unknown op {msg['op']!r}; known: {sorted(self.ops)}"}
        kind, host = auth.split_identity(caller)
        try:
            if msg["op"] == ops.MIGRATIONS_ACTIVE and kind == MONITOR:
                return self.migrations.op_active(msg, only_host=host)
            if msg["op"] == ops.REGISTER and (kind != AGENT or msg.get("host") != host):
                raise ValueError(f"{caller} may register only its own host")  # policy says so
            return op(msg)
        except (RequestError, PoolExhausted, P.UnknownHost, KeyError, TypeError,
                ValueError) as exc:
            log.warning("event=request_refused op=%s caller=%s why=%r", msg["op"], caller,
                        str(exc)[:300])
            return {"ok": False, "error": str(exc)}

    def op_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        n = len(self.topo["switches"])
        return {"ready": len(self.ready) == n, "switches_ready": len(self.ready),
                "switches_expected": n, "relays": self.relays.names(),
                "agents": self.agents.names(), "vms": self.agents.vms(),
                "cover": self.cover.settings.to_dict() if self.cover.settings else None,
                "openflow_errors": self.errors[-20:]}

    def route_vm(self, host: str) -> None:
        """Route the own address of the VM that ``host`` runs to ``host`` on every switch (a
        no-op for a VM at its host's address); returns once the switches confirmed."""
        vms = {ip: h for ip, h in self.agents.vm_addresses().items() if h == host}
        if vms:
            t0 = time.monotonic()
            self.push({n: R.vm_rules(self.g, self.topo, n, vms) for n in self.topo["switches"]},
                      connected_only=True)
            log.info("event=vm_routed host=%s addresses=%s push_s=%.3f", host, sorted(vms),
                     time.monotonic() - t0)

    def op_register(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.relays.virtual(str(msg.get("vm_ip"))) is not None or \
                str(msg.get("vm_ip")) in {h["ip"] for h in self.topo["hosts"]}:
            raise ValueError(f"register: vm_ip {msg.get('vm_ip')} is taken")
        host = self.agents.register(msg)
        self.route_vm(host)
        log.info("event=register host=%s vm=%s pubkey=%s", host, msg.get("vm"),
                 str(msg.get("pubkey"))[:16])
        return {"registered": host}

    def op_reset_trial(self, msg: dict[str, Any]) -> dict[str, Any]:
        """``{vm, host}`` (a reused testbed, between trials): refused while a migration or a
        relay is there; else the book's VM runs at ``host`` again, its own address is routed
        there, and what counts migrations starts over as on a fresh controller (finished
        records dropped, migration count, relay cookies and the virtual-address cursor)."""
        if self.migrations.op_active({})["migrations"] or self.relays.names():
            raise ValueError("reset_trial: a migration or a relay is still there")
        host, vm = str(msg["host"]), str(msg["vm"])
        was = self.agents.place_vm(vm, host)
        self.route_vm(host)
        forgot = self.migrations.forget_finished()
        self.relays.restart_counters()
        log.info("event=trial_reset vm=%s host=%s was=%s forgot=%d", vm, host, was, forgot)
        return {"vm": vm, "host": host, "was": was, "forgot": forgot}

    def op_relay(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Install a migration's relay. Request: ``migration``, ``hops`` ([{from, to, port,
        hidden?}]), optional ``seed``, ``idle_timeout``, ``hard_timeout``."""
        return self.relays.install(str(msg["migration"]), msg["hops"], msg.get("seed"),
                                   int(msg.get("idle_timeout", 120)),
                                   int(msg.get("hard_timeout", 1800)))

    def op_relay_remove(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.relays.remove(str(msg["migration"]))

    def op_flows(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Which relays exist and on which switches (the switches themselves are the truth:
        tests read them with ovs-ofctl)."""
        return {"relays": self.relays.summary()}
