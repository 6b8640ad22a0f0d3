"""``sudo stealth-mtd bench net``: network figures, printed next to their reference, not asserted.

- bring-up time of fat-tree k=4 and k=6 (controller start → every switch's rules confirmed);
- relay install latency: management request → rules confirmed by an OpenFlow barrier on every
  switch of the relay (median and p95 over repeated installs of a 5-hop relay), and removal;
- iperf3 throughput between far hosts over ECMP forwarding and over a relay hop's exact-match
  path, next to iperf3 over loopback on this machine (the ceiling without OVS);
- unshaped stealth and direct migration goodput of a VM, next to iperf3 between the same hosts
  and the hop-count limit (iperf3 / the relay hops the bytes cross);
- switch ports (``--suite ports``): iperf3 between far hosts of fat-tree k=4 and leaf-spine
  4x2x4, idle and under the default background of the shipped scenarios, for netdev, afxdp and
  afxdp-nonpmd ports, with ovs-vswitchd's CPU use over each iperf3 interval; repeated
  (``--reps``) back to back under one hold of the testbed lock, median and spread; then direct
  and stealth migrations on fat-tree under that background per port kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)  # progress; the tables and --json go to stdout
out = Console()


def iperf(tb: Any, client: str, server: str, dst_ip: str, port: int, seconds: float) -> float:
    """Mbit/s received by ``server``."""
    end = tb.iperf(client, server, port, seconds, dst_ip=dst_ip)
    return end["sum_received"]["bits_per_second"] / 1e6


def loopback_iperf(seconds: float) -> float:
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", "5299", "-B", "127.0.0.1"],
                           stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", "5299", "-t", str(seconds),
                              "-J"], capture_output=True, text=True).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.kill()
        srv.wait()


def bench_migration(tb: Any, vm_mib: int, seconds: float,
                    timeout: float = 600) -> list[dict[str, Any]]:
    """Unshaped stealth and direct migrations of a ``vm_mib`` VM from h1, goodput next to
    iperf3 from h1 to the same destination."""
    from experiments.fleet import VMSpec, start_agents, wait_migration

    start_agents(tb, VMSpec("h1", mib=vm_mib, dirty_pages_per_s=50))
    out = []
    vm_host = "h1"
    for mode in ("stealth", "direct"):
        with console.status(f"{mode} migration of a {vm_mib} MiB VM"):
            r = tb.mgmt({"op": "migrate", "source": vm_host, "mode": mode, "n": 3, "k": 2,
                         "hide_destination": mode == "stealth",
                         "chunk_policy": {"kind": "fixed", "size": 262144}})
            try:
                rec = wait_migration(tb, r["migration"], timeout=timeout)
            except TimeoutError:
                rec = {"state": f"not done in {timeout:.0f} s", "result": None}
        res = rec["result"] or {}
        dest = r["roles"]["destination"]
        hops = len(r.get("paths") or []) or 1
        goodput = (res.get("vm_bytes", 0) * 8 / res["migration_time_s"] / 1e6
                   if rec["state"] == "done" else None)
        with console.status(f"iperf3 {vm_host} -> {dest}"):
            ref = iperf(tb, vm_host, dest, tb.ip(dest), 5202, seconds)
        out.append({"mode": mode, "status": rec["state"], "source": vm_host, "destination": dest,
                    "migration_time_s": res.get("migration_time_s"),
                    "downtime_s": res.get("downtime_s"), "goodput_mbit_s": goodput,
                    "iperf3_mbit_s": ref, "ratio": goodput / ref if goodput and ref else None,
                    "hops": hops, "hop_limit_mbit_s": ref / hops})
        console.log(f"{mode}: {rec['state']}, goodput {goodput or 0:.0f} Mbit/s, iperf3 "
                    f"{ref:.0f} Mbit/s")
        if rec["state"] == "done":
            vm_host = dest
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(ks: list[int], relays: int, seconds: float, vm_mib: int = 64) -> dict[str, Any]:
    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    res: dict[str, Any] = {"bringup": {}, "relay": {}, "throughput": {}, "migration": []}
    for k in ks:
        t0 = time.monotonic()
        with console.status(f"fat-tree k={k}: bringing up"):
            tb = Testbed(FatTreeTopo(k), seed=1)
            tb.__enter__()
        try:
            res["bringup"][f"k={k}"] = {"total_s": time.monotonic() - t0, **tb.timings,
                                        "switches": len(tb.description["switches"]),
                                        "hosts": len(tb.description["hosts"])}
            console.log(f"fat-tree k={k} up in {res['bringup'][f'k={k}']['total_s']:.1f} s")
            if k != ks[0]:
                continue
            hosts = [h["name"] for h in tb.description["hosts"]]
            far = hosts[-1]
            hops = [{"from": "h1", "to": "h5", "port": 9001}, {"from": "h1", "to": "h9",
                                                               "port": 9002},
                    {"from": "h5", "to": "h13", "port": 9100},
                    {"from": "h9", "to": "h13", "port": 9100},
                    {"from": "h13", "to": far, "port": 9200}]
            inst, rem, rules = [], [], 0
            for i in range(relays):
                t = time.monotonic()
                r = tb.mgmt({"op": "relay", "migration": f"bench-{i}", "hops": hops})
                inst.append(time.monotonic() - t)
                rules = r["rules"]
                t = time.monotonic()
                tb.mgmt({"op": "relay_remove", "migration": f"bench-{i}"})
                rem.append(time.monotonic() - t)
            res["relay"] = {"rules": rules, "n": relays,
                            "install_median_ms": statistics.median(inst) * 1e3,
                            "install_p95_ms": pct(inst, 0.95) * 1e3,
                            "remove_median_ms": statistics.median(rem) * 1e3}
            console.log(f"relay install median {res['relay']['install_median_ms']:.1f} ms")
            with console.status("iperf3 h1 -> far host (ECMP forwarding)"):
                ecmp = iperf(tb, "h1", far, tb.ip(far), 5201, seconds)
            r = tb.mgmt({"op": "relay", "migration": "bench-tp",
                         "hops": [{"from": "h1", "to": far, "port": 9500}]})
            with console.status("iperf3 h1 -> far host (relay exact-match path)"):
                relay = iperf(tb, "h1", far, tb.ip(far), 9500, seconds)
            tb.mgmt({"op": "relay_remove", "migration": "bench-tp"})
            res["throughput"] = {"ecmp_mbit_s": ecmp, "relay_mbit_s": relay,
                                 "switch_hops": len(r["paths"][0]["switches"])}
            if vm_mib:
                res["migration"] = bench_migration(tb, vm_mib, seconds)
        finally:
            tb.__exit__(None, None, None)
    with console.status("iperf3 over loopback (reference)"):
        res["throughput"]["loopback_mbit_s"] = loopback_iperf(seconds)
    return res


def show(res: dict[str, Any]) -> None:
    if not res["bringup"]:
        _show_rest(res)
        return
    t = Table(title="bench net: bring-up")
    for c in ("topology", "switches", "hosts", "controller ready (s)", "all rules confirmed (s)"):
        t.add_column(c, justify="right")
    for k, b in res["bringup"].items():
        t.add_row(f"fat-tree {k}", str(b["switches"]), str(b["hosts"]),
                  f"{b['controller_s']:.2f}", f"{b['total_s']:.2f}")
    out.print(t)
    r = res["relay"]
    if r:
        t = Table(title=f"bench net: relay of 5 hops ({r['rules']} rules), {r['n']} installs")
        for c in ("install median (ms)", "install p95 (ms)", "remove median (ms)"):
            t.add_column(c, justify="right")
        t.add_row(f"{r['install_median_ms']:.1f}", f"{r['install_p95_ms']:.1f}",
                  f"{r['remove_median_ms']:.1f}")
        out.print(t)
    tp = res["throughput"]
    t = Table(title="bench net: iperf3 throughput (Mbit/s)")
    for c in ("path", "Mbit/s"):
        t.add_column(c, justify="right")
    if "ecmp_mbit_s" in tp:
        t.add_row(f"h1 -> far host, ECMP ({tp['switch_hops']} switches, userspace OVS)",
                  f"{tp['ecmp_mbit_s']:.0f}")
        t.add_row("h1 -> far host, relay exact-match rules", f"{tp['relay_mbit_s']:.0f}")
    t.add_row("reference: loopback, no OVS", f"{tp['loopback_mbit_s']:.0f}")
    out.print(t)
    _show_rest(res)


def _show_rest(res: dict[str, Any]) -> None:
    if res.get("migration"):
        t = Table(title="bench net: unshaped migration goodput vs iperf3 between the same hosts")
        show_migrations(t, res["migration"])
    if res.get("ports"):
        show_ports(res["ports"])


def show_migrations(t: Table, rows: list[dict[str, Any]]) -> None:
    for c in ("ports", "mode", "route", "status", "time (s)", "downtime (s)", "goodput (Mbit/s)",
              "iperf3 (Mbit/s)", "ratio", "hops", "iperf3 / hops"):
        t.add_column(c, justify="right")
    for m in rows:
        t.add_row(m.get("ports", ""), m["mode"], f"{m['source']} -> {m['destination']}",
                  m["status"], _f(m["migration_time_s"]), _f(m["downtime_s"]),
                  _f(m["goodput_mbit_s"]), _f(m["iperf3_mbit_s"]), _f(m["ratio"]),
                  str(m["hops"]), _f(m["hop_limit_mbit_s"]))
    out.print(t)


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}" if v < 10 else f"{v:.0f}"


# -- switch ports: netdev vs AF_XDP ---------------------------------------------------------------
# the default background of the shipped scenarios (quick.toml's [background])
BACKGROUND = {"flows_per_s": 1.0, "cdf": "websearch", "cap_bytes": 1_000_000,
              "bulk_per_min": 1.0, "bulk_max_bytes": 4_000_000}
FABRICS = {"fattree": ("fattree", [4]), "leafspine": ("leafspine", [4, 2, 4])}
# the figures before this work: README (netdev ports, default background, fat-tree k=4)
REFERENCE = {("fattree", "load", "netdev"): "2-9 (README, before)",
             ("leafspine", "load", "netdev"): "~114 (README, before)"}


def vswitchd_ticks() -> int:
    """utime + stime of ovs-vswitchd (all its threads), in clock ticks."""
    from topologies.ovs import RUN_DIR

    pid = open(f"{RUN_DIR}/ovs-vswitchd.pid").read().strip()
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def iperf_with_cpu(tb: Any, client: str, server: str, seconds: float) -> tuple[float, float]:
    """Mbit/s ``client`` -> ``server`` and ovs-vswitchd's CPU % (100 = one core) meanwhile."""
    import os

    hz = os.sysconf("SC_CLK_TCK")
    t0, c0 = time.monotonic(), vswitchd_ticks()
    try:
        mbps = iperf(tb, client, server, tb.ip(server), 5201, seconds)
    except Exception as exc:  # a fabric too slow to finish iperf3 is a figure, not a crash
        console.log(f"iperf3 {client} -> {server} failed: {exc}")
        mbps = 0.0
    cpu = (vswitchd_ticks() - c0) / hz / (time.monotonic() - t0) * 100
    return mbps, cpu


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_ports(kinds: list[str], fabrics: list[str], reps: int, seconds: float,
              vm_mib: int) -> dict[str, Any]:
    """Far-host iperf3 (and vswitchd CPU) per fabric x port kind, idle then under the default
    background, ``reps`` times each; then migrations on fat-tree under load."""
    from experiments.fleet import start_workload
    from experiments.testbed import Testbed, acquire_lock
    from topologies import registry

    class HeldTestbed(Testbed):  # the lock is held once, for the whole benchmark
        def _lock(self) -> None:
            pass

    rows: list[dict[str, Any]] = []
    migrations: list[dict[str, Any]] = []
    lock = acquire_lock()
    try:
        for fabric in fabrics:
            name, args = FABRICS[fabric]
            for kind in kinds:
                topo = registry()[name](*args)
                topo.switch_ports = kind
                with console.status(f"{fabric}, {kind} ports: bringing up"):
                    tb = HeldTestbed(topo, seed=1)
                    tb.__enter__()
                try:
                    got = tb.net.switch_ports
                    hosts = [h["name"] for h in tb.description["hosts"] if not h["attacker"]]
                    far = hosts[-1]
                    for load in ("idle", "load"):
                        if load == "load":
                            start_workload(tb, 1, **BACKGROUND)
                            time.sleep(8)  # the scenarios' warm-up
                        runs = [iperf_with_cpu(tb, hosts[0], far, seconds) for _ in range(reps)]
                        row = {"fabric": fabric, "ports": got, "requested": kind, "load": load,
                               "mbit_s": _summary([r[0] for r in runs]),
                               "cpu_pct": _summary([r[1] for r in runs]),
                               "runs": [list(r) for r in runs]}
                        rows.append(row)
                        console.log(f"{fabric} {got} {load}: {row['mbit_s']['median']:.0f} "
                                    f"Mbit/s, vswitchd {row['cpu_pct']['median']:.0f}% CPU")
                    if fabric == "fattree" and vm_mib:
                        for m in bench_migration(tb, vm_mib, seconds, timeout=240):
                            migrations.append({**m, "ports": got})
                finally:
                    tb.__exit__(None, None, None)
    finally:
        import os

        os.close(lock)
    return {"ports": rows, "migration": migrations}


