"""``sudo stealth-mtd clean``: remove what a killed run left behind, and say what was removed.

Kills the project's processes (controller, host agents, workloads, captures), runs Mininet's
``mn -c`` (network namespaces' processes, veth pairs, OVS bridges), deletes the temp folders
under /tmp/stealth-mtd and leaves Open vSwitch itself running (restarting it if its daemons died).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PATTERNS = ("-m controllers", "-m hosts.", "hosts/agent.py", "-m attacks.", "stealth-mtd run",
            "stealth-mtd demo")
TEMP_ROOT = Path("/tmp/stealth-mtd")


def project_processes() -> list[tuple[int, str]]:
    """(pid, command line) of processes that belong to stealth-mtd, except this one."""
    me = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ours = any(p in cmd for p in PATTERNS) or (
            cmd.startswith("tcpdump") and "/pcaps/" in cmd)  # a vantage point's capture
        if ours and "stealth-mtd clean" not in cmd:
            found.append((int(entry.name), cmd.strip()))
    return found


def bridges() -> list[str]:
    r = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []


def clean(verbose: bool = True) -> dict[str, list[str]]:
    """Remove leftovers; returns what was removed by kind."""
    removed: dict[str, list[str]] = {"processes": [], "bridges": [], "temp": [], "mininet": []}
    procs = project_processes()
    for pid, cmd in procs:
        try:
            os.kill(pid, signal.SIGTERM)
            removed["processes"].append(f"{pid} {cmd[:80]}")
        except ProcessLookupError:
            pass
    if procs:
        time.sleep(1.0)
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    before = set(bridges())
    if shutil.which("mn"):
        r = subprocess.run(["mn", "-c"], capture_output=True, text=True)
        killed = [line for line in (r.stdout + r.stderr).splitlines()
                  if line.startswith("*** ") and "Cleanup complete" not in line]
        removed["mininet"] = [f"mn -c ran ({len(killed)} steps)"]
    removed["bridges"] = sorted(before - set(bridges()))
    if TEMP_ROOT.exists():
        for p in sorted(TEMP_ROOT.iterdir()):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed["temp"].append(str(p))
    try:
        from topologies.ovs import ensure

        ensure()
    except Exception as exc:  # report, do not hide
        removed.setdefault("warnings", []).append(f"Open vSwitch: {exc}")
    return removed


def main() -> int:
    if os.geteuid() != 0:
        print("stealth-mtd clean needs root: sudo stealth-mtd clean")
        return 1
    from rich.console import Console
    from rich.table import Table

    removed = clean()
    table = Table(title="stealth-mtd clean: removed")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_column("items")
    for kind, items in removed.items():
        shown = "\n".join(items[:8]) + (f"\n… {len(items) - 8} more" if len(items) > 8 else "")
        table.add_row(kind, str(len(items)), shown or "-")
    Console().print(table)
    return 0
