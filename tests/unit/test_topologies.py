"""Topology shapes and their description, without root."""

import subprocess
from pathlib import Path

import pytest

from topologies import registry
from topologies.base import attacker_ip, describe, host_ip, mac_for
from topologies.fattree import FatTreeTopo
from topologies.leafspine import LeafSpineTopo
from topologies.linear import LinearTopo


@pytest.mark.parametrize("k,switches,hosts,links",
                         [(2, 5, 2, 6), (4, 20, 16, 48), (6, 45, 54, 162)])
def test_fattree_sizes(k, switches, hosts, links):
    t = FatTreeTopo(k)
    assert len(t.switches()) == switches
    assert len(t.tenant_hosts()) == hosts
    assert len(t.links()) == links  # k^3/4 host links + 2 * k^3/4 fabric links
    layers = list(t.layers.values())
    assert layers.count("core") == (k // 2) ** 2
    assert layers.count("edge") == layers.count("agg") == k * k // 2


def test_fattree_rejects_odd_k():
    with pytest.raises(ValueError, match="even"):
        FatTreeTopo(3)


def test_leafspine_and_linear():
    t = LeafSpineTopo(3, 2, 2)
    assert sorted(t.switches()) == ["l1", "l2", "l3", "s1", "s2"]
    assert len(t.hosts()) == 6 and len(t.links()) == 3 * 2 + 6
    t = LinearTopo(4, 2)
    assert len(t.switches()) == 4 and len(t.hosts()) == 8 and len(t.links()) == 3 + 8


def test_attackers_attach_to_named_switches():
    t = FatTreeTopo(4, attackers="c1+e3")
    d = describe(t)
    xs = [h for h in d["hosts"] if h["attacker"]]
    assert [(h["name"], h["switch"], h["ip"]) for h in xs] == [
        ("x1", "c1", "10.0.250.1"), ("x2", "e3", "10.0.250.2")]
    with pytest.raises(ValueError, match="no switch named"):
        FatTreeTopo(4, attackers="nope")


def test_describe_is_consistent():
    d = describe(FatTreeTopo(4))
    dpids = [s["dpid"] for s in d["switches"].values()]
    assert len(set(dpids)) == len(dpids) == 20
    # every switch port is used once
    used = [(link["a"], link["a_port"]) for link in d["links"]]
    used += [(link["b"], link["b_port"]) for link in d["links"]]
    used += [(h["switch"], h["port"]) for h in d["hosts"]]
    assert len(used) == len(set(used))
    ips = [h["ip"] for h in d["hosts"]]
    assert ips[:3] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"] and len(set(ips)) == 16
    assert all(h["switch"].startswith("e") for h in d["hosts"])


def test_addressing():
    assert host_ip(1) == "10.0.0.1" and host_ip(250) == "10.0.0.250" and host_ip(251) == "10.0.1.1"
    assert attacker_ip(3) == "10.0.250.3"
    assert mac_for("10.0.0.17") == "02:00:0a:00:00:11"
    with pytest.raises(ValueError):
        host_ip(0)


def test_registry_names():
    assert set(registry()) == {"fattree", "leafspine", "linear"}


MN_EXEC = """
import sys
path = sys.argv[1]
customs = {}
exec(compile(open(path).read(), path, "exec"), customs, customs)  # what `mn --custom` does
topo = customs["topos"]["linear"](3, 1)
print(sorted(customs["topos"]), len(topo.switches()), "__file__" in customs,
      sorted(customs["switches"]))
"""


def test_mn_custom_entry_file_finds_the_project_without_it_on_sys_path():
    """``mn --custom topologies/mn.py`` under Debian's python, run from /, gets every topology."""
    debian_python = Path("/usr/bin/python3")
    if not debian_python.exists():
        pytest.skip("no Debian python (Mininet's) here")
    entry = Path(__file__).resolve().parents[2] / "topologies" / "mn.py"
    r = subprocess.run([str(debian_python), "-c", MN_EXEC, str(entry)], cwd="/",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "['fattree', 'leafspine', 'linear'] 3 False ['smtd']"


# -- switch ports (AF_XDP or netdev): the pure parts ---------------------------------------------
def test_port_options_per_kind():
    from topologies.ovs import PORT_KINDS, port_options

    assert PORT_KINDS == ("netdev", "afxdp", "afxdp-nonpmd")
    assert port_options("netdev") == ""
    assert port_options("afxdp") == "type=afxdp options:xdp-mode=generic options:n_rxq=1"
    assert port_options("afxdp-nonpmd") == (
        "type=afxdp-nonpmd options:xdp-mode=generic options:n_rxq=1")
    with pytest.raises(ValueError, match="choose from netdev, afxdp, afxdp-nonpmd"):
        port_options("dpdk")


def test_pmd_core_only_for_afxdp():
    from topologies.ovs import pmd_settings

    assert pmd_settings("afxdp", cpus=2) == ["set", "Open_vSwitch", ".",
                                             "other_config:pmd-cpu-mask=0x2"]
    assert pmd_settings("afxdp", cpus=8)[-1] == "other_config:pmd-cpu-mask=0x80"
    assert pmd_settings("afxdp-nonpmd") == [] and pmd_settings("netdev") == []


def _bare_switch(kind, ofport=3):
    """A PortSwitch without a shell (no root): just what ``intfOpts`` reads."""
    from topologies.net import PortSwitch
    from topologies.ovs import port_options

    sw = PortSwitch.__new__(PortSwitch)
    sw.ports = {"e1-eth3": ofport}
    sw.port_kind, sw.port_opts = kind, port_options(kind)
    sw.isOldOVS = lambda: False
    return sw


def test_add_port_command_carries_the_afxdp_type():
    """What Mininet appends to ``ovs-vsctl add-port e1 e1-eth3``."""
    assert _bare_switch("netdev").intfOpts("e1-eth3") == (
        " -- set Interface e1-eth3 ofport_request=3")
    assert _bare_switch("afxdp-nonpmd").intfOpts("e1-eth3") == (
        " -- set Interface e1-eth3 ofport_request=3 type=afxdp-nonpmd options:xdp-mode=generic "
        "options:n_rxq=1")


def test_resolve_ports_falls_back_with_one_notice(monkeypatch, caplog):
    from topologies import ovs

    monkeypatch.delenv("STEALTH_MTD_PORTS", raising=False)
    monkeypatch.setattr(ovs, "afxdp_missing", lambda: None)
    assert ovs.resolve_ports(None, "user") == ovs.DEFAULT_PORTS
    assert ovs.resolve_ports("afxdp", "user") == "afxdp"
    assert ovs.resolve_ports("netdev", "user") == "netdev"
    assert ovs.resolve_ports("afxdp", "kernel") == "netdev"  # kernel ports are kernel ports
    monkeypatch.setenv("STEALTH_MTD_PORTS", "netdev")
    assert ovs.resolve_ports(None, "user") == "netdev"
    monkeypatch.setattr(ovs, "afxdp_missing", lambda: "no XDP sockets here")
    with caplog.at_level("WARNING", logger="topologies.ovs"):
        assert ovs.resolve_ports("afxdp-nonpmd", "user") == "netdev"
    assert [r.getMessage() for r in caplog.records] == [
        "switch ports: netdev instead of afxdp-nonpmd: no XDP sockets here"]
    with pytest.raises(ValueError, match="choose from"):
        ovs.resolve_ports("xdp", "user")
    monkeypatch.setattr(ovs, "afxdp_missing", lambda: None)
    monkeypatch.setattr(ovs.os, "cpu_count", lambda: 1)
    assert ovs.resolve_ports("afxdp", "user") == "afxdp-nonpmd"  # no core to spare for a PMD


def test_scenario_ports_key_is_checked_and_reaches_the_topology():
    from experiments.scenario import ScenarioError, from_dict
    from topologies.ovs import DEFAULT_PORTS

    base = {"name": "t", "topology": {"kind": "linear", "args": [6, 1]}, "modes": ["direct"]}
    assert from_dict(base).build_topology().switch_ports == DEFAULT_PORTS
    sc = from_dict({**base, "topology": {**base["topology"], "ports": "netdev"}})
    assert sc.build_topology().switch_ports == "netdev"
    with pytest.raises(ScenarioError, match="topology.ports = 'xdp': one of 'netdev', 'afxdp', "
                                            "'afxdp-nonpmd'"):
        from_dict({**base, "topology": {**base["topology"], "ports": "xdp"}})
    xdp = {**base, "topology": {**base["topology"], "ports": "afxdp"}}
    assert from_dict({**xdp, "attackers": {"vantage": []}}).topology.ports == "afxdp"
    with pytest.raises(ScenarioError, match="topology.ports = 'afxdp': the 'global' vantage"):
        from_dict({**xdp, "attackers": {"vantage": ["global"]}})


def test_shutdown_gives_up_the_pmd_core_only_after_afxdp(monkeypatch):
    from mininet.node import OVSSwitch

    from topologies import net

    released = []
    monkeypatch.setattr(OVSSwitch, "batchShutdown", classmethod(lambda cls, sw, run=None: sw))
    monkeypatch.setattr(net, "release_ports", lambda: released.append(True))
    sws = [_bare_switch("afxdp-nonpmd")]
    assert net.PortSwitch.batchShutdown(sws) == sws and released == []
    net.PortSwitch.batchShutdown([_bare_switch("afxdp")])
    assert released == [True]
