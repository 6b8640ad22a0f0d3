"""The bounds of a role's listener (hosts.roles.base): one connection per sender key within a
migration, a handshake deadline, a connection cap, pending connections closed on close(). Real
leader and intermediate roles in this process on 127.0.0.1, test-held keys for their peers."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, load_public, public_hex
from hosts.protocol.plan import Endpoint, IntermediateView, LeaderView, Peer
from hosts.roles.base import CONN_SLACK, AgentContext
from hosts.roles.intermediate import Intermediate
from hosts.roles.leader import Leader
from hosts.wire import FrameType, build_frame

IP = "127.0.0.1"


def _ctx(host: str, key: X25519PrivateKey) -> AgentContext:
    return AgentContext(host=host, ip=IP, static=key, workdir="/nonexistent")


def _ep(host: str, key: X25519PrivateKey) -> Endpoint:
    return Endpoint(host, IP, "", 0, public_hex(key))


def _connect(port: int, to: X25519PrivateKey, me: X25519PrivateKey, mig: str) -> Channel:
    return Channel.connect(IP, IP, port, load_public(public_hex(to)), me, mig, timeout=3,
                           io_timeout=3)


def _wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture()
def relays():
    """A leader (n=2) and one intermediate relaying to it; the test holds the source's key and
    the other intermediate's."""
    mig = "m-bounds"
    lk, ik, other, src = (X25519PrivateKey.generate() for _ in range(4))
    leader = Leader(_ctx("h5", lk), LeaderView(
        migration=mig, mode="stealth", me=_ep("h5", lk), stall_timeout_s=5.0, n=2, k=2,
        dest_pubkey=public_hex(X25519PrivateKey.generate()),
        intermediate_pubkeys=[public_hex(ik), public_hex(other)]))
    lport = leader.prepare()["port"]
    inter = Intermediate(_ctx("h2", ik), IntermediateView(
        migration=mig, mode="stealth", me=_ep("h2", ik), stall_timeout_s=5.0,
        leader=Peer(IP, lport, public_hex(lk)), source_pubkey=public_hex(src)))
    iport = inter.prepare()["port"]
    yield dict(mig=mig, leader=leader, lport=lport, lk=lk, inter=inter, iport=iport, ik=ik,
               other=other, src=src)
    inter.close()
    leader.close()


def test_a_repeated_sender_is_refused_at_the_intermediate_and_the_leader(relays) -> None:
    r = relays
    up = _connect(r["iport"], r["ik"], r["src"], r["mig"])  # the source, once
    up.send(build_frame(FrameType.SHARE, b"\x01" * 33))
    _wait(lambda: r["inter"].downstream is not None)
    assert r["inter"].state == "relaying"
    with pytest.raises(ChannelError):  # the source's key again: refused before message 2
        _connect(r["iport"], r["ik"], r["src"], r["mig"])
    _wait(lambda: r["leader"].conns)
    assert len(r["leader"].conns) == 1  # the intermediate's own hop
    with pytest.raises(ChannelError):  # that intermediate's key again, at the leader
        _connect(r["lport"], r["lk"], r["ik"], r["mig"])
    second = _connect(r["lport"], r["lk"], r["other"], r["mig"])  # the other key: let in
    second.send(build_frame(FrameType.SHARE, b"\x02" * 33))
    _wait(lambda: len(r["leader"].conns) == 2)
    assert len(r["leader"].conns) == 2
    _wait(lambda: r["inter"].stats["rejected"] >= 1 and r["leader"].stats["rejected"] >= 1)
    assert r["inter"].stats["rejected"] == 1 and r["leader"].stats["rejected"] == 1
    up.close()
    second.close()


def test_a_silent_connection_is_closed_at_the_handshake_deadline(relays) -> None:
    r = relays
    r["inter"].stall = 1.0  # the deadline is min(HANDSHAKE_S, stall)
    s = socket.create_connection((IP, r["iport"]))
    s.settimeout(5)
    t0 = time.monotonic()
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    assert 0.8 < time.monotonic() - t0 < 3
    s.close()
    _wait(lambda: r["inter"]._pending == set())
    assert r["inter"]._serving == 0


def test_connections_beyond_the_cap_are_closed_at_once_and_close_ends_the_rest(relays) -> None:
    r = relays
    inter = r["inter"]
    cap = inter.max_connections()
    assert cap == 1 + CONN_SLACK
    threads = threading.active_count()
    held = [socket.create_connection((IP, r["iport"])) for _ in range(cap + 20)]
    _wait(lambda: inter.stats["rejected"] >= 20)
    assert inter.stats["rejected"] == 20 and inter._serving == cap
    assert threading.active_count() <= threads + cap
    open_ = 0
    for s in held:
        s.settimeout(0.2)
        try:
            open_ += s.recv(10) != b""  # closed ones read EOF (or reset) at once
        except TimeoutError:
            open_ += 1
        except ConnectionResetError:
            pass
    assert open_ == cap
    inter.close()  # the pending ones are closed now, not at their deadline
    _wait(lambda: inter._serving == 0, timeout=2)
    assert inter._pending == set() and inter._serving == 0
    for s in held:
        s.close()
