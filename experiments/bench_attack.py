"""``stealth-mtd bench attack``: packets per second through the attackers, next to numpy's own.

The figure is the offline analysis of one trial's global capture as ``attacks.pipeline`` runs it
(``build_view``: aliases, de-duplication, window features, relay evidence; then every attacker of
``ATTACKERS``: detection, ranking, relay graph), packets counted as captured (before copies are
dropped), reading the pcap excluded. Captures:

- a synthetic global capture (``--packets``, default 1 M rows): background flows between
  ``--hosts`` hosts and a stealth migration (source → 3 intermediates → leader → destination),
  every packet seen at two switches (a core and an edge one, 20 µs apart);
- with ``--run DIR``, the largest pcap of a run folder (``DIR/pcaps``).

References on the same table: a groupby-sum of payload bytes per window (one ``np.bincount``)
and per (source, destination) pair (``np.unique`` with inverse, then ``np.bincount``): what numpy
does per second with no per-packet Python at all.

``--code DIR`` imports ``attacks`` from another checkout (e.g. an export of the commit before the
vectorised attackers) for the *before* figure: ``git archive <commit> attacks | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MSS = 1448


def _flow_rows(
    rng: np.random.Generator, src: np.ndarray, dst: np.ndarray, t0: np.ndarray, nbytes: np.ndarray
) -> list[np.ndarray]:
    """Data segments (paced at 2-40 Mbit/s) and one ACK per two segments back, for many flows."""
    from attacks.capture import PACKET_DTYPE

    nseg = -(-nbytes // MSS)
    flow = np.repeat(np.arange(len(src)), nseg)
    first = np.repeat(np.cumsum(nseg) - nseg, nseg)
    k = np.arange(len(flow)) - first  # segment number within its flow
    rate = rng.uniform(2e6, 40e6, len(src))[flow]
    ts = t0[flow] + k * (MSS * 8 / rate) * rng.gamma(4.0, 0.25, len(flow))
    plen = np.where(k == nseg[flow] - 1, nbytes[flow] - MSS * (nseg[flow] - 1), MSS)
    sport = rng.integers(32768, 61000, len(src)).astype(np.uint16)
    data = np.zeros(len(flow), dtype=PACKET_DTYPE)
    data["ts"], data["src"], data["dst"] = ts, src[flow], dst[flow]
    data["sport"], data["dport"], data["proto"], data["flags"] = sport[flow], 80, 6, 0x18
    data["plen"], data["length"] = plen, plen + 52
    data["seq"] = (k * MSS) & 0xFFFFFFFF
    data["ipid"] = rng.integers(0, 65536, len(flow))
    data["ttl"] = 64
    ack = data[k % 2 == 1].copy()
    ack["src"], ack["dst"] = ack["dst"].copy(), ack["src"].copy()
    ack["sport"], ack["dport"] = ack["dport"].copy(), ack["sport"].copy()
    ack["ts"] += 2e-4
    ack["plen"], ack["length"], ack["flags"] = 0, 52, 0x10
    ack["ipid"] = rng.integers(0, 65536, len(ack))
    return [data, ack]


def synthetic_global(n_packets: int = 1_000_000, hosts: int = 64, seed: int = 0) -> list[Any]:
    """Two switches' captures (``attacks.capture.Capture``) of one synthetic trial, together
    about ``n_packets`` rows."""
    from attacks.capture import Capture

    rng = np.random.default_rng(seed)
    ips = (10 << 24) + 1 + np.arange(hosts, dtype=np.uint32)
    duration = 60.0
    # background: heavy-tailed responses, busy servers; about 0.8 packets per 1 kB
    nflows = max(10, n_packets // 2 // 118)
    server = rng.choice(hosts, nflows, p=(w := rng.pareto(1.5, hosts) + 0.3) / w.sum())
    client = (server + rng.integers(1, hosts, nflows)) % hosts
    size = np.minimum(rng.lognormal(np.log(30e3), 1.5, nflows), 6e6).astype(np.int64) + 1000
    parts = _flow_rows(rng, ips[server], ips[client], rng.uniform(0, duration, nflows), size)
    # a stealth migration: chunks source → intermediate → leader → destination, relayed in ms
    s, i1, i2, i3, lead, d = ips[rng.choice(hosts, 6, replace=False)]
    nchunk = 120
    chunk = rng.integers(20_000, 400_000, nchunk)
    t = 20.0 + np.cumsum(rng.exponential(0.1, nchunk))
    inter = np.array([i1, i2, i3], dtype=np.uint32)[np.arange(nchunk) % 3]
    for hop_src, hop_dst, delay, extra in (
        (np.full(nchunk, s), inter, 0.0, 0),
        (inter, np.full(nchunk, lead), 0.01, 24),
        (np.full(nchunk, lead), np.full(nchunk, d), 0.02, -16),
    ):
        parts += _flow_rows(rng, hop_src, hop_dst, t + delay, chunk + extra)
    table = np.concatenate(parts)
    table = table[np.argsort(table["ts"], kind="stable")]
    table["ts"] += 1.79e9
    edge = table.copy()
    edge["ts"] += 2e-5
    edge["vp"] = 1
    return [Capture(table, ["core"]), Capture(edge, ["edge"])]


def attack_seconds(captures: list[Any], repeats: int = 1) -> tuple[float, float]:
    """Best wall time and best CPU time (this process) of one trial's analysis (view + every
    attacker) over ``repeats``; the CPU time is the figure that holds on a busy machine."""
    from attacks.pipeline import ATTACKERS
    from attacks.truth import GLOBAL, Vantage
    from attacks.view import AttackContext, build_view

    vantage = GLOBAL if len(captures) > 1 else Vantage(captures[0].vantages[0])
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        view = build_view(vantage, 0, captures)
        for name, attack in ATTACKERS.items():
            attack([view], AttackContext(name, [None]))
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


def reference_rates(packets: np.ndarray) -> dict[str, float]:
    """Packets per second (of CPU time) of numpy's own groupby-sums over the table."""
    t0 = float(packets["ts"].min())
    t = time.process_time()
    np.bincount(((packets["ts"] - t0) // 1.0).astype(np.int64), weights=packets["plen"])
    by_window = time.process_time() - t
    t = time.process_time()
    key = packets["src"].astype(np.uint64) << np.uint64(32) | packets["dst"].astype(np.uint64)
    _, inv = np.unique(key, return_inverse=True)
    np.bincount(inv.ravel(), weights=packets["plen"])
    by_pair = time.process_time() - t
    n = len(packets)
    return {
        "groupby_window_pps": n / max(by_window, 1e-9),
        "groupby_pair_pps": n / max(by_pair, 1e-9),
    }


def measure(name: str, captures: list[Any], repeats: int) -> dict[str, Any]:
    packets = np.concatenate([c.packets for c in captures])
    attack_seconds(captures, 1)  # warm-up: imports, caches
    s, cpu = attack_seconds(captures, repeats)
    return {
        "capture": name,
        "packets": int(len(packets)),
        "seconds": s,
        "cpu_seconds": cpu,
        "attack_pps": len(packets) / s,
        "attack_pps_cpu": len(packets) / cpu,
        **reference_rates(packets),
    }


def largest_capture(run: Path) -> Path:
    pcaps = sorted((run / "pcaps").glob("*.pcap*")) or sorted(run.glob("**/*.pcap*"))
    if not pcaps:
        raise SystemExit(f"no pcaps under {run}")
    return max(pcaps, key=lambda p: p.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stealth-mtd bench attack", description=__doc__.split("\n")[0])
    p.add_argument("--packets", type=int, default=1_000_000, help="rows of the synthetic capture")
    p.add_argument("--hosts", type=int, default=64)
    p.add_argument("--run", type=Path, help="also the largest capture of this run folder")
    p.add_argument("--repeats", type=int, default=3, help="best of this many analyses")
    p.add_argument("--code", type=Path, help="import attacks from this checkout (before figure)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = p.parse_args(argv)
    if a.code is not None:
        sys.path.insert(0, str(a.code.resolve()))
    import attacks

    figs = [measure("synthetic global", synthetic_global(a.packets, a.hosts), a.repeats)]
    if a.run is not None:
        from attacks.capture import read_pcap

        pcap = largest_capture(a.run)
        t = time.perf_counter()
        cap = read_pcap(pcap)
        read_s = time.perf_counter() - t
        figs.append({**measure(str(pcap), [cap], a.repeats), "read_seconds": read_s})
    for f in figs:
        f["code"] = str(Path(attacks.__file__).parent)
    if a.json:
        print(json.dumps(figs, indent=2))
        return 0
    for f in figs:
        print(
            f"{f['capture']}: {f['packets']:,} packets in {f['seconds']:.2f} s = "
            f"{f['attack_pps'] / 1e6:.2f} M packets/s through the attackers "
            f"({f['attack_pps_cpu'] / 1e6:.2f} M/s of CPU time) "
            f"(numpy groupby-sum by window {f['groupby_window_pps'] / 1e6:.0f} M/s, "
            f"by host pair {f['groupby_pair_pps'] / 1e6:.1f} M/s"
            + (f"; reading the pcap {f['read_seconds']:.2f} s" if "read_seconds" in f else "")
            + f") [attacks from {f['code']}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
