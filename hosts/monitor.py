"""Alg 1, the monitor: watch one VM's host from inside its network namespace and report anomalies.

One process per host, started in the Mininet host next to its agent::

    python -m hosts.monitor --host h1 --ip 10.0.0.1 --mgmt CONTROLLER_SOCK \\
        [--interval 1.0] [--train-s 30] [--report aware|unaware|none] [--log-json FILE]

Every ``interval`` it reads real signals of the host (the reading process's own namespace is the
host's: ``/proc/net/*`` always shows the reader's network namespace):

- interface counters (``/proc/net/dev``, every interface but ``lo``): bytes and packets each way;
- the TCP counters of the namespace (``/proc/net/snmp``): connections opened, failed attempts
  (a scan of closed ports shows here even though its sockets live for microseconds);
- the TCP table (``/proc/net/tcp``, ``tcp6``): connections, new connections, the distinct
  remote ports this host connects to, peers and ports never contacted before, and contacts to
  ports the host never used while it was trained (a closed connection stays visible in
  TIME_WAIT for a minute on the side that closed it);
- the CPU of the processes in the namespace (``/proc/<pid>/stat`` of every pid whose
  ``/proc/<pid>/ns/net`` is ours; the VM runs inside the agent process, the monitor leaves
  itself out).

The first ``train_s`` seconds are the VM's normal behaviour: an IsolationForest (scikit-learn) is
fitted on them and the rules' thresholds are taken from them. After that every interval gets a
model score and the rules' verdicts (``port_scan``, ``exfiltration``, ``miner``, ``beaconing``);
a rule that fires, or a model score above the training range for 5 intervals in a row, is an
alarm, reported to the controller (``{"op": "anomaly", "host", "kind", "score"}``; once, or
again ``--rearm-s`` after a report), which
starts the stealth migration with no human step (Alg 1 → Alg 2 … Alg 6).

Migration awareness: the monitor asks the controller which migrations run
(``{"op": "migrations_active"}``). While this host plays a role in one (and ``grace_s`` after),
the migration's own connections (its relay ports, between its hosts) are left out of the
connection features, their bytes (per socket, from ``ss -ti``) are taken off the interface
counters, and the agent's CPU (which encrypts and relays) is left out. Each interval is judged
both ways — with and without awareness — and both verdicts go to the JSON log, so one run
measures the false alarms migration-awareness avoids. ``--report`` says which verdict is sent.

Pure parsing and feature functions are at the top (tested without root); the loop is ``run``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("stealth_mtd.monitor")

MIGRATION_PORTS = range(8090, 8100)  # controllers.migrations.RELAY_PORTS
TCP_LISTEN = 0x0A
TCP_SYN_SENT = 0x02
FEATURES = ["tx_Bps", "rx_Bps", "tx_pps", "rx_pps", "opens_ps", "fails_ps", "conns",
            "new_conns", "out_ports", "new_ports", "new_peers", "rare_conns", "cpu"]
KINDS = ["port_scan", "exfiltration", "miner", "beaconing"]


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


EPHEMERAL = _ephemeral()


# ============================================================================ parsing (pure)
def parse_net_dev(text: str) -> dict[str, tuple[int, int, int, int]]:
    """``/proc/net/dev`` → {iface: (rx_bytes, rx_packets, tx_bytes, tx_packets)}."""
    out = {}
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        name, rest = line.split(":", 1)
        f = rest.split()
        if len(f) < 10:
            continue
        out[name.strip()] = (int(f[0]), int(f[1]), int(f[8]), int(f[9]))
    return out


def parse_snmp_tcp(text: str) -> dict[str, int]:
    """The ``Tcp:`` counters of ``/proc/net/snmp`` (ActiveOpens, AttemptFails, ...)."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=False)}


@dataclass(frozen=True)
class TcpConn:
    """One row of ``/proc/net/tcp``."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.local_ip, self.local_port, self.remote_ip, self.remote_port)


def _hex_ip(h: str) -> str:
    if len(h) == 8:  # IPv4, little-endian 32-bit word
        b = bytes.fromhex(h)[::-1]
        return ".".join(str(x) for x in b)
    words = [bytes.fromhex(h[i:i + 8])[::-1] for i in range(0, 32, 8)]
    raw = b"".join(words)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":  # v4-mapped
        return ".".join(str(x) for x in raw[12:])
    return ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2))


def parse_tcp_table(text: str) -> list[TcpConn]:
    """``/proc/net/tcp`` or ``tcp6`` → connections (addresses in dotted form)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 4 or ":" not in f[1]:
            continue
        lip, lport = f[1].split(":")
        rip, rport = f[2].split(":")
        out.append(TcpConn(_hex_ip(lip), int(lport, 16), _hex_ip(rip), int(rport, 16),
                           int(f[3], 16)))
    return out


