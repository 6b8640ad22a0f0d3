"""Vantage points in the real network: a switch mirror feeds the attacker host's capture."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def bed():
    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    with Testbed(FatTreeTopo(4, attackers="e1+c1+e2"), seed=3) as tb:
        yield tb


def test_mirror_delivers_the_switch_traffic_to_the_attacker(bed, tmp_path):
    from attacks.capture import ip_to_int, read_pcap
    from experiments import vantage

    tb = bed
    edge = vantage.start(tb, "switch:e1", tmp_path)
    core = vantage.start(tb, "switch:c1", tmp_path)
    glob = vantage.start(tb, "global", tmp_path)
    try:
        # h1 sits on e1; h16 is in another pod. Traffic the attacker is not part of.
        out = tb.host("h1").cmd(f"ping -c 5 -i 0.2 -W 1 {tb.ip('h16')}")
        tb.host("h3").cmd(f"ping -c 3 -i 0.2 -W 1 {tb.ip('h5')}")
        time.sleep(0.5)
    finally:
        stats = {v.name: vantage.stop(v) for v in (edge, core, glob)}
    assert stats["switch-e1"].get("captured", 0) > 0
    cap = read_pcap(edge.pcap)
    h1, h16 = ip_to_int(tb.ip("h1")), ip_to_int(tb.ip("h16"))
    pk = cap.packets
    answered = int(re.search(r"(\d+) received", out).group(1))
    assert answered >= 3, out
    assert ((pk["src"] == h1) & (pk["dst"] == h16) & (pk["proto"] == 1)).sum() >= answered
    assert ((pk["src"] == h16) & (pk["dst"] == h1)).sum() >= answered
    # the edge switch of h1 never carries h3 -> h5 (other edge switch), and the attacker's own
    # host never sent anything
    x1 = ip_to_int(tb.ip("x1"))
    assert not (pk["src"] == x1).any()
    gl = read_pcap(glob.pcap).packets
    assert ((gl["src"] == ip_to_int(tb.ip("h3"))) & (gl["dst"] == ip_to_int(tb.ip("h5")))).sum() \
        >= 3
    assert stats["global"].get("dropped_by_kernel", 0) == 0


def test_mirror_sees_flows_that_began_before_it(bed, tmp_path):
    """A trial's traffic runs (settles) before its captures start: the userspace datapath's
    cached flows must not bypass a mirror added later (they did, for a flow's whole life)."""
    from attacks.capture import ip_to_int, read_pcap
    from experiments import vantage

    tb = bed
    h3, h16 = tb.host("h3"), tb.host("h16")  # h3 sits on e2, h16 in another pod
    procs = [h3.popen(["iperf3", "-s", "-1", "-p", "5301"])]
    try:
        time.sleep(0.5)
        client = h16.popen(["iperf3", "-c", tb.ip("h3"), "-p", "5301", "-t", "5", "-b", "10M"])
        procs.append(client)
        time.sleep(1.5)  # the flow is established and its datapath flows are cached
        edge = vantage.start(tb, "switch:e2", tmp_path)
        time.sleep(2.0)
        vantage.stop(edge)
        assert client.wait(15) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    pk = read_pcap(edge.pcap).packets
    a, b = ip_to_int(tb.ip("h16")), ip_to_int(tb.ip("h3"))
    to_h3 = (pk["src"] == a) & (pk["dst"] == b) & (pk["plen"] > 0)
    from_h3 = (pk["src"] == b) & (pk["dst"] == a)
    # 10 Mbit/s for 2 s is ~1,700 full segments; the ACKs come back at least every few
    assert to_h3.sum() > 500, f"{to_h3.sum()} data packets of the older flow seen"
    assert from_h3.sum() > 100, f"{from_h3.sum()} packets back of the older flow seen"
