"""The QEMU processes a test started, found by what their command lines name (the loopback and
the Mininet QEMU tests both check that none is left behind)."""

from __future__ import annotations

import os


def qemus_under(root: str) -> list[int]:
    """The QEMU processes whose command line names a file under ``root``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"qemu-system" in cmd and root.encode() in cmd:
            out.append(int(pid))
    return out
