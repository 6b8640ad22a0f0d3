"""Start a topology as a real Mininet network and describe it for the controller.

``start_network`` builds the Mininet network with OVS switches (OpenFlow 1.3, fail mode secure,
userspace datapath unless the kernel module exists) attached to a remote controller, turns off
transmit checksum offload on host interfaces under the userspace datapath (TCP fails otherwise)
and drops link delay/loss where the kernel has no netem, with a warning. The JSON-able
description for the controller comes from ``topologies.base.describe`` (port numbers are fixed by
the Topo, and Mininet asks OVS for exactly those). Attacker hosts get a private tmpfs over each of
``attacker_private_dirs`` (Mininet ``privateDirs``, in their own mount namespace), so the
management plane's folder is invisible from inside them. Called by ``experiments.testbed.Testbed``
(through which the runner, monitor-eval, the benchmarks and the root tests start networks).
"""

from __future__ import annotations

import functools
import logging
import subprocess

from mininet.link import TCLink
from mininet.net import Mininet
from mininet.node import OVSSwitch, RemoteController
from mininet.topo import Topo

from topologies.ovs import datapath_type

log = logging.getLogger(__name__)


@functools.cache
def netem_available() -> bool:
    """True when ``tc qdisc ... netem`` works on this kernel (tested on a throwaway dummy link)."""
    dev = "smtd-netem0"
    try:
        if subprocess.run(["ip", "link", "add", dev, "type", "dummy"],
                          capture_output=True).returncode != 0:
            return False
        r = subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"],
                           capture_output=True)
        return r.returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", dev], capture_output=True)


def strip_unsupported_link_opts(topo: Topo) -> list[str]:
    """Remove delay/loss/jitter from the topo's links where netem is missing; return warnings."""
    warnings: list[str] = []
    if netem_available():
        return warnings
    for a, b, info in topo.links(withInfo=True):
        dropped = [k for k in ("delay", "loss", "jitter") if info.get(k)]
        for k in dropped:
            info.pop(k)
        if dropped:
            warnings.append(f"link {a}-{b}: {', '.join(dropped)} ignored (no netem in this kernel; "
                            "bandwidth shaping still applies)")
    for w in warnings:
        log.warning(w)
    return warnings


def switch_class(datapath: str | None = None) -> functools.partial:
    """OVS, OpenFlow 1.3, fail mode secure, on the userspace or kernel datapath."""
    return functools.partial(OVSSwitch, protocols="OpenFlow13", failMode="secure",
                             datapath=datapath or datapath_type())


def hide_from_attackers(topo: Topo, dirs: list[str]) -> list[str]:
    """Give every attacker host of ``topo`` a private tmpfs over each of ``dirs``; returns the
    attacker hosts' names."""
    attackers = [h for h in topo.hosts() if topo.nodeInfo(h).get("attacker")]
    for h in attackers:
        info = dict(topo.nodeInfo(h))
        info["privateDirs"] = [*info.get("privateDirs", []), *dirs]
        topo.setNodeInfo(h, info)
    return attackers


def start_network(topo: Topo, controller_port: int = 6653, wait_connected: float = 30.0,
                  attacker_private_dirs: list[str] | None = None) -> Mininet:
    """Build and start ``topo``; returns the running network (caller must ``net.stop()``)."""
    strip_unsupported_link_opts(topo)
    if attacker_private_dirs:
        hide_from_attackers(topo, attacker_private_dirs)
    dp = datapath_type()
    net = Mininet(topo=topo, switch=switch_class(dp), link=TCLink, controller=None,
                  autoSetMacs=False, autoStaticArp=False, build=False, waitConnected=False)
    net.addController("c0", controller=RemoteController, ip="127.0.0.1", port=controller_port)
    try:
        net.build()
        net.start()
        for h in net.hosts:
            for intf in h.intfList():
                if dp == "user" and intf.name != "lo":
                    h.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
            h.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        if wait_connected and not net.waitConnected(timeout=wait_connected):
            raise RuntimeError("switches did not connect to the controller within "
                               f"{wait_connected:.0f} s: is it running on port {controller_port}?")
    except BaseException:
        net.stop()
        raise
    return net