def parse_proc_stat(text: str) -> int:
    """``/proc/<pid>/stat`` → utime + stime in clock ticks (the command may hold spaces)."""
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # fields 14 and 15 of the stat line


_SS_BYTES = re.compile(r"bytes_(acked|received):(\d+)")


def parse_ss(text: str) -> dict[tuple[str, int, str, int], tuple[int, int]]:
    """``ss -tinH`` → {(local ip, port, remote ip, port): (bytes_acked, bytes_received)}."""
    out: dict[tuple[str, int, str, int], tuple[int, int]] = {}
    key = None
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if not line[0].isspace() and len(f) >= 4 and ":" in f[-1] and ":" in f[-2]:
            try:
                lip, lport = f[-2].rsplit(":", 1)
                rip, rport = f[-1].rsplit(":", 1)
                key = (lip.strip("[]").removeprefix("::ffff:"), int(lport),
                       rip.strip("[]").removeprefix("::ffff:"), int(rport))
            except ValueError:
                key = None
            continue
        if key is not None:
            got = dict(_SS_BYTES.findall(line))
            out[key] = (int(got.get("acked", 0)), int(got.get("received", 0)))
            key = None
    return out


# ============================================================================ sampling
@dataclass
class Sample:
    """What the host looked like at time ``t``."""

    t: float
    ifaces: dict[str, tuple[int, int, int, int]]
    tcp: dict[str, int]
    conns: list[TcpConn]
    cpu: dict[int, tuple[int, str]]  # pid -> (ticks, "agent" | "other")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class ProcessFinder:
    """The pids of the processes in this network namespace (a Mininet host shares the PID
    namespace with the machine, so ``/proc`` lists everyone: keep those whose ``ns/net`` is
    ours). Caches pid → (netns inode, kind); needs root to look at other users' processes."""

    def __init__(self, proc: str = "/proc", self_pid: int | None = None) -> None:
        self.proc = proc
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.ns = os.stat(f"{proc}/self/ns/net").st_ino
        self.cache: dict[int, tuple[int, str] | None] = {}

    def pids(self) -> dict[int, str]:
        out = {}
        live = set()
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            pid = int(name)
            live.add(pid)
            if pid not in self.cache:
                try:
                    ino = os.stat(f"{self.proc}/{pid}/ns/net").st_ino
                    cmd = _read(f"{self.proc}/{pid}/cmdline").replace("\0", " ")
                except OSError:
                    self.cache[pid] = None
                    continue
                kind = "agent" if "hosts.agent" in cmd else "other"
                self.cache[pid] = (ino, kind) if ino == self.ns else None
            got = self.cache[pid]
            if got is not None and pid != self.self_pid:
                out[pid] = got[1]
        for pid in set(self.cache) - live:
            del self.cache[pid]
        return out


def read_sample(finder: ProcessFinder, proc: str = "/proc") -> Sample:
    conns = []
    for name in ("tcp", "tcp6"):
        try:
            conns += parse_tcp_table(_read(f"{proc}/net/{name}"))
        except OSError:
            pass
    cpu = {}
    for pid, kind in finder.pids().items():
        try:
            cpu[pid] = (parse_proc_stat(_read(f"{proc}/{pid}/stat")), kind)
        except (OSError, ValueError, IndexError):
            continue
    return Sample(time.monotonic(), parse_net_dev(_read(f"{proc}/net/dev")),
                  parse_snmp_tcp(_read(f"{proc}/net/snmp")), conns, cpu)


def migration_socket_bytes(ports: Iterable[int]) -> dict[tuple[str, int, str, int],
                                                          tuple[int, int]]:
    """Per-socket bytes of the migration's connections (``ss -ti``, this namespace)."""
    ps = sorted(set(ports))
    if not ps:
        return {}
    flt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ps)
    try:
        out = subprocess.run(["ss", "-tinH", "state", "all", f"( {flt} )"],
                             capture_output=True, text=True, timeout=2).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_ss(out)


