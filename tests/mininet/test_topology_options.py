"""Topology options on the real network: HTB bandwidth, netem fallback, ``mn --custom``."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_mn

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def test_link_bandwidth_is_shaped_by_htb():
    from experiments.testbed import Testbed
    from topologies.linear import LinearTopo

    with Testbed(LinearTopo(2, 1, bw=8)) as tb:
        mbps = tb.iperf("h1", "h2", seconds=3)["sum_received"]["bits_per_second"] / 1e6
        assert 2 < mbps < 9.5, f"{mbps:.1f} Mbit/s over 8 Mbit/s links"


def test_delay_without_netem_is_a_warning_not_a_crash():
    from topologies.linear import LinearTopo
    from topologies.net import netem_available, strip_unsupported_link_opts

    topo = LinearTopo(2, 1)
    a, b = topo.links()[0]
    topo.linkInfo(a, b)["delay"] = "5ms"
    warnings = strip_unsupported_link_opts(topo)
    if netem_available():
        assert warnings == [] and topo.linkInfo(a, b)["delay"] == "5ms"
    else:
        assert warnings and "no netem" in warnings[0]
        assert "delay" not in topo.linkInfo(a, b)


def test_mn_custom_command_line_with_our_controller(tmp_path):
    """The README's `sudo mn --custom ...` line works against our controller."""
    from topologies.linear import LinearTopo

    out = run_mn(tmp_path, LinearTopo(3, 1),
                 ["--topo", "linear,3,1", "--switch", "ovs,protocols=OpenFlow13,datapath=user",
                  "--test", "pingall"], port_from=6700)
    assert "Results: 0% dropped" in out, out[-4000:]
