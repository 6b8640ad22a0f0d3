"""Normal traffic: the applications a VM runs, so that a migration has a crowd to hide in.

Each tenant host runs one ``serve`` process (a request/response service) and one ``client``
process that opens flows to random peers as a Poisson process. Flow sizes come from published
data-centre distributions: DCTCP's web-search CDF (Alizadeh et al., SIGCOMM 2010) and VL2's
data-mining CDF (Greenberg et al., SIGCOMM 2009), as tabulated in the pFabric simulations (sizes in
1460-byte packets), capped by the scenario so a 2-core emulation keeps up. Occasional bulk
transfers (backups) add large flows that are *not* migrations. Everything is seeded.

    python -m hosts.workload serve --ip 10.0.0.3 --port 8080
    python -m hosts.workload client --ip 10.0.0.3 --peers 10.0.0.1,10.0.0.2 --seed 3 \\
        --flows-per-s 4 --cdf websearch --duration 60

Started inside the Mininet hosts by ``experiments.fleet.start_workload`` (the runner and
monitor-eval); ``tests/unit/test_workload.py`` runs it on loopback.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("stealth_mtd.workload")

MSS = 1460
# (flow size in packets, cumulative probability)
CDFS: dict[str, list[tuple[float, float]]] = {
    "websearch": [(1, 0.0), (6, 0.15), (13, 0.2), (19, 0.3), (33, 0.4), (53, 0.53), (133, 0.6),
                  (667, 0.7), (1333, 0.8), (3333, 0.9), (6667, 0.97), (20000, 1.0)],
    "datamining": [(1, 0.0), (1, 0.5), (2, 0.6), (3, 0.7), (7, 0.8), (267, 0.9), (2107, 0.95),
                   (66667, 0.99), (666667, 1.0)],
}
CHUNK = 64 * 1024
_BLOB = os.urandom(CHUNK)  # payload bytes; contents do not matter, sizes and timing do


@dataclass
class FlowSizes:
    """Inverse-transform sampling from a piecewise-linear CDF, capped at ``cap`` bytes."""

    cdf: Sequence[tuple[float, float]]
    cap: int = 8 * 1024 * 1024

    def sample(self, rng: random.Random) -> int:
        u = rng.random()
        probs = [p for _, p in self.cdf]
        i = max(1, bisect.bisect_left(probs, u))
        (x0, p0), (x1, p1) = self.cdf[i - 1], self.cdf[i]
        x = x0 if p1 == p0 else x0 + (x1 - x0) * (u - p0) / (p1 - p0)
        return int(min(self.cap, max(64, x * MSS)))


def flow_sizes(name: str, cap: int) -> FlowSizes:
    if name not in CDFS:
        raise ValueError(f"unknown flow-size distribution {name!r}; choose from {sorted(CDFS)}")
    return FlowSizes(CDFS[name], cap)


# -- server ------------------------------------------------------------------------------------
class _Service(socketserver.StreamRequestHandler):
    """``GET n`` → n bytes back; ``PUT n`` then n bytes → ``OK``. One request per connection."""

    def handle(self) -> None:
        try:
            line = self.rfile.readline(64).decode(errors="replace").split()
            if len(line) != 2 or line[0] not in ("GET", "PUT") or not line[1].isdigit():
                self.wfile.write(b"ERR bad request\n")
                return
            n = min(int(line[1]), 1 << 31)
            if line[0] == "GET":
                while n > 0:
                    part = _BLOB[: min(n, CHUNK)]
                    self.wfile.write(part)
                    n -= len(part)
            else:
                while n > 0:
                    got = self.rfile.read(min(n, CHUNK))
                    if not got:
                        return
                    n -= len(got)
                self.wfile.write(b"OK\n")
        except (ConnectionError, TimeoutError, OSError):
            return


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def serve(ip: str, port: int) -> Server:
    """Start the service in a background thread and return the server."""
    srv = Server((ip, port), _Service)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# -- client -----------------------------------------------------------------------------------
def one_flow(src_ip: str, dst: tuple[str, int], size: int, put: bool,
             timeout: float = 30.0) -> int:
    """One request/response exchange; returns bytes moved (0 on failure)."""
    try:
        with socket.create_connection(dst, timeout=timeout, source_address=(src_ip, 0)) as s:
            if put:
                s.sendall(f"PUT {size}\n".encode())
                left = size
                while left > 0:
                    part = _BLOB[: min(left, CHUNK)]
                    s.sendall(part)
                    left -= len(part)
                return size if s.recv(16).startswith(b"OK") else 0
            s.sendall(f"GET {size}\n".encode())
            got = 0
            while got < size:
                part = s.recv(CHUNK)
                if not part:
                    break
                got += len(part)
            return got
    except OSError as exc:
        log.debug("flow to %s failed: %s", dst, exc)
        return 0


@dataclass
class ClientStats:
    flows: int = 0
    failed: int = 0
    bytes: int = 0
    bulk: int = 0


def run_client(ip: str, peers: list[tuple[str, int]], seed: int, flows_per_s: float,
               sizes: FlowSizes, duration: float, bulk_per_min: float = 0.5,
               bulk_bytes: tuple[int, int] = (4 << 20, 16 << 20),
               stop: threading.Event | None = None, max_parallel: int = 8) -> ClientStats:
    """Open flows to random peers as a Poisson process until ``duration`` or ``stop``."""
    rng = random.Random(seed)
    stats = ClientStats()
    stop = stop or threading.Event()
    slots = threading.BoundedSemaphore(max_parallel)
    lock = threading.Lock()
    end = time.monotonic() + duration
    bulk_rate = bulk_per_min / 60.0

    def flow(dst: tuple[str, int], size: int, put: bool, bulk: bool) -> None:
        try:
            moved = one_flow(ip, dst, size, put)
            with lock:
                stats.flows += 1
                stats.bytes += moved
                stats.bulk += int(bulk)
                stats.failed += int(moved == 0)
        finally:
            slots.release()

    total_rate = flows_per_s + bulk_rate
    next_report = time.monotonic() + 10.0
    while not stop.is_set() and time.monotonic() < end:
        if time.monotonic() >= next_report:
            next_report += 10.0
            log.info("event=progress ip=%s flows=%d failed=%d bytes=%d bulk=%d", ip,
                     stats.flows, stats.failed, stats.bytes, stats.bulk)
        stop.wait(rng.expovariate(total_rate))
        if stop.is_set() or time.monotonic() >= end:
            break
        bulk = rng.random() < bulk_rate / total_rate
        size = rng.randint(*bulk_bytes) if bulk else sizes.sample(rng)
        dst = peers[rng.randrange(len(peers))]
        put = bulk or rng.random() < 0.3
        if not slots.acquire(timeout=0.5):
            continue  # saturated: skip this arrival rather than queue without bound
        threading.Thread(target=flow, args=(dst, size, put, bulk), daemon=True).start()
    for _ in range(max_parallel):  # let flows in progress finish (bounded by their timeout)
        slots.acquire(timeout=35)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hosts.workload", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--ip", required=True)
    s.add_argument("--port", type=int, default=8080)
    c = sub.add_parser("client", help="the client; with --serve also the service (one process)")
    c.add_argument("--serve", action="store_true", help="also serve on --ip/--port")
    c.add_argument("--ip", required=True)
    c.add_argument("--peers", required=True, help="comma-separated IPs (port from --port)")
    c.add_argument("--port", type=int, default=8080)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--flows-per-s", type=float, default=2.0)
    c.add_argument("--cdf", default="websearch", choices=sorted(CDFS))
    c.add_argument("--cap-bytes", type=int, default=4 << 20)
    c.add_argument("--bulk-per-min", type=float, default=0.5)
    c.add_argument("--bulk-max-bytes", type=int, default=16 << 20)
    c.add_argument("--duration", type=float, default=3600)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.cmd == "serve":
        srv = serve(args.ip, args.port)
        log.info("event=serving ip=%s port=%d", args.ip, args.port)
        while not stop.wait(1.0):
            pass
        srv.shutdown()
        return 0
    srv = serve(args.ip, args.port) if args.serve else None
    if srv is not None:
        stop.wait(1.0)  # let the peers' services come up before the first request
    peers = [(p, args.port) for p in args.peers.split(",") if p and p != args.ip]
    if not peers:
        print("workload client: no peers", file=sys.stderr)
        return 2
    stats = run_client(args.ip, peers, args.seed, args.flows_per_s,
                       flow_sizes(args.cdf, args.cap_bytes), args.duration,
                       args.bulk_per_min,
                       bulk_bytes=(min(args.bulk_max_bytes // 4, 4 << 20), args.bulk_max_bytes),
                       stop=stop)
    print(json.dumps(stats.__dict__))
    if srv is not None:
        while not stop.wait(1.0):  # keep serving the others until told to stop
            pass
        srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