# ============================================================================ features (pure)
@dataclass
class MigrationContext:
    """What the monitor discounts while its host plays a role in a migration."""

    ports: set[int]
    peers: set[str]

    def covers(self, c: TcpConn) -> bool:
        return (c.local_port in self.ports or c.remote_port in self.ports) and \
            c.remote_ip in self.peers


@dataclass
class FeatureExtractor:
    """Turns two consecutive samples into one feature row; keeps what the host has contacted."""

    seen_ports: set[int] = field(default_factory=set)
    seen_peers: set[str] = field(default_factory=set)
    known_ports: set[int] | None = None  # outbound ports of the training period (frozen)
    prev_keys: set[tuple[str, int, str, int]] = field(default_factory=set)
    mig_bytes: dict[tuple[str, int, str, int], tuple[int, int]] = field(default_factory=dict)
    listened: set[int] = field(default_factory=set)

    def freeze(self) -> None:
        """The training period is over: the ports used so far are the known ones, with the
        ports this host serves itself (the tenants run the same services; a short request to a
        peer's service may open and close between two snapshots and never be seen)."""
        self.known_ports = set(self.seen_ports) | self.listened

    def step(self, prev: Sample, cur: Sample, ctx: MigrationContext | None = None,
             mig_sockets: dict[tuple[str, int, str, int], tuple[int, int]] | None = None,
             ) -> tuple[dict[str, float], dict[str, Any]]:
        """Features of the interval ``prev → cur`` and notes (the rare targets contacted)."""
        dt = max(cur.t - prev.t, 1e-3)
        rxb = rxp = txb = txp = 0
        for name, now in cur.ifaces.items():
            if name == "lo" or name not in prev.ifaces:
                continue
            was = prev.ifaces[name]
            rxb += now[0] - was[0]
            rxp += now[1] - was[1]
            txb += now[2] - was[2]
            txp += now[3] - was[3]
        # the migration's own bytes, per socket, off the interface counters
        if ctx is not None and mig_sockets is not None:
            for k, (acked, recvd) in mig_sockets.items():
                a0, r0 = self.mig_bytes.get(k, (0, 0))
                dtx, drx = max(0, acked - a0), max(0, recvd - r0)
                txb -= dtx
                rxb -= drx
                txp -= dtx // 1448 + (1 if dtx else 0)
                rxp -= drx // 1448 + (1 if drx else 0)
            self.mig_bytes = dict(mig_sockets)
        elif ctx is None:
            self.mig_bytes = {}
        d = {k: cur.tcp.get(k, 0) - prev.tcp.get(k, 0) for k in ("ActiveOpens", "AttemptFails")}
        # a connection is ours (outbound) if its local port is ephemeral and never listened:
        # a closed listener (the VM's service after it left, a relay after the migration)
        # leaves accepted connections behind that must not look like connects to many ports
        self.listened |= {c.local_port for c in cur.conns if c.state == TCP_LISTEN}
        listening = self.listened | {p for p in {c.local_port for c in cur.conns}
                                     if not EPHEMERAL[0] <= p <= EPHEMERAL[1]}
        conns = [c for c in cur.conns if c.state != TCP_LISTEN
                 and not (ctx is not None and ctx.covers(c))]
        new = [c for c in conns if c.key not in self.prev_keys]
        if ctx is not None:  # the migration's own connects are not the VM's
            mig_new = [c for c in cur.conns if ctx.covers(c) and c.key not in self.prev_keys
                       and c.local_port not in listening]
            d["ActiveOpens"] -= len(mig_new)
        self.prev_keys = {c.key for c in cur.conns}
        outbound = [c for c in conns if c.local_port not in listening]
        new_out = [c for c in new if c.local_port not in listening]
        out_ports = {c.remote_port for c in outbound}
        new_ports = {c.remote_port for c in new_out} - self.seen_ports
        peers = {c.remote_ip for c in conns}
        new_peers = peers - self.seen_peers
        self.seen_ports |= {c.remote_port for c in new_out}
        self.seen_peers |= peers
        known = self.known_ports if self.known_ports is not None else self.seen_ports
        rare = sorted({(c.remote_ip, c.remote_port) for c in new_out
                       if c.remote_port not in known})
        ticks = 0
        for pid, (t, kind) in cur.cpu.items():
            if ctx is not None and kind == "agent":
                continue
            if pid in prev.cpu:
                ticks += max(0, t - prev.cpu[pid][0])
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        row = {
            "tx_Bps": max(0, txb) / dt, "rx_Bps": max(0, rxb) / dt,
            "tx_pps": max(0, txp) / dt, "rx_pps": max(0, rxp) / dt,
            "opens_ps": max(0, d["ActiveOpens"]) / dt, "fails_ps": max(0, d["AttemptFails"]) / dt,
            "conns": float(len(conns)), "new_conns": float(len(new)),
            "out_ports": float(len(out_ports)), "new_ports": float(len(new_ports)),
            "new_peers": float(len(new_peers)), "rare_conns": float(len(rare)),
            "cpu": ticks / hz / dt,
        }
        return row, {"rare": rare}


