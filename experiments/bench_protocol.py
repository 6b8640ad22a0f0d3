"""``stealth-mtd bench protocol``: what the migration protocol costs, measured on this machine.

- AES-256-GCM chunk sealing throughput (``hosts.stream``) next to ``openssl speed -evp
  aes-256-gcm`` (run and parsed, largest block size);
- Shamir split and combine of a 32-byte key (k = 3, n = 5);
- a loopback migration (every role its own agent process on 127.0.0.x) of a ``--vm-mib`` VM
  (default 1 GiB), stealth unshaped (fixed 256 KiB chunks, no pacing, 3 intermediates, k = 2)
  vs direct: migration time, goodput, downtime, pre-copy rounds, and each role's peak RSS
  (VmHWM, reset after the agents start; the VM image lives in the page cache, not the RSS).

Printed with ``rich``; ``--json`` prints the same figures as JSON. Figures are printed, not
asserted. Run as ``python -m experiments.bench_protocol`` or through the CLI (``main(argv)``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from hosts import shamir
from hosts.stream import ChunkOpener, ChunkSealer, new_key

CHUNK = 256 * 1024


def bench_aes(seconds: float = 1.0, chunk: int = CHUNK) -> dict[str, float]:
    """MB/s (10^6 bytes) of sealing and opening ``chunk``-byte chunks for ~``seconds`` each."""
    key = new_key()
    data = os.urandom(chunk)
    sealer = ChunkSealer(key, "bench")
    sealed: list[tuple[int, bytes]] = []
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx, ct = sealer.seal(data)
        if len(sealed) < 64:
            sealed.append((idx, ct))
        n += 1
    seal_s = time.perf_counter() - t0
    opener = ChunkOpener(key, "bench")
    m = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx, ct = sealed[m % len(sealed)]
        opener.open(sealer.prefix, idx, False, ct)
        m += 1
    open_s = time.perf_counter() - t0
    return {
        "chunk_bytes": chunk,
        "seal_MBps": n * chunk / seal_s / 1e6,
        "open_MBps": m * chunk / open_s / 1e6,
    }


def bench_openssl(seconds: int = 1) -> dict[str, Any]:
    """``openssl speed -evp aes-256-gcm``: MB/s at its largest block size, or why not."""
    exe = shutil.which("openssl")
    if not exe:
        return {"error": "openssl not found"}
    try:
        out = subprocess.run(
            [exe, "speed", "-seconds", str(seconds), "-evp", "aes-256-gcm"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return {"error": f"openssl speed failed: {exc}"}
    return parse_openssl_speed(out)


def parse_openssl_speed(out: str) -> dict[str, Any]:
    """Parse the summary table of ``openssl speed``: values are 1000s of bytes per second."""
    header = re.search(r"^type\s+(.*)$", out, re.M)
    row = re.search(r"^(aes-256-gcm|AES-256-GCM)\s+(.*)$", out, re.M)
    if not header or not row:
        return {"error": "no aes-256-gcm row in the openssl output"}
    sizes = [int(s) for s in re.findall(r"(\d+) bytes", header.group(1))]
    values = [float(v) for v in re.findall(r"([\d.]+)k", row.group(2))]
    if not sizes or len(sizes) != len(values):
        return {"error": "could not parse the openssl table"}
    return {
        "block_bytes": sizes[-1],
        "MBps": values[-1] / 1000.0,
        "by_block": {str(s): v / 1000.0 for s, v in zip(sizes, values, strict=True)},
    }


def bench_shamir(rounds: int = 200) -> dict[str, float]:
    """Microseconds per split(32-byte key, 3, 5) and per combine of 3 shares."""
    key = os.urandom(32)
    t0 = time.perf_counter()
    for _ in range(rounds):
        shares = shamir.split(key, 3, 5)
    split_us = (time.perf_counter() - t0) / rounds * 1e6
    t0 = time.perf_counter()
    for _ in range(rounds):
        got = shamir.combine(shares[:3])
    combine_us = (time.perf_counter() - t0) / rounds * 1e6
    assert got == key
    return {"k": 3, "n": 5, "split_us": split_us, "combine_us": combine_us}


def bench_migration(mode: str, vm_mib: int, dirty: float, root: str) -> dict[str, Any]:
    """One loopback migration; returns times, goodput and peak RSS per role."""
    from experiments.loopback import LoopbackBed

    roles = {"h1": "source", "h6": "destination"}
    if mode == "stealth":
        roles.update(h2="intermediate", h3="intermediate", h4="intermediate", h5="leader")
    net = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}."  # no clash with others
    bed = LoopbackBed(os.path.join(root, mode))
    try:
        bed.add_agent(
            "h1",
            f"{net}31",
            vm="vm1",
            vm_mib=vm_mib,
            dirty_pages_per_s=dirty,
            wait=False,
            timeout=600,
        )
        for h in roles:
            if h != "h1":
                bed.add_agent(h, f"{net}{30 + int(h[1])}", wait=False)
        bed.wait_registered(list(roles), timeout=600)
        for h in roles:
            bed.agent_call(h, {"op": "reset_peak"})
        stealth = mode == "stealth"
        plan = bed.plan(
            f"bench-{mode}",
            mode,
            "h1",
            "h6",
            ["h2", "h3", "h4"] if stealth else [],
            "h5" if stealth else None,
            k=2,
            chunk_policy={"kind": "fixed", "size": CHUNK},
            stall_timeout_s=60.0,
        )
        res = bed.migrate(plan, timeout_s=3600)
        rss = {}
        for h, role in roles.items():
            st = bed.status(h)
            label = role if role != "intermediate" else f"intermediate {h}"
            rss[label] = round(st["peak_rss_kib"] / 1024, 1)
        return {
            "mode": mode,
            "status": res.status,
            "reason": res.reason,
            "vm_mib": vm_mib,
            "migration_time_s": res.migration_time_s,
            "goodput_mbps": res.goodput_mbps,
            "downtime_s": res.downtime_s,
            "rounds": res.rounds,
            "wire_bytes_from_source": sum(
                v for k, v in res.bytes_per_hop.items() if k.startswith("h1->")
            ),
            "peak_rss_mib": rss,
        }
    finally:
        bed.close()


def _print(fig: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="AES-256-GCM and Shamir")
    t.add_column("what")
    t.add_column("figure", justify="right")
    a, o, s = fig["aes_gcm"], fig["openssl"], fig["shamir"]
    t.add_row(
        f"seal {a['chunk_bytes'] // 1024} KiB chunks (hosts.stream)", f"{a['seal_MBps']:.0f} MB/s"
    )
    t.add_row(
        f"open {a['chunk_bytes'] // 1024} KiB chunks (hosts.stream)", f"{a['open_MBps']:.0f} MB/s"
    )
    if "error" in o:
        t.add_row("openssl speed -evp aes-256-gcm", o["error"])
    else:
        t.add_row(f"openssl speed -evp aes-256-gcm, {o['block_bytes']} B", f"{o['MBps']:.0f} MB/s")
    t.add_row("Shamir split of a 32-byte key (k=3, n=5)", f"{s['split_us']:.0f} µs")
    t.add_row("Shamir combine of 3 shares", f"{s['combine_us']:.0f} µs")
    con.print(t)
    migs = fig.get("migrations", [])
    if migs:
        m = Table(title=f"Loopback migration of a {migs[0]['vm_mib']} MiB VM")
        m.add_column("figure")
        for r in migs:
            m.add_column(
                r["mode"] + (" (unshaped)" if r["mode"] == "stealth" else ""), justify="right"
            )

        def row(name: str, fn: Any) -> None:
            m.add_row(name, *[fn(r) for r in migs])

        row("status", lambda r: r["status"] + (f": {r['reason']}" if r["reason"] else ""))
        row("migration time", lambda r: f"{r['migration_time_s']:.2f} s")
        row("goodput", lambda r: f"{r['goodput_mbps']:.0f} Mbit/s" if r["goodput_mbps"] else "-")
        row("downtime", lambda r: f"{r['downtime_s']:.3f} s" if r["downtime_s"] else "-")
        row("pre-copy rounds (incl. stop-and-copy)", lambda r: str(r["rounds"]))
        row("bytes sent by the source", lambda r: f"{r['wire_bytes_from_source'] / 2**20:.0f} MiB")
        labels: list[str] = []
        for r in migs:
            labels += [k for k in r["peak_rss_mib"] if k not in labels]
        for lab in labels:
            row(
                f"peak RSS: {lab}",
                lambda r, lab=lab: (
                    f"{r['peak_rss_mib'][lab]} MiB" if lab in r["peak_rss_mib"] else "-"
                ),
            )
        con.print(m)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="stealth-mtd bench protocol", description=__doc__.split("\n")[0]
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--vm-mib", type=int, default=1024, help="VM size of the loopback migrations")
    p.add_argument("--dirty-pages-per-s", type=float, default=100.0)
    p.add_argument("--no-migration", action="store_true", help="only the crypto figures")
    a = p.parse_args(argv)
    fig: dict[str, Any] = {
        "aes_gcm": bench_aes(),
        "openssl": bench_openssl(),
        "shamir": bench_shamir(),
        "migrations": [],
    }
    if not a.no_migration:
        root = tempfile.mkdtemp(prefix="stealth-mtd-bench-")
        try:
            for mode in ("stealth", "direct"):
                fig["migrations"].append(bench_migration(mode, a.vm_mib, a.dirty_pages_per_s, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if a.json:
        print(json.dumps(fig, indent=2))
    else:
        _print(fig)
    return 0 if all(m["status"] == "done" for m in fig["migrations"]) else 1


if __name__ == "__main__":
    sys.exit(main())
