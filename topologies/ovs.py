"""Open vSwitch on this machine: is it running, start it, which datapath and switch ports to use.

Called by ``scripts/setup.sh`` (``python -m topologies.ovs ensure``), by ``topologies.net`` (to
pick the datapath and the kind of switch port), by ``experiments.testbed`` (before a network
starts) and by ``stealth-mtd clean``.

Switch ports (``PORT_KINDS``) on the userspace datapath: ``netdev`` is a plain Linux port that
ovs-vswitchd's main thread polls; ``afxdp`` and ``afxdp-nonpmd`` attach the switch-side veth
through an AF_XDP socket in generic (skb) mode, ``afxdp`` polled by a PMD thread on its own core,
``afxdp-nonpmd`` by the main thread. ``resolve_ports`` falls back to ``netdev`` with a one-line
notice where the kernel or this OVS build has no AF_XDP. AF_XDP ports bypass the root
namespace's packet taps (see ``DEFAULT_PORTS``). Debian's ``ovs-ctl`` starts the
daemons; after a killed run or a reboot their pid files may be stale, which this module clears
first.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger(__name__)

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
RUN_DIR = "/var/run/openvswitch"
DAEMONS = ("ovsdb-server", "ovs-vswitchd")


class OVSError(RuntimeError):
    """Open vSwitch is missing or would not start; the message says what to do."""


def _pid_alive(pidfile: str) -> bool:
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running() -> bool:
    """Both daemons alive and the database answering."""
    if not all(_pid_alive(f"{RUN_DIR}/{d}.pid") for d in DAEMONS):
        return False
    r = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True, text=True)
    return r.returncode == 0


def _clear_stale() -> list[str]:
    """Kill half-alive daemons and remove their stale pid files and control sockets."""
    removed = []
    for d in DAEMONS:
        pidfile = f"{RUN_DIR}/{d}.pid"
        if _pid_alive(pidfile):
            pid = int(open(pidfile).read().strip())
            os.kill(pid, signal.SIGTERM)
            removed.append(f"{d} (pid {pid})")
            time.sleep(0.5)
    for f in glob.glob(f"{RUN_DIR}/*.pid") + glob.glob(f"{RUN_DIR}/*.ctl"):
        try:
            os.unlink(f)
            removed.append(f)
        except FileNotFoundError:
            pass
    return removed


def ensure() -> str:
    """Start Open vSwitch unless it already runs; return what was done."""
    if shutil.which("ovs-vsctl") is None or not os.path.exists(OVS_CTL):
        raise OVSError("Open vSwitch is not installed: run `sudo make setup` "
                       "(Debian package openvswitch-switch)")
    if running():
        return "Open vSwitch already running"
    if os.geteuid() != 0:
        raise OVSError("Open vSwitch is not running and starting it needs root: sudo make setup")
    stale = _clear_stale()
    r = subprocess.run([OVS_CTL, "start", "--system-id=random"], capture_output=True, text=True)
    for _ in range(50):
        if running():
            extra = f" (cleared stale: {', '.join(stale)})" if stale else ""
            return f"Open vSwitch started, datapath {datapath_type()}{extra}"
        time.sleep(0.1)
    raise OVSError(f"ovs-ctl start failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")


def kernel_module_available() -> bool:
    """True when the openvswitch kernel module is loaded or loadable."""
    if os.path.isdir("/sys/module/openvswitch"):
        return True
    if shutil.which("modprobe") is None:
        return False
    r = subprocess.run(["modprobe", "-q", "openvswitch"], capture_output=True)
    return r.returncode == 0 and os.path.isdir("/sys/module/openvswitch")


_DATAPATH: str | None = None


def datapath_type() -> str:
    """'kernel' where the openvswitch module exists, else 'user' (OVS's userspace datapath)."""
    global _DATAPATH
    if _DATAPATH is None:
        forced = os.environ.get("STEALTH_MTD_DATAPATH")
        _DATAPATH = forced if forced in ("user", "kernel") else (
            "kernel" if kernel_module_available() else "user")
    return _DATAPATH


# -- switch ports ---------------------------------------------------------------------------
PORT_KINDS = ("netdev", "afxdp", "afxdp-nonpmd")
# afxdp is the fastest here (bench net --suite ports), but AF_XDP ports hide their packets from
# the root namespace's taps (XDP redirects before them; AF_XDP transmits past them), so the
# global vantage's ``tcpdump -i any`` sees nothing: netdev stays the default, AF_XDP is chosen
# per scenario (topology.ports) where no global capture is needed.
DEFAULT_PORTS = "netdev"
GLOBAL_CAPTURE_PORTS = ("netdev",)  # the port kinds a root-namespace capture sees
AF_XDP = getattr(socket, "AF_XDP", 44)  # Linux address family number of XDP sockets


def check_ports(kind: str) -> str:
    """``kind`` if it is one of ``PORT_KINDS``, else ``ValueError`` naming them."""
    if kind not in PORT_KINDS:
        raise ValueError(f"switch ports {kind!r}: choose from {', '.join(PORT_KINDS)}")
    return kind


def port_options(kind: str) -> str:
    """The ``ovs-vsctl`` settings of one switch-side interface of ``kind`` (empty for netdev):
    generic (skb) XDP mode, the only one a veth without an XDP program on its peer takes, and
    one receive queue, all a Mininet veth has (a queue without a socket would pass its packets
    to the kernel, never to OVS)."""
    check_ports(kind)
    if kind == "netdev":
        return ""
    return f"type={kind} options:xdp-mode=generic options:n_rxq=1"


def pmd_settings(kind: str, cpus: int | None = None) -> list[str]:
    """``ovs-vsctl`` arguments for the PMD threads ``kind`` needs: one PMD thread on the last
    core for ``afxdp`` (what ``pmd-cpu-mask`` selects), nothing for the others."""
    check_ports(kind)
    if kind != "afxdp":
        return []
    n = cpus or os.cpu_count() or 1
    return ["set", "Open_vSwitch", ".", f"other_config:pmd-cpu-mask={1 << (n - 1):#x}"]


def afxdp_missing() -> str | None:
    """Why AF_XDP ports cannot be used here, or None when they can: the kernel must open XDP
    sockets and this ovs-vswitchd must list afxdp among its interface types."""
    try:
        socket.socket(AF_XDP, socket.SOCK_RAW, 0).close()
    except OSError as exc:
        return f"the kernel opens no XDP sockets ({exc.strerror})"
    r = subprocess.run(["ovs-vsctl", "--timeout=3", "get", "Open_vSwitch", ".", "iface_types"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot ask ovs-vswitchd for its port types: {r.stderr.strip()}"
    if "afxdp" not in r.stdout:
        return "this Open vSwitch is built without AF_XDP ports"
    return None


def resolve_ports(requested: str | None, datapath: str) -> str:
    """The port kind a network gets: ``requested`` (default ``DEFAULT_PORTS``, or the
    ``STEALTH_MTD_PORTS`` environment variable), ``netdev`` with a one-line notice where AF_XDP
    is missing or the datapath is the kernel's (whose ports are kernel ports anyway)."""
    kind = check_ports(requested or os.environ.get("STEALTH_MTD_PORTS") or DEFAULT_PORTS)
    if kind == "netdev":
        return kind
    if datapath != "user":
        return "netdev"
    why = afxdp_missing()
    if why:
        log.warning("switch ports: %s instead of %s: %s", "netdev", kind, why)
        return "netdev"
    if kind == "afxdp" and (os.cpu_count() or 1) < 2:
        log.warning("switch ports: afxdp-nonpmd instead of afxdp: one core, none to spare for "
                    "a PMD thread")
        return "afxdp-nonpmd"
    return kind


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["ensure"]:
        print("usage: python -m topologies.ovs ensure", file=sys.stderr)
        return 2
    try:
        print(f"[setup] {ensure()}")
    except OVSError as exc:
        print(f"[setup] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