# ============================================================================ detection (pure)
def vector(row: dict[str, float]) -> list[float]:
    """The model's input: log-scaled features in ``FEATURES`` order."""
    return [math.log1p(max(0.0, float(row[k]))) for k in FEATURES]


@dataclass
class Verdict:
    """One interval's judgement."""

    alert: bool
    kind: str | None
    score: float
    rules: list[str]


class Detector:
    """Rules plus an IsolationForest, both calibrated on the VM's normal behaviour.

    Rules (thresholds from the training rows, with floors so a quiet host is not hair-trigger):
    ``port_scan`` — failed connects or distinct remote ports far above normal in one interval;
    ``exfiltration`` — sent bytes above ``3x`` the training maximum (at least 3 MB/s) for 3
    intervals: more than 9 MB, so a tenant's backup burst (up to 4 MB in the shipped
    workloads) is not an exfiltration;
    ``miner`` — CPU half a core above the training maximum for 3 intervals;
    ``beaconing`` — the same (peer, port) never used in training contacted in 3 of the last 8
    intervals. The model: an isolation forest on the log-scaled features, each clipped from
    below at its training median (the monitor looks for more activity than normal, not less);
    its score (higher = more anomalous) plus a term for
    features beyond the training range (an isolation forest's splits lie inside that range, so
    on its own it scores a point far outside no worse than the most extreme training point); an
    alarm when it is above the training maximum plus a margin for 5 intervals in a row.
    """

    def __init__(self, seed: int = 0, margin: float = 0.1, model_run: int = 5) -> None:
        self.seed = seed
        self.margin = margin
        self.model_run = model_run
        self.model: Any = None
        self.range_weight = 0.1
        self.hi: list[float] = []
        self.lo: list[float] = []
        self.span: list[float] = []
        self.threshold = float("inf")
        self.limits: dict[str, float] = {}

    @property
    def trained(self) -> bool:
        return self.model is not None

    def fit(self, rows: list[dict[str, float]]) -> None:
        from sklearn.ensemble import IsolationForest

        if len(rows) < 5:
            raise ValueError(f"need at least 5 training intervals, got {len(rows)}")
        raw = [vector(r) for r in rows]
        # less activity than usual is no threat: below the training median, every feature
        # reads as the median (a quiet second must not look like an outlier)
        self.lo = [statistics.median(c) for c in zip(*raw, strict=True)]
        x = [self._clip(v) for v in raw]
        self.model = IsolationForest(n_estimators=100, random_state=self.seed).fit(x)
        cols = list(zip(*x, strict=True))
        self.hi = [max(c) for c in cols]
        self.span = [max(c) - min(c) + 1.0 for c in cols]
        scores = [-float(s) for s in self.model.score_samples(x)]
        self.threshold = max(scores) + self.margin

        def mx(k: str) -> float:
            return max(r[k] for r in rows)

        self.limits = {
            "fails_ps": max(3 * mx("fails_ps"), 15.0),
            "out_ports": max(2 * mx("out_ports"), mx("out_ports") + 15, 20.0),
            "new_ports": max(2 * mx("new_ports"), 10.0),
            "tx_Bps": max(3 * mx("tx_Bps"), 3e6),
            "cpu": max(mx("cpu") + 0.5, 0.6),
        }

    def _clip(self, v: list[float]) -> list[float]:
        return [max(x, lo) for x, lo in zip(v, self.lo, strict=True)]

    def score(self, row: dict[str, float]) -> float:
        if self.model is None:
            raise RuntimeError("the detector is not trained")
        v = self._clip(vector(row))
        # an isolation forest cannot rank points beyond its training range (its splits lie
        # inside it): add how far, in training spans, each feature lies above that range
        beyond = sum(max(0.0, x - h) / s for x, h, s in zip(v, self.hi, self.span, strict=True))
        return -float(self.model.score_samples([v])[0]) + self.range_weight * beyond

    def rules(self, row: dict[str, float]) -> list[str]:
        """The rules this one interval breaks (persistence is the ``Judge``'s business)."""
        lim = self.limits
        hit = []
        if (row["fails_ps"] > lim["fails_ps"] or row["out_ports"] > lim["out_ports"]
                or row["new_ports"] > lim["new_ports"]):
            hit.append("port_scan")
        if row["tx_Bps"] > lim["tx_Bps"]:
            hit.append("exfiltration")
        if row["cpu"] > lim["cpu"]:
            hit.append("miner")
        return hit


