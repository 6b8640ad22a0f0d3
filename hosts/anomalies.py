"""Anomalies a VM can be driven into, as real processes in its Mininet host (for the monitor).

    python -m hosts.anomalies scan   --ip SRC --target 10.0.0.5[,10.0.0.6] [--ports 1-1024]
    python -m hosts.anomalies exfil  --ip SRC --target 10.0.0.5 --port 4444 [--bytes 64000000]
    python -m hosts.anomalies miner  [--duration 30]
    python -m hosts.anomalies beacon --ip SRC --target 10.0.0.5 --port 4444 [--period 2]
    python -m hosts.anomalies serve  --ip 10.0.0.5 --port 4444   # the C2 / exfiltration sink

- ``scan``: TCP connects over many ports of other hosts (closed ports answer RST at once);
- ``exfil``: one big upload to one peer, as fast as the network takes it;
- ``miner``: a busy SHA-256 loop (one core);
- ``beacon``: a short check-in with a command-and-control address every ``period`` seconds;
- ``serve``: the other end of ``exfil`` and ``beacon``: reads and discards, answers each line.

Targets are restricted to the testbed's own hosts (10.0.0.0/16) and loopback (127.0.0.0/8, for
tests): anything else is refused. Started by ``experiments.monitor_eval`` and the monitor tests.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time

log = logging.getLogger("stealth_mtd.anomalies")

ALLOWED = [ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("127.0.0.0/8")]
KINDS = ("scan", "exfil", "miner", "beacon")
VERDICTS = {"scan": "port_scan", "exfil": "exfiltration", "miner": "miner",
            "beacon": "beaconing"}


class TargetRefused(ValueError):
    """A target outside the testbed; only its own hosts (10.0.0.0/16) or loopback are allowed."""


def check_target(ip: str) -> str:
    """``ip`` if it is a testbed host or loopback, else TargetRefused."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise TargetRefused(f"{ip!r} is not an IP address") from None
    if not any(addr in net for net in ALLOWED):
        raise TargetRefused(f"{ip} is outside the testbed (allowed: 10.0.0.0/16, 127.0.0.0/8)")
    return ip


def parse_ports(spec: str) -> list[int]:
    """``"1-100,443"`` → [1, ..., 100, 443]."""
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = (int(x) for x in part.split("-"))
            out += range(a, b + 1)
        elif part:
            out.append(int(part))
    if any(not 0 < p < 65536 for p in out):
        raise ValueError(f"bad port in {spec!r}")
    return out


def scan(src: str, targets: list[str], ports: list[int], timeout: float = 0.3,
         rate: float = 0.0) -> dict[str, int]:
    """Connect to every (target, port); returns counts of open / closed / silent ports."""
    for t in targets:
        check_target(t)
    res = {"open": 0, "closed": 0, "silent": 0}
    gap = 1.0 / rate if rate > 0 else 0.0
    for t in targets:
        for port in ports:
            with socket.socket() as s:
                s.settimeout(timeout)
                s.bind((src, 0))
                rc = s.connect_ex((t, port))
            res["open" if rc == 0 else "silent" if rc in (11, 115, 110) else "closed"] += 1
            if gap:
                time.sleep(gap)
    return res


def exfil(src: str, target: str, port: int, nbytes: int, duration: float = 60.0) -> int:
    """Upload ``nbytes`` to ``target:port`` (stops after ``duration``); returns bytes sent."""
    check_target(target)
    blob = os.urandom(64 * 1024)
    sent = 0
    end = time.monotonic() + duration
    with socket.create_connection((target, port), timeout=10, source_address=(src, 0)) as s:
        while sent < nbytes and time.monotonic() < end:
            sent += s.send(blob[: min(len(blob), nbytes - sent)])
    return sent


def miner(duration: float) -> int:
    """Hash for ``duration`` seconds on one core; returns the number of hashes."""
    h = hashlib.sha256(b"block")
    n = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for _ in range(2000):
            h = hashlib.sha256(h.digest())
        n += 2000
    return n


def beacon(src: str, target: str, port: int, period: float, count: int, name: str) -> int:
    """Check in with the C2 address every ``period`` s, ``count`` times; returns answers got."""
    check_target(target)
    got = 0
    t_next = time.monotonic()
    for i in range(count):
        try:
            with socket.create_connection((target, port), timeout=3,
                                          source_address=(src, 0)) as s:
                s.sendall(f"beacon {name} {i}\n".encode())
                if s.recv(64):
                    got += 1
        except OSError as exc:
            log.info("event=beacon_failed i=%d error=%s", i, exc)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    return got


class _Sink(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(1 << 16)
            if not line:
                return
            if line.endswith(b"\n"):
                self.wfile.write(b"ok\n")


class Sink(socketserver.ThreadingTCPServer):
    """The C2 server and exfiltration sink."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ip: str, port: int) -> None:
        super().__init__((ip, port), _Sink)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hosts.anomalies",
                                description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=[*KINDS, "serve"])
    p.add_argument("--ip", default="0.0.0.0", help="this host's address (bind)")
    p.add_argument("--target", default="", help="comma-separated testbed addresses")
    p.add_argument("--port", type=int, default=4444)
    p.add_argument("--ports", default="1-1024", help="scan: ports, e.g. 1-1024,8080")
    p.add_argument("--rate", type=float, default=0.0, help="scan: connects per second (0: max)")
    p.add_argument("--bytes", type=int, default=64_000_000, help="exfil: bytes to upload")
    p.add_argument("--period", type=float, default=2.0, help="beacon: seconds between check-ins")
    p.add_argument("--count", type=int, default=1000, help="beacon: check-ins")
    p.add_argument("--duration", type=float, default=60.0, help="miner/exfil: at most seconds")
    p.add_argument("--name", default=socket.gethostname())
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    targets = [t for t in a.target.split(",") if t]
    try:
        for t in targets:
            check_target(t)
        if a.kind in ("scan", "exfil", "beacon") and not targets:
            p.error(f"{a.kind} needs --target")
        t0 = time.time()
        log.info("event=anomaly_start kind=%s targets=%s t=%.3f", a.kind, targets, t0)
        if a.kind == "serve":
            srv = Sink(a.ip, a.port)
            log.info("event=serving ip=%s port=%d", a.ip, a.port)
            srv.serve_forever()
            return 0
        if a.kind == "scan":
            out: object = scan(a.ip, targets, parse_ports(a.ports), rate=a.rate)
        elif a.kind == "exfil":
            out = exfil(a.ip, targets[0], a.port, a.bytes, a.duration)
        elif a.kind == "miner":
            out = miner(a.duration)
        else:
            out = beacon(a.ip, targets[0], a.port, a.period, a.count, a.name)
        log.info("event=anomaly_end kind=%s result=%s t=%.3f", a.kind, out, time.time())
    except TargetRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
