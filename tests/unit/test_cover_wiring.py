"""The cover transport's wiring (issue 14 items 2-5): the plan's and the views' ``transport``, the
Noise hop over an already-connected socket (a real socketpair, as the cover mux hands out), a
role that asks for cover without a mux, the agent's and the controller's cover ops, and a
``cover`` migration through the controller's parts that installs no rule."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from controllers.cover import CoverOps, CoverRequestError, agent_seed, cover_configs
from controllers.migrations import Migrations
from hosts.agent import Agent
from hosts.channel import Channel, ChannelError, public_hex
from hosts.protocol import ops
from hosts.protocol.cover import CoverConfig, CoverError, CoverPeer, CoverSettings
from hosts.protocol.plan import VIEWS, Endpoint, MigrationPlan, PlanError, view_from_dict
from hosts.roles.base import AgentContext, RoleError
from hosts.roles.intermediate import Intermediate
from tests.unit.test_controller_migrate import FakeAgents, _books, _finish


def _plan(**kw: Any) -> MigrationPlan:
    ep = lambda h, i: Endpoint(h, f"10.0.0.{i}", f"/run/{h}.sock", 8090 + i, f"{i:02x}" * 32)  # noqa: E731
    return MigrationPlan(migration="m7", mode="stealth", source=ep("h1", 1),
                         destination=ep("h6", 6), intermediates=[ep("h2", 2), ep("h3", 3)],
                         leader=ep("h5", 5), k=2, **kw)


def _views(p: MigrationPlan) -> dict[str, dict[str, Any]]:
    eps = {"source": p.source, "intermediate": p.intermediates[0], "leader": p.leader,
           "destination": p.destination}
    return {r: json.loads(json.dumps(p.view_for(r, ep).to_dict())) for r, ep in eps.items()}


# --- the plan and the views ----------------------------------------------------------------
def test_every_view_carries_the_plans_transport_and_tcp_is_the_default() -> None:
    assert {v.transport for v in map(view_from_dict, _views(_plan()).values())} == {"tcp"}
    p = _plan(transport="cover", chunk_policy={"kind": "cover"}, decided_at=1234.5)
    again = MigrationPlan.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p and again.transport == "cover"
    for d in _views(p).values():
        assert d["transport"] == "cover"
        assert view_from_dict(d).transport == "cover"
        del d["transport"]  # a view from before the field: TCP, as it always was
        assert view_from_dict(d).transport == "tcp"
    src = view_from_dict(_views(p)["source"])
    assert src.decided_at == 1234.5  # the source's start latency is measured from it
    assert all("decided_at" not in d for r, d in _views(p).items() if r != "source")


def test_a_bad_transport_is_named() -> None:
    with pytest.raises(ValueError, match="transport must be one of"):
        _plan(transport="udp")
    with pytest.raises(ValueError, match="transport 'cover' goes with chunk_policy kind 'cover'"):
        _plan(transport="cover")  # 64 KiB chunks back to back over plain TCP: refused
    with pytest.raises(ValueError, match="transport 'cover' goes with chunk_policy kind 'cover'"):
        _plan(chunk_policy={"kind": "cover"})
    for role, d in _views(_plan()).items():
        d["transport"] = "carrier-pigeon"
        with pytest.raises(PlanError, match=f"^{role} view: field 'transport' must be one of "
                                            "tcp, cover, got 'carrier-pigeon'$"):
            VIEWS[role].from_dict(d)
        d["transport"] = 1
        with pytest.raises(PlanError, match="field 'transport' must be a string"):
            view_from_dict(d)


# --- the hop over an already-connected socket -------------------------------------------
def test_the_noise_hop_runs_over_a_socketpair_and_checks_the_keys() -> None:
    a, b = socket.socketpair()
    ini, resp = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    out: dict[str, Any] = {}

    def accept() -> None:
        try:
            out["ch"] = Channel.accept(b, resp, {public_hex(ini)}, "m1", timeout=5,
                                       peer="10.0.0.9:17")
        except ChannelError as exc:
            out["err"] = exc

    t = threading.Thread(target=accept)
    t.start()
    ch = Channel.initiate(a, resp.public_key(), ini, "m1", timeout=5, peer="10.0.0.8:8093")
    t.join(5)
    other = out["ch"]
    assert other.peer == "10.0.0.9:17" and other.peer_key == public_hex(ini)
    assert ch.peer == "10.0.0.8:8093" and ch.peer_key == public_hex(resp)
    frame = bytes(range(256)) * 700  # more than one Noise message
    ch.send(frame)
    assert other.recv() == frame
    other.send(b"ack")
    assert ch.recv() == b"ack"
    ch.close()
    other.close()

    # a sender whose key is not expected is refused, over a socketpair as over TCP
    a, b = socket.socketpair()
    t = threading.Thread(target=accept)
    out.clear()
    b_key = X25519PrivateKey.generate()
    t.start()
    with pytest.raises(ChannelError):
        Channel.initiate(a, resp.public_key(), b_key, "m1", timeout=5)
    t.join(5)
    assert "not expected" in str(out["err"])


def test_a_role_asked_for_cover_without_a_mux_says_so(tmp_path) -> None:
    p = _plan(transport="cover", chunk_policy={"kind": "cover"})
    view = view_from_dict(_views(p)["intermediate"])
    ctx = AgentContext("h2", "10.0.0.2", X25519PrivateKey.generate(), str(tmp_path))
    role = Intermediate(ctx, view)
    with pytest.raises(RoleError, match="runs no cover mux"):
        role.prepare()


# --- the agent ----------------------------------------------------------------------------
def test_the_agent_takes_only_its_own_cover_config(tmp_path) -> None:
    agent = Agent("h2", "127.0.0.2", str(tmp_path / "h2.sock"), str(tmp_path / "h2"))
    assert agent.handle({"op": ops.STATUS})["cover"] is None
    cfg = CoverConfig(CoverSettings(1e5), "h3", "127.0.0.3")
    reply = agent.handle({"op": ops.COVER_START, "config": cfg.to_dict()})
    assert reply["ok"] is False and "cover config for h3 (127.0.0.3)" in reply["error"]
    reply = agent.handle({"op": ops.COVER_START})
    assert reply["ok"] is False and "needs a config" in reply["error"]
    reply = agent.handle({"op": ops.COVER_START, "config": {"settings": {"rate_bytes_per_s": 0},
                                                            "host": "h2", "ip": "127.0.0.2",
                                                            "peers": []}})
    assert reply["ok"] is False and "cover rate must be > 0" in reply["error"]
    assert agent.handle({"op": ops.COVER_STOP}) == {"stopped": False, "stats": None}
    assert agent.cover is None


def test_the_agents_cover_start_is_idempotent_and_restarts_on_a_new_config(tmp_path) -> None:
    import random

    net = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}."
    port = random.randint(20000, 30000)
    agent = Agent("h2", f"{net}2", str(tmp_path / "h2.sock"), str(tmp_path / "h2"))
    peer = CoverPeer("h3", f"{net}3", public_hex(X25519PrivateKey.generate()))
    cfg = CoverConfig(CoverSettings(2e4, port=port), "h2", f"{net}2", (peer,), seed=5)
    try:
        assert agent.handle({"op": ops.COVER_START, "config": cfg.to_dict()})["started"] is True
        first = agent.cover
        again = agent.handle({"op": ops.COVER_START, "config": cfg.to_dict()})
        assert again["started"] is False and agent.cover is first  # the same config: a no-op
        st = agent.handle({"op": ops.STATUS})["cover"]
        assert st["host"] == "h2" and f"{net}3" in st["peers"]
        new = CoverConfig(CoverSettings(3e4, port=port), "h2", f"{net}2", (peer,), seed=5)
        assert agent.handle({"op": ops.COVER_START, "config": new.to_dict()})["started"] is True
        assert agent.cover is not first and agent.cover_config == new  # the old one stopped:
        with socket.create_connection((f"{net}2", port), timeout=2):  # its port is the new one's
            pass
    finally:
        stop = agent.handle({"op": ops.COVER_STOP})
    assert stop["stopped"] is True and agent.cover is None
    with pytest.raises(OSError):
        socket.create_connection((f"{net}2", port), timeout=1)


# --- the controller -------------------------------------------------------------------------
def _agents(n: int) -> dict[str, dict[str, Any]]:
    return {f"h{i}": {"ip": f"10.0.0.{i}", "pubkey": f"{i:02x}" * 32, "agent": f"/run/h{i}.sock"}
            for i in range(1, n + 1)}


def test_each_agent_gets_its_own_seed_and_every_other_agent_as_a_peer() -> None:
    s = CoverSettings(2e5, record_min=2048, seed=3)
    cfgs = cover_configs(_agents(5), s)
    assert sorted(cfgs) == ["h1", "h2", "h3", "h4", "h5"]
    for h, c in cfgs.items():
        assert (c.host, c.ip) == (h, f"10.0.0.{h[1:]}")
        assert [p.host for p in c.peers] == [x for x in sorted(cfgs) if x != h]
        assert all(p.pubkey == f"{int(p.host[1:]):02x}" * 32 for p in c.peers)
        assert c.settings == s  # the run's settings, the same for every VM
        assert c.seed == agent_seed(3, h)
        assert CoverConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    seeds = {c.seed for c in cfgs.values()}
    assert len(seeds) == 5 and all(0 <= x < 1 << 62 for x in seeds)
    assert cover_configs(_agents(5), s) == cfgs  # fixed by the run's seed, before anything
    assert agent_seed(4, "h1") != agent_seed(3, "h1")


class CoverAgents:
    """Answers the cover ops as agents would (``broken``: these hosts refuse)."""

    def __init__(self, broken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.broken = broken
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str, msg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        from hosts.protocol.mgmt import MgmtError

        host = path.rsplit("/", 1)[1].removesuffix(".sock")
        with self.lock:
            self.calls.append((host, msg))
        if host in self.broken and msg["op"] == ops.COVER_START:
            raise MgmtError(f"{host}: bind 8443: address in use")
        return {"started": True, "stats": {"host": host}}


def test_cover_start_configures_every_agent_or_none() -> None:
    agents, _, _ = _books()
    fake = CoverAgents()
    cov = CoverOps(agents, caller=fake)
    assert not cov.active
    with pytest.raises(CoverError, match="unknown cover setting"):
        cov.op_start({"settings": {"rate_bytes_per_s": 1e5, "rate": 3}})
    r = cov.op_start({"settings": CoverSettings(1e5, seed=9).to_dict()})
    assert cov.active and r["started"] == agents.names()
    starts = {h: m for h, m in fake.calls if m["op"] == ops.COVER_START}
    assert set(starts) == set(agents.names())
    for h, m in starts.items():
        cfg = CoverConfig.from_dict(m["config"])
        assert cfg.host == h and cfg.seed == agent_seed(9, h) == r["seeds"][h]
        assert cfg.settings == CoverSettings(1e5, seed=9)
        assert {p.host for p in cfg.peers} == set(agents.names()) - {h}
    stop = cov.op_stop({})
    assert not cov.active and stop["stopped"] == agents.names()

    fake = CoverAgents(broken={"h3"})
    cov = CoverOps(agents, caller=fake)
    with pytest.raises(CoverRequestError, match=r"did not start on \['h3'\]"):
        cov.op_start({"settings": CoverSettings(1e5).to_dict()})
    assert not cov.active
    stopped = {h for h, m in fake.calls if m["op"] == ops.COVER_STOP}
    assert stopped == set(agents.names()) - {"h3"}  # the others were stopped again


def test_a_cover_migration_installs_no_rule_and_runs_every_hop_over_cover() -> None:
    agents, relays, fab = _books()
    base = {n: sw.cookies() for n, sw in fab.switches.items()}  # the forwarding rules only
    prepared: list[dict[str, Any]] = []
    m: Migrations

    def report(mid: str) -> None:
        rec = m.records[mid]
        m.op_report({"op": ops.MIGRATION_DONE, "migration": mid, "role": "destination",
                     "host": rec["roles"]["destination"], "sha256": "ab", "downtime_s": 0.2})

    fake = FakeAgents(report, report_after_s=0.3)

    def caller(path: str, msg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if msg["op"] == ops.PREPARE:
            prepared.append(msg["view"])
        if msg["op"] in (ops.COVER_START, ops.COVER_STOP):
            return {"started": True}
        return fake(path, msg, **kw)

    cov = CoverOps(agents, caller=caller)
    m = Migrations(agents, relays, seed=1, caller=caller, cover=cov)
    req = {"op": ops.MIGRATE, "source": "h1", "mode": "stealth", "n": 3, "k": 2, "seed": 21,
           "hide_destination": True, "chunk_policy": {"kind": "cover"}}
    with pytest.raises(ValueError, match="send cover_start first"):
        m.op_migrate(dict(req))
    assert m.records == {}
    tcp = Migrations(agents, relays, seed=1, caller=FakeAgents())  # the same seed over TCP
    tcp_roles = tcp.choose_roles(agents.snapshot(), "h1", "stealth", 3,
                                 __import__("random").Random(21))
    cov.op_start({"settings": CoverSettings(1e5, port=8443).to_dict()})
    r = m.op_migrate(dict(req))
    assert r["transport"] == "cover" and r["cookie"] is None and r["virtual_ip"] is None
    assert r["roles"] == tcp_roles  # the arms compare the same roles for the same seed
    assert relays.names() == [] and {n: sw.cookies() for n, sw in fab.switches.items()} == base
    hops = {(p["from"], p["to"]) for p in r["paths"]}
    inter, lead, dst = r["roles"]["intermediates"], r["roles"]["leader"], r["roles"]["destination"]
    assert hops == ({("h1", h) for h in inter} | {(h, lead) for h in inter} | {(lead, dst)})
    assert all(p["switches"] == [] and p["virtual_ip"] is None for p in r["paths"])
    assert m.op_active({})["migrations"][0]["ports"] == [8443]
    _finish(m, r["migration"])
    rec = m.op_status({"migration": r["migration"]})
    assert rec["state"] == "done", rec["result"]["reason"]
    assert rec["relay_removed"] == {"migration": r["migration"], "removed": True,
                                    "installed": False}
    assert {v["transport"] for v in prepared} == {"cover"} and len(prepared) == 6
    src = next(v for v in prepared if v["role"] == "source")
    assert src["chunk_policy"] == {"kind": "cover"}  # no sniff added: nothing to wait for
    assert src["dest_address"] == agents.lookup(dst)["ip"]  # no virtual address
    assert 0 < rec["decided_at"] == src["decided_at"]
    ports = {v["me"]["host"]: v["me"]["port"] for v in prepared if v["role"] != "source"}
    assert all(ports[p["to"]] == p["port"] for p in r["paths"])  # the roles' virtual ports
    assert {n: sw.cookies() for n, sw in fab.switches.items()} == base