class Judge:
    """Persistence over intervals: turns per-interval rule hits and scores into alarms."""

    RUNS = {"port_scan": 1, "exfiltration": 3, "miner": 3}
    BEACON_HITS, BEACON_WINDOW = 3, 8

    def __init__(self, det: Detector) -> None:
        self.det = det
        self.runs: collections.Counter[str] = collections.Counter()
        self.model_run = 0
        self.rare: collections.deque[set[tuple[str, int]]] = collections.deque(
            maxlen=self.BEACON_WINDOW)

    def judge(self, row: dict[str, float], notes: dict[str, Any]) -> Verdict:
        score = self.det.score(row)
        hits = self.det.rules(row)
        for k in self.RUNS:
            self.runs[k] = self.runs[k] + 1 if k in hits else 0
        fired = [k for k, n in self.RUNS.items() if self.runs[k] >= n]
        self.rare.append({tuple(t) for t in notes.get("rare", [])})
        counts = collections.Counter(t for s in self.rare for t in s)
        if counts and max(counts.values()) >= self.BEACON_HITS and "port_scan" not in hits:
            fired.append("beaconing")
            hits.append("beaconing")
        self.model_run = self.model_run + 1 if score > self.det.threshold else 0
        kind = fired[0] if fired else ("model" if self.model_run >= self.det.model_run else None)
        return Verdict(kind is not None, kind, score, hits)


# ============================================================================ the loop
def active_context(migrations: list[dict[str, Any]], host: str) -> MigrationContext | None:
    """The discount for ``host`` from the controller's ``migrations_active`` reply."""
    ports: set[int] = set()
    peers: set[str] = set()
    for m in migrations:
        if host in m.get("hosts", []):
            ports |= {int(p) for p in m.get("ports", [])}
            peers |= set(m.get("ips", []))
    return MigrationContext(ports, peers) if ports else None


