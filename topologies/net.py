"""Start a topology as a real Mininet network and describe it for the controller.

``start_network`` builds the Mininet network with OVS switches (OpenFlow 1.3, fail mode secure,
userspace datapath unless the kernel module exists) attached to a remote controller, turns off
transmit checksum offload on host interfaces under the userspace datapath (TCP fails otherwise:
the userspace datapath never fills in a partial checksum; and with it TSO goes, so no segment
larger than the MTU reaches an AF_XDP port)
and drops link delay/loss where the kernel has no netem, with a warning. The JSON-able
description for the controller comes from ``topologies.base.describe`` (port numbers are fixed by
the Topo, and Mininet asks OVS for exactly those). The switch-side ports are plain netdev ports
or AF_XDP ports (``topologies.ovs.PORT_KINDS``): ``start_network(topo, ports=...)``, else the
topo's ``switch_ports`` attribute (set by a scenario's ``topology.ports``), else the default,
with a fallback to netdev where AF_XDP is missing. Attacker hosts get a private tmpfs over each
of ``attacker_private_dirs`` (Mininet ``privateDirs``, in their own mount namespace), so the
management plane's folder is invisible from inside them. Called by ``experiments.testbed.Testbed``
(through which the runner, monitor-eval, the benchmarks and the root tests start networks).
"""

from __future__ import annotations

import functools
import logging
import subprocess

from mininet.link import TCLink
from mininet.net import Mininet
from mininet.node import Node, OVSSwitch, RemoteController
from mininet.topo import Topo

from topologies.ovs import datapath_type, pmd_settings, port_options, resolve_ports

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


class PortSwitch(OVSSwitch):
    """An OVS bridge whose ports are added as ``ports`` (a ``PORT_KINDS`` name): Mininet's own
    ``add-port ... -- set Interface`` command gets the AF_XDP type and options appended, so the
    port is created as such (no netdev port first). ``mn --switch smtd,ports=afxdp`` uses it."""

    def __init__(self, name: str, ports: str = "netdev", **params: object) -> None:
        super().__init__(name, **params)
        self.port_kind = ports
        self.port_opts = port_options(ports)

    def intfOpts(self, intf: object) -> str:  # noqa: N802 (Mininet's name)
        opts = super().intfOpts(intf)
        if not self.port_opts:
            return opts
        if not opts:  # only on old OVS, which has no AF_XDP anyway
            return f" -- set Interface {intf} {self.port_opts}"
        return f"{opts} {self.port_opts}"

    @classmethod
    def batchShutdown(cls, switches: list, run: object = None) -> list:  # noqa: N802
        """Mininet's shutdown of all bridges, then the PMD core setting given up (it is
        machine-wide, and netdev networks after this one need none)."""
        done = super().batchShutdown(switches, **({"run": run} if run else {}))
        if any(getattr(s, "port_kind", "") == "afxdp" for s in switches):
            release_ports()
        return done


def switch_class(datapath: str | None = None, ports: str = "netdev") -> functools.partial:
    """OVS, OpenFlow 1.3, fail mode secure, on the userspace or kernel datapath, with switch
    ports of kind ``ports``."""
    return functools.partial(PortSwitch, protocols="OpenFlow13", failMode="secure",
                             datapath=datapath or datapath_type(), ports=ports)


class MnSwitch(PortSwitch):
    """``mn --switch smtd,ports=KIND,...``: a ``PortSwitch`` whose port kind is resolved (AF_XDP
    checked, netdev fallback with a notice) and prepared once per ``mn`` run (a class, since
    ``mn`` subclasses what ``--switch`` names to bind its arguments)."""

    def __init__(self, name: str, ports: str = "netdev", **params: object) -> None:
        kind = _mn_ports(ports, str(params.get("datapath", "kernel")))
        super().__init__(name, ports=kind, **params)


@functools.cache
def _mn_ports(requested: str, datapath: str) -> str:
    kind = resolve_ports(requested, datapath)  # logs the one-line notice on a fallback
    prepare_ports(kind)
    return kind


def prepare_ports(kind: str) -> None:
    """Open vSwitch settings ``kind`` needs before its ports are added (a PMD core for afxdp)."""
    args = pmd_settings(kind)
    if args:
        subprocess.run(["ovs-vsctl", "--timeout=10", *args], check=True, capture_output=True)


def release_ports() -> None:
    """Undo ``prepare_ports``: no PMD core requested any more."""
    subprocess.run(["ovs-vsctl", "--timeout=10", "remove", "Open_vSwitch", ".", "other_config",
                    "pmd-cpu-mask"], capture_output=True)


def hide_from_attackers(topo: Topo, dirs: list[str]) -> list[str]:
    """Give every attacker host of ``topo`` a private tmpfs over each of ``dirs``; returns the
    attacker hosts' names."""
    attackers = [h for h in topo.hosts() if topo.nodeInfo(h).get("attacker")]
    for h in attackers:
        info = dict(topo.nodeInfo(h))
        info["privateDirs"] = [*info.get("privateDirs", []), *dirs]
        topo.setNodeInfo(h, info)
    return attackers


class TestbedController(RemoteController):
    """The controller node: the os-ken process runs outside Mininet. Mininet's
    ``RemoteController.stop()`` does nothing, so ``net.stop()`` left this node's shell (a
    ``bash -is mininet:c0``) running until the process that built the network exited, one per
    trial of a sweep; here stopping it ends the shell, as for any other node."""

    def stop(self, deleteIntfs: bool = False) -> None:  # noqa: N803 (Mininet's name)
        Node.stop(self, deleteIntfs)


def start_network(topo: Topo, controller_port: int = 6653, wait_connected: float = 30.0,
                  ports: str | None = None,
                  attacker_private_dirs: list[str] | None = None) -> Mininet:
    """Build and start ``topo`` with switch ports ``ports`` (None: the topo's ``switch_ports``
    or the default), attacker hosts hidden from ``attacker_private_dirs``; returns the running
    network (caller must ``net.stop()``)."""
    strip_unsupported_link_opts(topo)
    if attacker_private_dirs:
        hide_from_attackers(topo, attacker_private_dirs)
    dp = datapath_type()
    kind = resolve_ports(ports or getattr(topo, "switch_ports", None), dp)
    prepare_ports(kind)
    net = Mininet(topo=topo, switch=switch_class(dp, kind), link=TCLink, controller=None,
                  autoSetMacs=False, autoStaticArp=False, build=False, waitConnected=False)
    net.addController("c0", controller=TestbedController, ip="127.0.0.1", port=controller_port)
    try:
        net.build()
        net.start()
        for h in net.hosts:
            for intf in h.intfList():
                if dp == "user" and intf.name != "lo":
                    h.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
            h.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        net.switch_ports = kind  # type: ignore[attr-defined]  # what the network really got
        if wait_connected and not net.waitConnected(timeout=wait_connected):
            raise RuntimeError("switches did not connect to the controller within "
                               f"{wait_connected:.0f} s: is it running on port {controller_port}?")
    except BaseException:
        net.stop()
        raise
    return net
