"""Active attacks: probes an attacker host sends, and the analyses of what comes back.

Probing and analysis are separate, as scapy's own ``traceroute`` does: each probe function sends
and receives (scapy for ARP/ICMP/TTL-limited TCP, which needs root inside a Mininet host; plain
sockets for TCP services and latency, which do not) and returns a result object; each analysis
function is pure and takes those objects, so it is unit-tested on synthetic results. The scapy
send/receive function is a parameter (``srp``/``sr``) so a test can hand in canned answers.

- ``arp_sweep`` / ``ping_sweep``: who is alive on the tenant network (``alive_hosts``).
- ``traceroute`` + ``analyze_traceroute``: OVS forwards at layer 2 and does not decrement the TTL
  unless the controller installs a ``dec_ttl`` action, so the target usually answers a TTL-1
  probe: the trace reveals no switch and no relay — the analysis says so instead of inventing hops.
- ``service_scan`` + ``locate_service``: where the VM's TCP service (default port 7000, one JSON
  line ``{"vm", "host", "counter", ...}``, or any line ending in a counter) answers now, matched to
  the identity seen before the move; a counter that kept growing says it is the same VM state.
  A VM that keeps its own address wherever it runs answers at the same address after the move
  (``ServiceLocation.same_address``): the scan finds the VM, not the host it now runs on.
- ``first_packet_latency`` + ``infer_new_rules`` (Shin & Gu, HotSDN 2013): the first packet of a
  new flow that misses the flow table waits for the controller; a first probe much slower than
  the following ones says "no rule was there", a fast first probe says "a rule was installed".

Callers: the experiments runner (inside the attacker's Mininet host), the tests.

At about 430 lines this module is over the ~400 of the style guide on purpose: it holds four
small attacks, each a probe next to the analysis of its result. Splitting probing from analysis
into two modules would pull every pair apart (a reader would need both files open for any one
attack) for a saving of nothing; the separation that matters — analyses are pure and take result
objects — is already there, and the tests exercise every analysis on canned results.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------- sweeps


@dataclass
class Alive:
    ip: str
    mac: str | None = None
    rtt_s: float | None = None
    ttl: int | None = None


@dataclass
class SweepResult:
    """Hosts that answered an ARP or ping sweep."""

    method: str
    probed: int
    alive: list[Alive] = field(default_factory=list)
    started: float = 0.0
    duration_s: float = 0.0


def _expand(targets: str | Iterable[str]) -> list[str]:
    if isinstance(targets, str):
        net = ipaddress.ip_network(targets, strict=False)
        return (
            [str(h) for h in net.hosts()] if net.num_addresses > 1 else [str(net.network_address)]
        )
    return list(targets)


def arp_sweep(
    targets: str | Iterable[str],
    iface: str | None = None,
    timeout: float = 1.0,
    srp: Callable[..., Any] | None = None,
) -> SweepResult:
    """ARP who-has for every target address (a CIDR string or a list); needs root."""
    from scapy.layers.l2 import ARP, Ether

    if srp is None:
        from scapy.sendrecv import srp
    ips = _expand(targets)
    t0 = time.time()
    answered, _ = srp(
        Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=ips), iface=iface, timeout=timeout, verbose=0
    )
    alive = {}
    for sent, recv in answered:
        ip = recv[ARP].psrc
        alive.setdefault(
            ip,
            Alive(
                ip,
                mac=recv[ARP].hwsrc,
                rtt_s=max(float(recv.time) - float(sent.sent_time or t0), 0),
            ),
        )
    return SweepResult(
        "arp", len(ips), sorted(alive.values(), key=lambda a: _ipkey(a.ip)), t0, time.time() - t0
    )


def ping_sweep(
    targets: str | Iterable[str],
    iface: str | None = None,
    timeout: float = 1.0,
    sr: Callable[..., Any] | None = None,
) -> SweepResult:
    """ICMP echo to every target; needs root."""
    from scapy.layers.inet import ICMP, IP

    if sr is None:
        from scapy.sendrecv import sr
    ips = _expand(targets)
    t0 = time.time()
    probes = [IP(dst=ip) / ICMP(id=0x5A5A, seq=i) for i, ip in enumerate(ips)]
    answered, _ = sr(probes, iface=iface, timeout=timeout, verbose=0)
    alive = {}
    for sent, recv in answered:
        if recv.haslayer(ICMP) and recv[ICMP].type == 0:
            ip = recv[IP].src
            alive.setdefault(
                ip,
                Alive(
                    ip,
                    rtt_s=max(float(recv.time) - float(sent.sent_time or t0), 0),
                    ttl=int(recv[IP].ttl),
                ),
            )
    return SweepResult(
        "ping", len(ips), sorted(alive.values(), key=lambda a: _ipkey(a.ip)), t0, time.time() - t0
    )


def _ipkey(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def alive_hosts(*sweeps: SweepResult) -> list[str]:
    """Union of the addresses that answered any sweep, sorted."""
    return sorted({a.ip for s in sweeps for a in s.alive}, key=_ipkey)


def compare_sweeps(before: SweepResult, after: SweepResult) -> dict[str, list[str]]:
    """Addresses that appeared or vanished between two sweeps (a VM that moved with its address
    shows up as a changed MAC in ARP; one that moved to a new address appears here)."""
    b = {a.ip: a.mac for a in before.alive}
    a = {x.ip: x.mac for x in after.alive}
    return {
        "appeared": sorted(set(a) - set(b), key=_ipkey),
        "vanished": sorted(set(b) - set(a), key=_ipkey),
        "mac_changed": sorted((ip for ip in set(a) & set(b) if a[ip] != b[ip]), key=_ipkey),
    }


# ---------------------------------------------------------------- traceroute


@dataclass
class Hop:
    ttl: int
    responder: str | None
    kind: str  # "time-exceeded", "target", "none"
    rtt_s: float | None = None


@dataclass
class TracerouteResult:
    target: str
    dport: int
    hops: list[Hop] = field(default_factory=list)


def traceroute(
    target: str,
    max_ttl: int = 8,
    dport: int = 7000,
    timeout: float = 1.0,
    iface: str | None = None,
    sr: Callable[..., Any] | None = None,
) -> TracerouteResult:
    """TCP SYN probes with TTL 1..max_ttl; needs root."""
    from scapy.layers.inet import ICMP, IP, TCP

    if sr is None:
        from scapy.sendrecv import sr
    probes = [
        IP(dst=target, ttl=t) / TCP(sport=40000 + t, dport=dport, flags="S")
        for t in range(1, max_ttl + 1)
    ]
    answered, _ = sr(probes, iface=iface, timeout=timeout, verbose=0)
    by_ttl: dict[int, Hop] = {}
    for sent, recv in answered:
        ttl = int(sent[IP].ttl)
        rtt = max(float(recv.time) - float(sent.sent_time or recv.time), 0.0)
        if recv.haslayer(ICMP) and recv[ICMP].type == 11:
            by_ttl[ttl] = Hop(ttl, recv[IP].src, "time-exceeded", rtt)
        elif recv.haslayer(TCP) or recv[IP].src == target:
            by_ttl[ttl] = Hop(ttl, recv[IP].src, "target", rtt)
    hops = [by_ttl.get(t, Hop(t, None, "none")) for t in range(1, max_ttl + 1)]
    return TracerouteResult(target, dport, hops)


@dataclass
class TraceAnalysis:
    target: str
    reached_at_ttl: int | None
    routers: list[str]
    reveals_path: bool
    summary: str


def analyze_traceroute(result: TracerouteResult) -> TraceAnalysis:
    """What a traceroute really tells: the layer-3 hops before the target, if any."""
    reached = next((h.ttl for h in result.hops if h.kind == "target"), None)
    routers = [
        h.responder
        for h in result.hops
        if h.kind == "time-exceeded" and h.responder and (reached is None or h.ttl < reached)
    ]
    if reached == 1:
        summary = (
            f"{result.target} answered at TTL 1: no hop decrements the TTL (OpenFlow "
            "switches forwarding without dec_ttl), so traceroute reveals no switch, no "
            "relay and no path length"
        )
        return TraceAnalysis(result.target, reached, [], False, summary)
    if reached is None and not routers:
        return TraceAnalysis(
            result.target, None, [], False, f"{result.target} did not answer and no hop replied"
        )
    summary = f"{len(routers)} hop(s) before {result.target}: {', '.join(routers) or '-'}" + (
        f"; reached at TTL {reached}" if reached else "; target not reached"
    )
    return TraceAnalysis(result.target, reached, routers, bool(routers), summary)


# ---------------------------------------------------------------- service fingerprint


@dataclass
class ServiceProbe:
    ip: str
    port: int
    open: bool
    banner: str | None = None
    rtt_s: float | None = None
    error: str | None = None
    at: float = 0.0


def probe_service(
    ip: str, port: int = 7000, timeout: float = 0.5, request: bytes = b"\n", max_bytes: int = 4096
) -> ServiceProbe:
    """Connect, send ``request``, read one line (sockets only: no root needed)."""
    t0 = time.time()
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            rtt = time.time() - t0
            if request:
                s.sendall(request)
            data = b""
            while b"\n" not in data and len(data) < max_bytes:
                chunk = s.recv(max_bytes - len(data))
                if not chunk:
                    break
                data += chunk
    except (OSError, TimeoutError) as exc:
        return ServiceProbe(ip, port, False, error=type(exc).__name__, at=t0)
    line = data.split(b"\n", 1)[0].decode(errors="replace").strip()
    return ServiceProbe(ip, port, True, banner=line or None, rtt_s=rtt, at=t0)


def service_scan(
    targets: str | Iterable[str], port: int = 7000, timeout: float = 0.5
) -> list[ServiceProbe]:
    """``probe_service`` on every target."""
    return [probe_service(ip, port, timeout) for ip in _expand(targets)]


_COUNTER = re.compile(r"(\d+)\D*$")


def parse_banner(banner: str | None) -> tuple[str | None, int | None, str | None]:
    """``(identity, counter, claimed_host)`` from a banner: the JSON form ``{"vm", "counter",
    "host"}``, else the line without its last number as identity and that number as counter."""
    if not banner:
        return None, None, None
    try:
        d = json.loads(banner)
        if isinstance(d, dict) and "vm" in d:
            c = d.get("counter")
            return str(d["vm"]), int(c) if isinstance(c, int | float) else None, d.get("host")
    except ValueError:
        pass
    m = _COUNTER.search(banner)
    if m:
        return banner[: m.start(1)].strip() or None, int(m.group(1)), None
    return banner.strip(), None, None


@dataclass
class ServiceLocation:
    identity: str | None
    previous: list[str]
    ranking: list[tuple[str, float]]
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> str | None:
        return self.ranking[0][0] if self.ranking else None

    @property
    def same_address(self) -> bool:
        """The best match answers where the VM answered before: the scan learned an address
        the VM keeps, nothing about where it moved."""
        return self.best is not None and self.best in self.previous


def locate_service(
    before: list[ServiceProbe], after: list[ServiceProbe], identity: str | None = None
) -> ServiceLocation:
    """Rank where the VM's service runs after the move.

    The identity is the one given, or the one that answered before from exactly one host. After:
    a host answering with that identity and a counter at least the last one seen before scores 3
    (same VM state), with the identity but a lower counter 2 (a copy restarted), a newly opened
    port 1, an open port that was open before 0.5; closed ports are not ranked.
    """
    seen_before = {p.ip: parse_banner(p.banner) for p in before if p.open}
    if identity is None:
        ids: dict[str, set[str]] = {}
        for ip, (ident, _, _) in seen_before.items():
            if ident:
                ids.setdefault(ident, set()).add(ip)
        unique = [i for i, hosts in ids.items() if len(hosts) == 1]
        identity = unique[0] if len(unique) == 1 else None
    prev_hosts = sorted(
        ip
        for ip, (ident, _, _) in seen_before.items()
        if identity is not None and ident == identity
    )
    last = max(
        (c for ip, (ident, c, _) in seen_before.items() if ident == identity and c is not None),
        default=None,
    )
    scores: dict[str, float] = {}
    evidence: dict[str, str] = {}
    for p in after:
        if not p.open:
            continue
        ident, counter, claimed = parse_banner(p.banner)
        if identity is not None and ident == identity:
            same = counter is not None and last is not None and counter >= last
            scores[p.ip] = 3.0 if same or last is None else 2.0
            evidence[p.ip] = f"identity {identity!r} counter {counter} (before {last})" + (
                f", claims host {claimed}" if claimed else ""
            )
        elif p.ip not in seen_before:
            scores[p.ip], evidence[p.ip] = 1.0, "newly open"
        else:
            scores[p.ip], evidence[p.ip] = 0.5, "open before and after"
    ranking = sorted(scores.items(), key=lambda kv: (-kv[1], _ipkey(kv[0])))
    return ServiceLocation(identity, prev_hosts, ranking, evidence)


# ---------------------------------------------------------------- first-packet latency


@dataclass
class LatencySeries:
    ip: str
    port: int
    rtts_s: list[float | None]  # one per probe, None = no answer


@dataclass
class LatencyResult:
    series: list[LatencySeries] = field(default_factory=list)


def tcp_rtt(ip: str, port: int, timeout: float = 1.0) -> float | None:
    """Time for a TCP connect to complete or be refused (a RST answers too); None on timeout."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        pass
    except OSError:
        return None
    return time.perf_counter() - t0


