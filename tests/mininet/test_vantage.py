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

    with Testbed(FatTreeTopo(4, attackers="e1+c1"), seed=3) as tb:
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