def show_ports(rows: list[dict[str, Any]]) -> None:
    t = Table(title="bench net: iperf3 h1 -> far host by switch ports (median \\[min-max] of "
                    "repeats; machine shared with other runs)")
    for c in ("fabric", "background", "ports", "Mbit/s", "ovs-vswitchd CPU %", "reference"):
        t.add_column(c, justify="right")
    for r in rows:
        m, c = r["mbit_s"], r["cpu_pct"]
        t.add_row(r["fabric"], "default" if r["load"] == "load" else "idle", r["ports"],
                  f"{m['median']:.0f} [{m['min']:.0f}-{m['max']:.0f}]",
                  f"{c['median']:.0f} [{c['min']:.0f}-{c['max']:.0f}]",
                  REFERENCE.get((r["fabric"], r["load"], r["ports"]), ""))
    out.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd bench net", description=__doc__)
    ap.add_argument("--k", type=int, nargs="+", default=[4, 6], help="fat-tree sizes")
    ap.add_argument("--relays", type=int, default=20, help="relay installs to time")
    ap.add_argument("--seconds", type=float, default=5, help="iperf3 duration")
    ap.add_argument("--vm-mib", type=int, default=64,
                    help="VM size of the migration goodput figures (0: skip them)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--suite", choices=("fabric", "ports", "all"), default="all",
                    help="fabric: bring-up, relays, throughput, migrations (netdev ports); "
                         "ports: netdev vs AF_XDP ports, idle and under load")
    ap.add_argument("--ports", nargs="+", default=["netdev", "afxdp-nonpmd", "afxdp"],
                    help="switch port kinds of --suite ports")
    ap.add_argument("--fabrics", nargs="+", choices=sorted(FABRICS),
                    default=["fattree", "leafspine"], help="fabrics of --suite ports")
    ap.add_argument("--ports-vm-mib", type=int, default=8,
                    help="VM size of the migrations of --suite ports (quick.toml's; 0: skip)")
    ap.add_argument("--reps", type=int, default=3, help="repeats of each --suite ports figure")
    args = ap.parse_args(argv)
    res: dict[str, Any] = {"bringup": {}, "relay": {}, "throughput": {}, "migration": []}
    if args.suite in ("fabric", "all"):
        res = run(args.k, args.relays, args.seconds, args.vm_mib)
    if args.suite in ("ports", "all"):
        p = run_ports(args.ports, args.fabrics, args.reps, args.seconds, args.ports_vm_mib)
        res["ports"] = p["ports"]
        res["migration"] = res["migration"] + p["migration"]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        show(res)
    return 0
