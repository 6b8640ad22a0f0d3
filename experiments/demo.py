"""``sudo stealth-mtd demo``: the testbed end to end in about a minute.

Brings up the default topology (fat-tree k=4) with the os-ken controller, asks the controller
for one migration relay (source → two intermediates → leader → hidden destination), sends real
TCP traffic over every hop, prints what the switches counted on the relay's rules, removes the
relay and tears everything down. The experiments issue replaces this with the
attacker-versus-defender demo.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def hop_traffic(tb: Any, hop: dict[str, Any], seconds: float) -> float:
    """iperf3 over one hop (to the virtual address when the destination is hidden)."""
    dst_ip = hop.get("virtual_ip") or tb.ip(hop["to"])
    srv = tb.host(hop["to"]).popen(["iperf3", "-s", "-1", "-p", str(hop["port"])])
    try:
        time.sleep(0.4)
        out = tb.host(hop["from"]).cmd(
            f"iperf3 -c {dst_ip} -p {hop['port']} -t {seconds} -J")
        return json.loads(out)["end"]["sum_received"]["bytes"]
    finally:
        srv.kill()
        srv.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd demo", description=__doc__)
    ap.add_argument("--k", type=int, default=4, help="fat-tree size")
    ap.add_argument("--seed", type=int, default=None, help="seed for the relay's paths")
    ap.add_argument("--seconds", type=float, default=1.0, help="traffic per hop")
    args = ap.parse_args(argv)

    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    with console.status(f"bringing up fat-tree k={args.k} with the os-ken controller"):
        tb = Testbed(FatTreeTopo(args.k), seed=args.seed)
        tb.__enter__()
    try:
        d = tb.description
        console.print(f"[bold]testbed up[/] in {tb.timings['ready_s']:.1f} s: "
                      f"{len(d['switches'])} OVS switches ({_dp()}), {len(d['hosts'])} hosts")
        with console.status("pinging all hosts"):
            loss = tb.net.pingAll(timeout=1)
        console.print(f"all-pairs ping: {loss:.0f}% loss")
        hosts = [h["name"] for h in d["hosts"]]
        src, i1, i2, leader, dst = hosts[0], hosts[4], hosts[8], hosts[12], hosts[-1]
        hops = [{"from": src, "to": i1, "port": 9001}, {"from": src, "to": i2, "port": 9002},
                {"from": i1, "to": leader, "port": 9100},
                {"from": i2, "to": leader, "port": 9100},
                {"from": leader, "to": dst, "port": 9200, "hidden": True}]
        r = tb.mgmt({"op": "relay", "migration": "demo", "hops": hops, "seed": args.seed})
        console.print(f"relay installed: {r['rules']} rules on {len(r['switches'])} switches, "
                      f"confirmed in {r['install_s'] * 1e3:.1f} ms (cookie {r['cookie']:#x})")
        table = Table(title="relay hops: path and traffic")
        for c in ("hop", "port", "switch path", "bytes sent"):
            table.add_column(c)
        for hop in r["paths"]:
            with console.status(f"traffic {hop['from']} -> {hop['to']}"):
                sent = hop_traffic(tb, hop, args.seconds)
            shown = f"{hop['to']} (as {hop['virtual_ip']})" if hop["virtual_ip"] else hop["to"]
            table.add_row(f"{hop['from']} -> {shown}", str(hop["port"]),
                          " > ".join(hop["switches"]), f"{sent / 1e6:.1f} MB")
        console.print(table)
        counters = Table(title="what the switches counted on the relay's rules")
        for c in ("switch", "rules", "packets", "bytes"):
            counters.add_column(c, justify="right")
        for sw in r["switches"]:
            lines = tb.dump_flows(sw, r["cookie"])
            pk = sum(int(re.search(r"n_packets=(\d+)", x).group(1)) for x in lines)
            by = sum(int(re.search(r"n_bytes=(\d+)", x).group(1)) for x in lines)
            counters.add_row(sw, str(len(lines)), str(pk), str(by))
        console.print(counters)
        tb.mgmt({"op": "relay_remove", "migration": "demo"})
        left = sum(len(tb.dump_flows(sw, r["cookie"])) for sw in r["switches"])
        console.print(f"relay removed: {left} rules with its cookie left")
    finally:
        with console.status("tearing down"):
            tb.__exit__(None, None, None)
    console.print("[bold green]done[/]: network, controller and processes stopped")
    return 0


def _dp() -> str:
    from topologies.ovs import datapath_type

    return "userspace datapath" if datapath_type() == "user" else "kernel datapath"
