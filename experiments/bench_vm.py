"""``sudo stealth-mtd bench vm``: a real QEMU guest migrated three ways on fat-tree k=4, printed.

- **qemu-tcp**: QEMU's own ``migrate tcp:`` between two Mininet hosts (``python -m hosts.qemu
  send``/``receive`` in h13 and h14): the baseline, no relay, no encryption;
- **direct** and **stealth** (n = 3, k = 2): this project's modes carrying the same guest's QEMU
  stream (``[vm] kind = "qemu"``), unshaped (fixed 256 KiB chunks, as ``bench net``).

For each: total time, downtime, bytes on the wire (qemu-tcp: the source host's interface
counter; direct and stealth: the sum over the relay's hops) and QEMU's own ``query-migrate``
figures; then the guest's boot time and the CPU its QEMU uses while idle on this machine.
Figures are printed, not asserted (``--json`` for the numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
out = Console()
UNSHAPED = {"kind": "fixed", "size": 262144}


def _tx_bytes(tb: Any, host: str) -> int:
    return int(tb.host(host).cmd(f"cat /sys/class/net/{host}-eth0/statistics/tx_bytes").strip())


def qemu_tcp(tb: Any, src: str, dst: str, mib: int, dirty_kib: int) -> dict[str, Any]:
    """QEMU's own migration from ``src`` to ``dst`` over the emulated network."""
    work = tb.private / "bench-qemu"
    port = 4444
    recv = tb.popen(dst, [sys.executable, "-m", "hosts.qemu", "receive", str(work / dst),
                          tb.ip(dst), f"tcp:{tb.ip(dst)}:{port}", "--mib", str(mib)],
                    log_name="bench-qemu-receive.log")
    time.sleep(2)  # its QEMU listens
    tx0 = _tx_bytes(tb, src)
    send = tb.popen(src, [sys.executable, "-m", "hosts.qemu", "send", str(work / src),
                          tb.ip(src), f"tcp:{tb.ip(dst)}:{port}", "--mib", str(mib),
                          "--dirty-kib", str(dirty_kib)], log_name="bench-qemu-send.log")
    send.wait(600)
    recv.wait(120)
    tx = _tx_bytes(tb, src) - tx0

    def last_json(name: str) -> dict[str, Any]:
        lines = (tb.run_dir / name).read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else {"error": f"{name} is empty"}

    s, r = last_json("bench-qemu-send.log"), last_json("bench-qemu-receive.log")
    if "error" in s or "error" in r:
        return {"mode": "qemu-tcp", "status": s.get("error") or r.get("error")}
    fig = s["qemu"]
    return {"mode": "qemu-tcp", "status": "done", "migration_time_s": fig["total_time_ms"] / 1e3,
            "downtime_s": r["resumed_at"] - s["paused_at"], "wire_bytes": tx, "qemu": fig,
            "boot_s": s["boot_s"], "idle_cpu": s["idle_cpu"], "accel": s["accel"]}


def ours(tb: Any, mode: str, source: str, destination: str) -> dict[str, Any]:
    from experiments.fleet import wait_migration

    r = tb.mgmt({"op": "migrate", "source": source, "mode": mode, "n": 3, "k": 2,
                 "destination": destination, "hide_destination": mode == "stealth",
                 "chunk_policy": UNSHAPED})
    rec = wait_migration(tb, r["migration"], timeout=900)
    res = rec["result"] or {}
    dst = (res.get("role_stats") or {}).get(f"destination:{destination}", {})
    return {"mode": mode, "status": rec["state"], "migration_time_s": res.get("migration_time_s"),
            "downtime_s": res.get("downtime_s"),
            "wire_bytes": sum((res.get("bytes_per_hop") or {}).values()),
            "stream_bytes": dst.get("stream_bytes"), "qemu": dst.get("qemu")}


def idle_cpu(pid: int, seconds: float = 5.0) -> float:
    """Share of one core the process used over ``seconds``."""
    import os

    from hosts.monitor.procfs import parse_proc_stat

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as f:
            return parse_proc_stat(f.read()) / os.sysconf("SC_CLK_TCK")

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    return (cpu() - c0) / (time.monotonic() - t0)


def run(mib: int, dirty_pages_per_s: float) -> dict[str, Any]:
    from experiments.fleet import VMSpec, start_agents
    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    spec = VMSpec("h1", mib=mib, dirty_pages_per_s=dirty_pages_per_s, kind="qemu")
    res: dict[str, Any] = {"mib": mib, "dirty_kib_per_100ms": spec.dirty_kib, "modes": []}
    with Testbed(FatTreeTopo(4), seed=11) as tb:
        with console.status("qemu-tcp: QEMU's own migration h13 -> h14"):
            res["modes"].append(qemu_tcp(tb, "h13", "h14", mib, spec.dirty_kib))
        with console.status("agents and the guest in h1"):
            t0 = time.monotonic()
            start_agents(tb, spec)
            res["agents_up_s"] = time.monotonic() - t0
        vm = tb.agent_call("h1", {"op": "status"})["vm"]
        res["boot_s"], res["accel"] = vm.get("boot_s"), vm.get("accel")
        res["idle_cpu"] = idle_cpu(int(vm["pid"]))
        for mode, src, dst in (("direct", "h1", "h9"), ("stealth", "h9", "h1")):
            with console.status(f"{mode} {src} -> {dst}"):
                res["modes"].append(ours(tb, mode, src, dst))
    return res


def show(res: dict[str, Any]) -> None:
    t = Table(title=f"a {res['mib']} MiB QEMU guest ({res.get('accel')}), fat-tree k=4")
    for c in ("mode", "status", "total s", "downtime s", "wire MB", "QEMU MB", "QEMU rounds",
              "QEMU downtime ms"):
        t.add_column(c)
    for m in res["modes"]:
        q = m.get("qemu") or {}

        def f(x: Any, d: int = 3) -> str:
            return "-" if x is None else f"{x:.{d}f}"

        t.add_row(m["mode"], str(m["status"]), f(m.get("migration_time_s"), 2),
                  f(m.get("downtime_s")), f((m.get("wire_bytes") or 0) / 1e6, 1),
                  f((q.get("transferred_bytes") or 0) / 1e6, 1),
                  str(q.get("dirty_sync_count", "-")), str(q.get("downtime_ms", "-")))
    out.print(t)
    out.print(f"guest boot {res.get('boot_s') or 0:.1f} s in the agent; QEMU idle CPU "
              f"{100 * (res.get('idle_cpu') or 0):.0f}% of a core")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd bench vm", description=__doc__)
    ap.add_argument("--mib", type=int, default=96, help="guest memory (96-1024)")
    ap.add_argument("--dirty-pages-per-s", type=float, default=100.0,
                    help="what the guest's loop dirties (as the model's setting)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)
    from hosts.qemu import available

    why = available()
    if why is not None:
        console.print(f"bench vm: the QEMU guest cannot run here: {why}")
        return 2
    res = run(a.mib, a.dirty_pages_per_s)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        show(res)
    return 0
