"""The host's signals, read from ``/proc`` inside its network namespace (the monitor's probe).

The reading process's own namespace is the host's: ``/proc/net/*`` always shows the reader's
network namespace. One ``read_sample`` takes:

- interface counters (``/proc/net/dev``): bytes and packets each way, per interface;
- the TCP counters of the namespace (``/proc/net/snmp``): connections opened, failed attempts
  (a scan of closed ports shows here even though its sockets live for microseconds);
- the TCP table (``/proc/net/tcp``, ``tcp6``): every connection and listener (a closed
  connection stays visible in TIME_WAIT for a minute on the side that closed it);
- the CPU of the processes in the namespace (``/proc/<pid>/stat`` of every pid whose
  ``/proc/<pid>/ns/net`` is ours; the VM runs inside the agent process, the monitor leaves
  itself out).

``migration_socket_bytes`` asks ``ss -ti`` for the per-socket bytes of a migration's
connections. The parsers are pure (tested on texts as the kernel writes them); the features
made of a pair of samples are ``hosts.monitor.features``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

TCP_LISTEN = 0x0A  # the state column of /proc/net/tcp


def _ephemeral() -> tuple[int, int]:
    """The kernel's range of local ports for outbound connections."""
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


EPHEMERAL = _ephemeral()


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
    """The host now: interface and TCP counters, the TCP table, the CPU of its processes."""
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


