"""AF_XDP switch ports on the real network: the ports OVS reports, and ping, TCP and iperf3
between far hosts of a small leaf-spine over them. Skipped, with the reason, where this kernel
or this Open vSwitch has no AF_XDP (the network then falls back to netdev ports)."""

from __future__ import annotations

import subprocess

import pytest

# the time includes waiting for the machine-wide testbed lock, which other runs may hold long
pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module", params=["afxdp-nonpmd", "afxdp"])
def afxdp_bed(request):
    from experiments.testbed import Testbed
    from topologies.leafspine import LeafSpineTopo
    from topologies.ovs import afxdp_missing

    why = afxdp_missing()
    if why:
        pytest.skip(f"no AF_XDP switch ports here: {why}")
    topo = LeafSpineTopo(2, 2, 2)
    topo.switch_ports = request.param
    with Testbed(topo, seed=4) as tb:
        yield tb, request.param


def _switch_intfs(tb):
    return [i.name for sw in tb.net.switches for i in sw.intfList() if i.name != "lo"]


def test_every_switch_port_is_an_afxdp_port(afxdp_bed):
    tb, kind = afxdp_bed
    assert tb.net.switch_ports == kind
    names = _switch_intfs(tb)
    assert len(names) == 4 + 2 * 2 * 2  # 4 host ports, 2 leaves x 2 spines (both ends)
    for name in names:
        typ = subprocess.run(["ovs-vsctl", "get", "interface", name, "type"],
                             capture_output=True, text=True, check=True).stdout.strip()
        err = subprocess.run(["ovs-vsctl", "get", "interface", name, "error"],
                             capture_output=True, text=True).stdout.strip()
        assert typ == kind, f"{name}: type {typ}, error {err}"
        # the kernel's view: an XDP program attached in generic (skb) mode to the veth
        link = subprocess.run(["ip", "-d", "link", "show", name], capture_output=True,
                              text=True, check=True).stdout
        assert "xdpgeneric" in link, f"{name}: no generic XDP program: {link}"


def test_ping_tcp_and_iperf3_between_far_hosts(afxdp_bed):
    tb, _ = afxdp_bed
    a, b = tb.net.get("h1"), tb.net.get("h4")  # different leaves: leaf - spine - leaf
    out = a.cmd(f"ping -c 5 -i 0.2 -W 2 {b.IP()}")
    assert " 0% packet loss" in out, out
    # plain TCP with a payload larger than one segment, checked byte for byte
    srv = b.popen(["python3", "-c", "import socket,hashlib;s=socket.create_server(('',7777));"
                   "c,_=s.accept();d=b''\nwhile (x:=c.recv(65536)): d+=x\n"
                   "print(hashlib.sha256(d).hexdigest(), len(d))"],
                  stdout=subprocess.PIPE, text=True)
    try:
        import time

        time.sleep(0.5)
        sent = a.cmd("python3 -c \"import socket,hashlib,os;d=os.urandom(3_000_000);"
                     f"s=socket.create_connection(('{b.IP()}',7777));s.sendall(d);s.close();"
                     "print(hashlib.sha256(d).hexdigest(), len(d))\"").strip()
        got, _ = srv.communicate(timeout=30)
    finally:
        srv.kill()
    assert got.strip() == sent and sent.endswith(" 3000000"), (sent, got)
    mbps = tb.iperf("h1", "h4", seconds=3)["sum_received"]["bits_per_second"] / 1e6
    assert mbps > 10, f"iperf3 h1 -> h4 over AF_XDP ports: {mbps:.1f} Mbit/s"
