"""``mn --custom topologies/mn.py --switch smtd,...,ports=afxdp-nonpmd`` with AF_XDP ports.

Its own module: the testbeds of ``test_afxdp`` are module-scoped and hold the machine-wide
testbed lock for the whole module, which this test takes itself."""

from __future__ import annotations

import pytest

from .conftest import run_mn

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]


def test_mn_custom_switch_with_afxdp_ports(tmp_path):
    """``sudo mn --custom topologies/mn.py --switch smtd,...,ports=afxdp-nonpmd`` against our
    controller: the bridges get AF_XDP ports and pingall passes."""
    from topologies.linear import LinearTopo
    from topologies.ovs import afxdp_missing

    why = afxdp_missing()
    if why:
        pytest.skip(f"no AF_XDP switch ports here: {why}")
    # after pingall, before mn stops the bridges, ask OVS for a port type (--post script)
    post = tmp_path / "post.mn"
    post.write_text(f"sh ovs-vsctl get interface s1-eth1 type > {tmp_path}/type\n")
    out = run_mn(tmp_path, LinearTopo(2, 1),
                 ["--topo", "linear,2,1",
                  "--switch", "smtd,protocols=OpenFlow13,datapath=user,ports=afxdp-nonpmd",
                  "--post", str(post), "--test", "pingall"], port_from=6750)
    assert "Results: 0% dropped" in out, out[-4000:]
    assert (tmp_path / "type").read_text().strip() == "afxdp-nonpmd"
