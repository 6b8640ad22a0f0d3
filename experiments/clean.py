"""``sudo stealth-mtd clean [--force]``: remove what a killed testbed left behind, say what.

It first takes the machine-wide testbed lock (``experiments.testbed.LOCK_PATH``, the lock every
testbed holds while its network is up) and refuses while a run holds it, or while a run process
lives between two of its testbeds, unless ``--force``. Then it removes only what the project made,
Mininet's clean-up done by hand and limited to stealth-mtd's node names (``NODE``):

- processes: the Mininet node shells ``mininet:<node>``, everything in those shells' network
  namespaces (the namespaces vanish with their last process), the project's processes left in any
  other Mininet namespace, the testbed controller (``-m controllers``) and the vantage captures
  (``tcpdump ... /pcaps/``); the runs themselves (``stealth-mtd run|demo|monitor-eval``) only with
  ``--force``. Loopback agents (``-m hosts.agent`` in the root namespace, which take no lock) are
  other tests' live runs, not leftovers: they stay;
- Open vSwitch bridges and root-namespace links ``<node>-eth<N>`` with stealth-mtd's node names;
- the run folders under ``experiments.testbed.RUN_ROOT`` and the private management folders
  under ``PRIVATE_ROOT`` (``/run/stealth-mtd``) that a killed run left;
and makes sure Open vSwitch itself runs (restarting it if its daemons died).

Not Mininet's ``mn -c``: besides namespaces, links and bridges it runs ``rm -f /tmp/*.out
/tmp/*.log`` (every user's logs), deletes every OVS bridge and kills every process named like some
controller. ``clean(lock_held=True)`` is for a caller that holds the lock itself (the root test).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.testbed import LOCK_PATH, PRIVATE_ROOT, RUN_ROOT

# Node names the topologies make: tenants h<i>, attackers x<i>; fat-tree core/agg/edge c/a/e;
# leaf-spine l/s; linear s; and Mininet's controller node c0 (tests/mininet/test_clean.py checks
# every registered topology against it).
NODE = r"(?:h|x|c|a|e|l|s)\d+"
NODE_NAME = re.compile(NODE)
LINK_NAME = re.compile(rf"{NODE}-eth\d+")
# the project's processes inside a Mininet host namespace
PATTERNS = ("-m controllers", "-m hosts.", "hosts/agent.py", "-m attacks.", "-m experiments.",
            "stealth.vm=")  # the last: a QEMU guest's kernel command line (hosts.qemu_guest)
# a run in progress: it takes the lock again for its next testbed, so it is only stopped by force
RUNS = ("stealth-mtd run", "stealth-mtd demo", "stealth-mtd monitor-eval", "stealth-mtd bench net",
        "-m experiments.cli run", "-m experiments.cli demo", "-m experiments.cli monitor-eval",
        "-m experiments.runner", "-m experiments.demo", "-m experiments.monitor_eval")


class CleanRefused(RuntimeError):
    """A run is using the testbed; the message says which and what to do."""


@dataclass
class Proc:
    pid: int
    cmd: str
    netns: str


def _processes() -> list[Proc]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            netns = os.readlink(entry / "ns" / "net")
        except OSError:  # gone, or a kernel thread
            continue
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)
        if cmd:
            out.append(Proc(int(entry.name), cmd, netns))
    return out


def _ancestors() -> set[int]:
    """This process and its parents (``sudo``, ``make``, a shell): never ours to kill."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return pids


def _is_run(cmd: str) -> bool:
    return any(p in cmd for p in RUNS) and "stealth-mtd clean" not in cmd


def live_runs() -> list[tuple[int, str]]:
    """(pid, command line) of runs in progress (between testbeds they hold no lock)."""
    mine = _ancestors()
    return [(p.pid, p.cmd) for p in _processes() if p.pid not in mine and _is_run(p.cmd)]


def project_processes(include_runs: bool = False) -> list[tuple[int, str]]:
    """(pid, command line) of what testbeds left running, except this process and its parents;
    ``include_runs`` adds the runs themselves."""
    mine = _ancestors()
    procs = [p for p in _processes() if p.pid not in mine]
    root_ns = os.readlink("/proc/self/ns/net")
    shells = {p.pid for p in procs if any(
        a.startswith("mininet:") and NODE_NAME.fullmatch(a[8:]) for a in p.cmd.split())}
    host_ns = {p.netns for p in procs if p.pid in shells} - {root_ns}
    found = []
    for p in procs:
        in_root = p.netns == root_ns
        ours = (p.pid in shells or p.netns in host_ns
                or (not in_root and any(pat in p.cmd for pat in PATTERNS))
                or (in_root and "-m controllers" in p.cmd)  # loopback runs it in-process
                or (p.cmd.startswith("tcpdump") and "/pcaps/" in p.cmd)  # a vantage capture
                or (include_runs and _is_run(p.cmd)))
        if ours and "stealth-mtd clean" not in p.cmd:
            found.append((p.pid, p.cmd))
    return found


