"""One feature row per interval, from two consecutive samples of the host (``procfs``).

The features (``FEATURES``), each per second or a count over the interval: bytes and packets
each way on every interface but ``lo``; TCP connections opened and failed; connections,
new connections, the distinct remote ports this host connects to, ports and peers never
contacted before, and connections to ports the host never used while it was trained
(``rare_conns``); the CPU of the processes in the namespace, in cores.

While the host plays a role in a migration (a ``MigrationContext``: its relay ports, between
its hosts), the migration's own connections are left out of the connection features, their
bytes (per socket, ``procfs.migration_socket_bytes``) are taken off the interface counters and
the agent's CPU (which encrypts and relays) is left out. Pure: tested on made-up samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hosts.monitor.procfs import EPHEMERAL, TCP_LISTEN, Sample, TcpConn

FEATURES = ["tx_Bps", "rx_Bps", "tx_pps", "rx_pps", "opens_ps", "fails_ps", "conns",
            "new_conns", "out_ports", "new_ports", "new_peers", "rare_conns", "cpu"]


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