def first_packet_latency(
    targets: Iterable[str],
    port: int = 7000,
    probes: int = 5,
    gap_s: float = 0.05,
    timeout: float = 1.0,
    rtt: Callable[[str, int, float], float | None] = tcp_rtt,
) -> LatencyResult:
    """For each target, ``probes`` successive connects: the first may pay for a flow setup."""
    out = LatencyResult()
    for ip in targets:
        series = []
        for i in range(probes):
            series.append(rtt(ip, port, timeout))
            if i + 1 < probes:
                time.sleep(gap_s)
        out.series.append(LatencySeries(ip, port, series))
    return out


@dataclass
class RuleInference:
    ip: str
    first_s: float | None
    steady_s: float | None
    ratio: float | None
    verdict: str  # "table-miss" (no rule was there), "rule-present", "no-answer"


def infer_new_rules(
    result: LatencyResult, ratio: float = 3.0, min_extra_s: float = 0.002
) -> list[RuleInference]:
    """Per target: a first probe ``ratio`` times (and ``min_extra_s``) slower than the median of
    the others means the flow table missed (the controller set the path up now); otherwise a rule
    was already installed for this path."""
    out = []
    for s in result.series:
        first = s.rtts_s[0] if s.rtts_s else None
        rest = [r for r in s.rtts_s[1:] if r is not None]
        if first is None or not rest:
            out.append(RuleInference(s.ip, first, None, None, "no-answer"))
            continue
        steady = statistics.median(rest)
        r = first / steady if steady > 0 else float("inf")
        miss = r >= ratio and first - steady >= min_extra_s
        out.append(RuleInference(s.ip, first, steady, r, "table-miss" if miss else "rule-present"))
    return out
