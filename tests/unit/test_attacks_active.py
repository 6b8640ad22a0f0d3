"""Active attacks: probes against canned scapy answers and real loopback services (no root)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from attacks.active import (
    LatencyResult,
    LatencySeries,
    analyze_traceroute,
    arp_sweep,
    compare_sweeps,
    first_packet_latency,
    infer_new_rules,
    locate_service,
    parse_banner,
    ping_sweep,
    service_scan,
    tcp_rtt,
    traceroute,
)

LIVE = {"10.0.0.1": "00:00:00:00:00:01", "10.0.0.9": "00:00:00:00:00:09"}


def fake_srp(pkt, **kw):
    answered = []
    for sent in pkt:  # scapy expands pdst=[...] into one packet per address
        ip = sent[ARP].pdst
        if ip in LIVE:
            sent.sent_time = 100.0
            recv = Ether(src=LIVE[ip]) / ARP(op=2, psrc=ip, hwsrc=LIVE[ip], pdst="10.0.0.200")
            recv.time = 100.002
            answered.append((sent, recv))
    return answered, []


def fake_sr_ping(pkts, **kw):
    answered = []
    for sent in pkts:
        if sent[IP].dst in LIVE:
            sent.sent_time = 50.0
            recv = IP(src=sent[IP].dst, dst="10.0.0.200", ttl=64) / ICMP(type=0)
            recv.time = 50.001
            answered.append((sent, recv))
    return answered, []


def test_arp_and_ping_sweeps_on_canned_answers():
    arp = arp_sweep("10.0.0.0/28", srp=fake_srp)
    assert arp.probed == 14 and [a.ip for a in arp.alive] == ["10.0.0.1", "10.0.0.9"]
    assert arp.alive[1].mac == LIVE["10.0.0.9"] and arp.alive[1].rtt_s == pytest.approx(0.002)
    ping = ping_sweep(["10.0.0.1", "10.0.0.5", "10.0.0.9"], sr=fake_sr_ping)
    assert [a.ip for a in ping.alive] == ["10.0.0.1", "10.0.0.9"] and ping.alive[0].ttl == 64
    LIVE["10.0.0.12"] = "00:00:00:00:00:0c"
    try:
        after = arp_sweep("10.0.0.0/28", srp=fake_srp)
    finally:
        del LIVE["10.0.0.12"]
    assert compare_sweeps(arp, after)["appeared"] == ["10.0.0.12"]


def _trace_sr(routers):
    def sr(pkts, **kw):
        answered = []
        for sent in pkts:
            ttl = sent[IP].ttl
            sent.sent_time = 1.0
            if ttl <= len(routers):
                recv = IP(src=routers[ttl - 1]) / ICMP(type=11)
            else:
                recv = IP(src=sent[IP].dst) / TCP(flags="SA")
            recv.time = 1.001
            answered.append((sent, recv))
        return answered, []

    return sr


def test_traceroute_through_ovs_reveals_nothing():
    res = traceroute("10.0.0.9", max_ttl=4, sr=_trace_sr([]))
    a = analyze_traceroute(res)
    assert a.reached_at_ttl == 1 and not a.reveals_path and a.routers == []
    assert "no switch" in a.summary


def test_traceroute_with_ttl_decrement_lists_the_hops():
    res = traceroute("10.0.0.9", max_ttl=5, sr=_trace_sr(["10.0.1.1", "10.0.2.1"]))
    a = analyze_traceroute(res)
    assert a.reached_at_ttl == 3 and a.routers == ["10.0.1.1", "10.0.2.1"] and a.reveals_path


def test_banners():
    assert parse_banner('{"vm": "vm1", "host": "h3", "counter": 12, "ticks": 4}') == (
        "vm1",
        12,
        "h3",
    )
    assert parse_banner("web-7 served 42") == ("web-7 served", 42, None)
    assert parse_banner(None) == (None, None, None)


class Service:
    """A VM-like service on a loopback address: one JSON line per connection."""

    def __init__(self, ip: str, vm: str, counter: int) -> None:
        self.vm, self.counter = vm, counter
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.counter += 1
                conn.sendall(
                    json.dumps({"vm": self.vm, "host": "hX", "counter": self.counter}).encode()
                    + b"\n"
                )

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        except OSError:
            pass
        self.sock.close()


def _bind_port(ip: str, port: int) -> Service:
    s = Service.__new__(Service)
    s.vm, s.counter = "vm1", 0
    s.sock = socket.socket()
    s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.sock.bind((ip, port))
    s.sock.listen(8)
    s.port = port
    threading.Thread(target=s._serve, daemon=True).start()
    return s


def test_service_scan_finds_where_the_vm_went():
    vm = Service("127.0.0.2", "vm1", 5)
    port = vm.port
    decoy = _bind_port("127.0.0.3", port)
    decoy.vm = "db"
    targets = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    before = service_scan(targets, port, timeout=0.5)
    assert [p.open for p in before] == [True, True, False, False]
    # the VM moves to 127.0.0.4 with its state (counter keeps growing); the source stops serving
    moved = _bind_port("127.0.0.4", port)
    moved.counter = vm.counter + 3
    vm.close()
    try:
        after = service_scan(targets, port, timeout=0.5)
    finally:
        moved.close()
        decoy.close()
    # two services answered before: the attacker names the VM it is after
    assert locate_service(before, after).identity is None
    loc = locate_service(before, after, identity="vm1")
    assert loc.identity == "vm1" and loc.previous == ["127.0.0.2"]
    assert "127.0.0.2" not in dict(loc.ranking)  # the source stopped answering
    assert loc.best == "127.0.0.4" and loc.ranking[0][1] == 3.0
    assert dict(loc.ranking)["127.0.0.3"] == 0.5
    # with one service seen before, its identity is taken as the target
    only_vm = [p for p in before if p.ip != "127.0.0.3"]
    assert locate_service(only_vm, after).best == "127.0.0.4"


def test_first_packet_latency_sees_a_flow_setup():
    delays = {
        "10.0.0.9": [0.030, 0.001, 0.0011, 0.0009],
        "10.0.0.5": [0.0012, 0.001, 0.0011, 0.001],
    }
    calls: dict[str, int] = {}

    def fake_rtt(ip, port, timeout):
        i = calls.get(ip, 0)
        calls[ip] = i + 1
        return delays[ip][i]

    res = first_packet_latency(["10.0.0.9", "10.0.0.5"], probes=4, gap_s=0, rtt=fake_rtt)
    verdicts = {r.ip: r.verdict for r in infer_new_rules(res)}
    assert verdicts == {"10.0.0.9": "table-miss", "10.0.0.5": "rule-present"}
    silent = LatencyResult([LatencySeries("10.0.0.7", 7000, [None, None])])
    assert infer_new_rules(silent)[0].verdict == "no-answer"


def test_tcp_rtt_on_loopback_counts_a_refusal_as_an_answer():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: the kernel answers with a RST
    rtt = tcp_rtt("127.0.0.1", port, timeout=0.5)
    assert rtt is not None and rtt < 0.5
    res = first_packet_latency(["127.0.0.1"], port=port, probes=3, gap_s=0)
    assert all(r is not None for r in res.series[0].rtts_s)
