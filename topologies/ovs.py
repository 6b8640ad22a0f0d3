"""Open vSwitch on this machine: is it running, start it, which datapath to use.

Called by ``scripts/setup.sh`` (``python -m topologies.ovs ensure``), by ``topologies.net`` (to
pick the datapath), by ``experiments.testbed`` (before a network starts) and by ``stealth-mtd
clean``. Debian's ``ovs-ctl`` starts the daemons; after a
killed run or a reboot their pid files may be stale, which this module clears first.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

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