def lock_holders() -> list[int]:
    """Pids holding the testbed lock, from /proc/locks (for the refusal message)."""
    try:
        st = os.stat(LOCK_PATH)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return sorted({int(f[4]) for f in (line.split() for line in lines)
                   if len(f) > 5 and f[1] == "FLOCK" and f[5] == dev})


def _try_lock() -> int | None:
    """The testbed lock (the same flock on LOCK_PATH as ``experiments.testbed.acquire_lock``),
    tried once; its fd, or None while someone else holds it."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _kill(procs: list[tuple[int, str]], removed: list[str]) -> None:
    for pid, cmd in procs:
        try:
            os.kill(pid, signal.SIGTERM)
            removed.append(f"{pid} {cmd[:80]}")
        except ProcessLookupError:
            pass
    if procs:
        time.sleep(1.0)  # Mininet's interactive shells ignore SIGTERM: the KILL ends them
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def bridges() -> list[str]:
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []


def links() -> list[str]:
    """Names of the root namespace's network interfaces (``ip -o link``)."""
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    return [line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines()
            if line.count(":") >= 2]


def _remove_run_folders(removed: list[str], warnings: list[str]) -> None:
    for root in (Path(RUN_ROOT), PRIVATE_ROOT):
        _remove_under(root, removed, warnings)


def _remove_under(root: Path, removed: list[str], warnings: list[str]) -> None:
    """Everything under ``root`` (the run folders, the private management folders), if ``root``
    is ours and no symlink."""
    if root.is_symlink() or not root.is_dir():
        if root.is_symlink():
            warnings.append(f"{root} is a symlink, not the project's: left alone")
        return
    if root.stat().st_uid != os.geteuid():
        warnings.append(f"{root} belongs to uid {root.stat().st_uid}, not to us: left alone")
        return
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(str(p))


def clean(*, lock_held: bool = False, force: bool = False) -> dict[str, list[str]]:
    """Remove testbed leftovers; returns what was removed by kind.

    Unless ``lock_held`` (the caller holds the testbed lock), takes the lock for the duration and
    raises ``CleanRefused`` while a run holds it or a run process lives, unless ``force``.
    """
    removed: dict[str, list[str]] = {"processes": [], "bridges": [], "links": [], "temp": [],
                                     "warnings": []}
    fd = None
    if not lock_held:
        fd = _try_lock()
        if fd is None:
            holders = ", ".join(map(str, lock_holders())) or "?"
            if not force:
                raise CleanRefused(
                    f"a stealth-mtd run holds the testbed lock {LOCK_PATH} (pid {holders}): "
                    "cleaning now would destroy it. Wait until it ends, or `sudo stealth-mtd "
                    "clean --force` if that process is stuck.")
            removed["warnings"].append(f"forced while pid {holders} holds {LOCK_PATH}")
    try:
        runs = live_runs()
        if runs and not force:
            raise CleanRefused(
                "a stealth-mtd run is in progress (between two testbeds): "
                + "; ".join(f"pid {pid}: {cmd[:80]}" for pid, cmd in runs)
                + ". Wait until it ends, or `sudo stealth-mtd clean --force` to stop it.")
        _kill(project_processes(include_runs=force), removed["processes"])
        ours = [b for b in bridges() if NODE_NAME.fullmatch(b)]
        for b in ours:
            subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", b],
                           capture_output=True)
        removed["bridges"] = sorted(set(ours) - set(bridges()))
        for name in links():
            if LINK_NAME.fullmatch(name) and subprocess.run(
                    ["ip", "link", "del", name], capture_output=True).returncode == 0:
                removed["links"].append(name)
        if not force and live_runs():  # started meanwhile: its folder may already be there
            removed["warnings"].append("a run started meanwhile: run folders left alone")
        else:
            _remove_run_folders(removed["temp"], removed["warnings"])
        try:
            from topologies.ovs import ensure

            ensure()
        except Exception as exc:  # report, do not hide
            removed["warnings"].append(f"Open vSwitch: {exc}")
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd clean", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true",
                    help="clean even while a run holds the testbed lock, and stop live runs")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("stealth-mtd clean needs root: sudo stealth-mtd clean", file=sys.stderr)
        return 1
    try:
        removed = clean(force=args.force)
    except CleanRefused as exc:
        print(f"stealth-mtd clean refused: {exc}", file=sys.stderr)
        return 1
    print("stealth-mtd clean: removed")
    for kind, items in removed.items():
        print(f"  {kind}: {len(items)}")
        for item in items[:8]:
            print(f"    {item}")
        if len(items) > 8:
            print(f"    ... {len(items) - 8} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
