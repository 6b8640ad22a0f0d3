"""``mn --custom topologies/mn.py --switch smtd,...,ports=afxdp-nonpmd`` with AF_XDP ports.

Its own module: the testbeds of ``test_afxdp`` are module-scoped and hold the machine-wide
testbed lock for the whole module, which this test takes itself."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]


def test_mn_custom_switch_with_afxdp_ports(tmp_path):
    """``sudo mn --custom topologies/mn.py --switch smtd,...,ports=afxdp-nonpmd`` against our
    controller: the bridges get AF_XDP ports and pingall passes."""
    import json
    import os
    import sys
    from pathlib import Path

    from experiments.testbed import acquire_lock, free_port, wait_listening
    from topologies.base import describe
    from topologies.linear import LinearTopo
    from topologies.ovs import afxdp_missing

    why = afxdp_missing()
    if why:
        pytest.skip(f"no AF_XDP switch ports here: {why}")
    root = Path(__file__).resolve().parents[2]
    topo_file = tmp_path / "topo.json"
    topo_file.write_text(json.dumps(describe(LinearTopo(2, 1))))
    port = free_port(6750)
    lock = acquire_lock()
    ctl = subprocess.Popen([sys.executable, "-m", "controllers", "--topology", str(topo_file),
                            "--mgmt", str(tmp_path / "m.sock"), "--port", str(port)],
                           cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = subprocess.CompletedProcess([], 1, "", "")
    try:
        wait_listening(port, 20, ctl)
        # after pingall, before mn stops the bridges, ask OVS for a port type (--post script)
        post = tmp_path / "post.mn"
        post.write_text(f"sh ovs-vsctl get interface s1-eth1 type > {tmp_path}/type\n")
        r = subprocess.run(
            ["mn", "--custom", str(root / "topologies" / "mn.py"), "--topo", "linear,2,1",
             "--switch", "smtd,protocols=OpenFlow13,datapath=user,ports=afxdp-nonpmd",
             "--controller", f"remote,ip=127.0.0.1,port={port}", "--post", str(post),
             "--test", "pingall"],
            capture_output=True, text=True, timeout=120, cwd="/")
        assert "Results: 0% dropped" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
        assert (tmp_path / "type").read_text().strip() == "afxdp-nonpmd"
    finally:
        ctl.terminate()
        ctl.wait(5)
        if "Results: 0% dropped" not in r.stdout + r.stderr:
            from experiments.clean import clean  # what a failed mn left behind; never `mn -c`
            clean(lock_held=True)
        os.close(lock)