class Monitor:
    """The monitor of one host; ``tick()`` once per interval."""

    def __init__(self, host: str, ip: str, mgmt: str | None, train_s: float = 30.0,
                 report: str = "aware", seed: int = 0, grace_s: float = 10.0,
                 log_json: str | None = None, proc: str = "/proc",
                 rearm_s: float | None = None) -> None:
        self.host, self.ip, self.mgmt = host, ip, mgmt
        self.train_s, self.report, self.grace_s = train_s, report, grace_s
        self.proc = proc
        self.finder = ProcessFinder(proc)
        self.fx = {"aware": FeatureExtractor(), "unaware": FeatureExtractor()}
        self.det = Detector(seed)
        self.judges: dict[str, Judge] = {}
        self.train_rows: list[dict[str, float]] = []
        self.prev = read_sample(self.finder, proc)
        for fx in self.fx.values():  # what already exists is not new
            fx.step(self.prev, self.prev)
        self.t0 = self.prev.t
        self.ctx: MigrationContext | None = None
        self.ctx_until = 0.0
        self.reported: dict[str, Any] | None = None
        self.reported_at = 0.0
        self.rearm_s = rearm_s  # report again this long after a report (None: once)
        self.out = open(log_json, "a") if log_json else None

    def _poll_migrations(self) -> None:
        if not self.mgmt:
            return
        from hosts.protocol.mgmt import MgmtError, call

        try:
            reply = call(self.mgmt, {"op": "migrations_active"}, timeout=2.0)
        except MgmtError as exc:
            log.debug("migrations_active failed: %s", exc)
            return
        ctx = active_context(reply.get("migrations", []), self.host)
        now = time.monotonic()
        if ctx is not None:
            if self.ctx is not None and now < self.ctx_until:
                ctx.ports |= self.ctx.ports
                ctx.peers |= self.ctx.peers
            self.ctx, self.ctx_until = ctx, now + self.grace_s
        elif self.ctx is not None and now >= self.ctx_until:
            self.ctx = None

    def tick(self) -> dict[str, Any]:
        if (self.reported is not None and self.rearm_s is not None
                and time.monotonic() - self.reported_at > self.rearm_s):
            self.reported = None
        self._poll_migrations()
        cur = read_sample(self.finder, self.proc)
        ctx = self.ctx
        socks = migration_socket_bytes(ctx.ports) if ctx is not None else None
        rows = {"unaware": self.fx["unaware"].step(self.prev, cur),
                "aware": self.fx["aware"].step(self.prev, cur, ctx, socks)}
        self.prev = cur
        rec: dict[str, Any] = {"t": time.time(), "host": self.host, "migrating": ctx is not None,
                               "features": rows["aware"][0]}
        if not self.det.trained:
            self.train_rows.append(rows["aware"][0])
            rec["training"] = True
            if cur.t - self.t0 >= self.train_s and len(self.train_rows) >= 5:
                self.det.fit(self.train_rows)
                for fx in self.fx.values():
                    fx.freeze()
                self.judges = {k: Judge(self.det) for k in self.fx}
                rec["trained"] = {"rows": len(self.train_rows), "threshold": self.det.threshold,
                                  "limits": self.det.limits}
                log.info("event=trained host=%s rows=%d threshold=%.3f limits=%s", self.host,
                         len(self.train_rows), self.det.threshold, self.det.limits)
        else:
            for mode, (row, notes) in rows.items():
                v = self.judges[mode].judge(row, notes)
                rec[mode] = {"alert": v.alert, "kind": v.kind, "score": round(v.score, 4),
                             "rules": v.rules}
                if notes["rare"]:
                    rec[mode]["rare"] = notes["rare"]
                if v.alert and mode == self.report and self.reported is None:
                    rec["reported"] = self._report(v, row)
        if self.out is not None:
            self.out.write(json.dumps(rec) + "\n")
            self.out.flush()
        return rec

    def _report(self, v: Verdict, row: dict[str, float]) -> dict[str, Any]:
        msg = {"op": "anomaly", "host": self.host, "kind": v.kind, "score": round(v.score, 4),
               "rules": v.rules, "detected_at": time.time()}
        self.reported = msg
        self.reported_at = time.monotonic()
        log.warning("event=anomaly host=%s kind=%s score=%.3f rules=%s features=%s", self.host,
                    v.kind, v.score, v.rules, json.dumps(row))
        out = {k: v for k, v in msg.items() if k != "op"}
        if not self.mgmt:
            return {**out, "sent": False}
        from hosts.protocol.mgmt import MgmtError, call

        try:
            reply = call(self.mgmt, msg, timeout=30.0)
        except MgmtError as exc:
            log.warning("event=report_failed host=%s error=%s", self.host, exc)
            return {**out, "sent": True, "error": str(exc)}
        log.info("event=reported host=%s reply=%s", self.host, json.dumps(reply))
        return {**out, "sent": True, "reply": reply}


def run(mon: Monitor, interval: float, duration: float | None = None) -> None:
    """Tick every ``interval`` seconds (drift-free) until ``duration`` or a signal."""
    t_next = time.monotonic() + interval
    end = None if duration is None else time.monotonic() + duration
    while end is None or time.monotonic() < end:
        time.sleep(max(0.0, t_next - time.monotonic()))
        t_next += interval
        try:
            mon.tick()
        except Exception:  # a bad read (a process vanished mid-read) costs one interval
            log.exception("tick failed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hosts.monitor", description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--mgmt", help="the controller's management socket")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--train-s", type=float, default=30.0)
    p.add_argument("--grace-s", type=float, default=10.0)
    p.add_argument("--report", choices=["aware", "unaware", "none"], default="aware")
    p.add_argument("--rearm-s", type=float, default=None,
                   help="report again this long after a report (default: report once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--log-json", help="append one JSON line per interval here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.log_json:
        Path(a.log_json).parent.mkdir(parents=True, exist_ok=True)
    mon = Monitor(a.host, a.ip, a.mgmt, a.train_s, a.report, a.seed, a.grace_s, a.log_json,
                  rearm_s=a.rearm_s)
    log.info("event=monitoring host=%s ip=%s interval=%.2f train_s=%.0f report=%s", a.host, a.ip,
             a.interval, a.train_s, a.report)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(mon, a.interval, a.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
