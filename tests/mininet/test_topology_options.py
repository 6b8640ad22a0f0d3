"""Topology options on the real network: HTB bandwidth, netem fallback, ``mn --custom``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    from experiments.testbed import acquire_lock, free_port, wait_listening
    from topologies.base import describe
    from topologies.linear import LinearTopo

    topo_file = tmp_path / "topo.json"
    topo_file.write_text(json.dumps(describe(LinearTopo(3, 1))))
    port = free_port(6700)
    lock = acquire_lock()
    ctl = subprocess.Popen([sys.executable, "-m", "controllers", "--topology", str(topo_file),
                            "--mgmt", str(tmp_path / "m.sock"), "--port", str(port)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = subprocess.CompletedProcess([], 1, "", "")
    try:
        wait_listening(port, 20, ctl)
        r = subprocess.run(
            ["mn", "--custom", str(ROOT / "topologies" / "mn.py"), "--topo", "linear,3,1",
             "--switch", "ovs,protocols=OpenFlow13,datapath=user",
             "--controller", f"remote,ip=127.0.0.1,port={port}", "--test", "pingall"],
            capture_output=True, text=True, timeout=120, cwd="/")
        assert "Results: 0% dropped" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    finally:
        ctl.terminate()
        ctl.wait(5)
        if "Results: 0% dropped" not in r.stdout + r.stderr:
            # what a failed mn left behind; never `mn -c`, which deletes /tmp/*.log and *.out
            from experiments.clean import clean
            clean(lock_held=True)
        os.close(lock)
