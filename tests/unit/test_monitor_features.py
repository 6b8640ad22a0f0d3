"""The monitor's parsers and features (hosts.monitor.procfs, hosts.monitor.features), on texts
as the kernel writes them and on this machine's own /proc; no root needed."""

from __future__ import annotations

import subprocess
import sys
import time

from hosts.monitor.daemon import active_context
from hosts.monitor.features import FeatureExtractor, MigrationContext
from hosts.monitor.procfs import (
    ProcessFinder,
    Sample,
    TcpConn,
    parse_net_dev,
    parse_proc_stat,
    parse_snmp_tcp,
    parse_ss,
    parse_tcp_table,
    read_sample,
)

NET_DEV = """Inter-|   Receive                                     |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...
    lo: 1000  10 0 0 0 0 0 0 1000  10 0 0 0 0 0 0
h1-eth0: 5000  50 0 0 0 0 0 0 7000  70 0 0 0 0 0 0
"""

SNMP = """Ip: Forwarding DefaultTTL
Ip: 2 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab
Tcp: 1 200 120000 -1 4511 3360 813 679 3
"""

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout
   0: 0100000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100000A:A1B2 0500000A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1
"""

TCP6 = """  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000100000A:1F90 0000000000000000FFFF00000500000A:C350 06 0
"""


def test_parse_net_dev() -> None:
    d = parse_net_dev(NET_DEV)
    assert d["h1-eth0"] == (5000, 50, 7000, 70) and d["lo"] == (1000, 10, 1000, 10)


def test_parse_snmp_tcp() -> None:
    t = parse_snmp_tcp(SNMP)
    assert t["ActiveOpens"] == 4511 and t["AttemptFails"] == 813
    assert parse_snmp_tcp("Ip: a\nIp: 1\n") == {}


def test_parse_tcp_tables() -> None:
    rows = parse_tcp_table(TCP)
    assert rows[0] == TcpConn("10.0.0.1", 8080, "0.0.0.0", 0, 0x0A)
    assert rows[1] == TcpConn("10.0.0.1", 0xA1B2, "10.0.0.5", 8080, 1)
    (v6,) = parse_tcp_table(TCP6)
    assert (v6.local_ip, v6.remote_ip, v6.remote_port, v6.state) == (
        "10.0.0.1", "10.0.0.5", 50000, 6)


def test_parse_proc_stat_with_odd_command() -> None:
    line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0"
    assert parse_proc_stat(line) == 12
    with open("/proc/self/stat") as f:
        assert parse_proc_stat(f.read()) >= 0


def test_parse_ss() -> None:
    text = ("ESTAB 0 0 10.0.0.1:40000 10.0.0.5:8093\n"
            "\t cubic bytes_sent:900 bytes_acked:800 bytes_received:20 segs_out:3\n"
            "ESTAB 0 0 [::ffff:10.0.0.1]:8091 [::ffff:10.0.0.7]:5000\n"
            "\t cubic rtt:1/1\n")
    got = parse_ss(text)
    assert got[("10.0.0.1", 40000, "10.0.0.5", 8093)] == (800, 20)
    assert got[("10.0.0.1", 8091, "10.0.0.7", 5000)] == (0, 0)


def _sample(t: float, tx: int, conns: list[TcpConn], cpu: dict[int, tuple[int, str]],
            opens: int = 0, fails: int = 0) -> Sample:
    return Sample(t, {"h1-eth0": (0, 0, tx, tx // 1000), "lo": (0, 0, 10**9 * int(t), 0)},
                  {"ActiveOpens": opens, "AttemptFails": fails}, conns, cpu)


LISTEN = TcpConn("10.0.0.1", 8080, "0.0.0.0", 0, 0x0A)


def test_features_of_a_scan_and_of_known_traffic() -> None:
    fx = FeatureExtractor()
    known = TcpConn("10.0.0.1", 40000, "10.0.0.2", 8080, 1)
    a = _sample(0.0, 0, [LISTEN, known], {1: (0, "other")})
    fx.step(a, a)
    fx.freeze()  # trained on: port 8080 at 10.0.0.2
    scan = [TcpConn("10.0.0.1", 41000 + p, "10.0.0.3", p, 6) for p in range(20, 40)]
    b = _sample(2.0, 2_000_000, [LISTEN, *scan], {1: (200, "other")}, opens=20, fails=5)
    row, notes = fx.step(a, b)
    assert row["tx_Bps"] == 1_000_000 and row["opens_ps"] == 10 and row["fails_ps"] == 2.5
    assert row["out_ports"] == 20 and row["new_ports"] == 20 and row["new_peers"] == 1
    assert row["rare_conns"] == 20 and len(notes["rare"]) == 20
    assert row["conns"] == 20 and row["cpu"] > 0  # lo never counts
    # the same connections a second later are neither new nor rare any more
    row2, notes2 = fx.step(b, _sample(3.0, 2_000_000, [LISTEN, *scan], {1: (200, "other")},
                                      opens=20, fails=5))
    assert row2["new_conns"] == 0 and row2["new_ports"] == 0 and not notes2["rare"]
    assert row2["tx_Bps"] == 0 and row2["cpu"] == 0


def test_migration_awareness_discounts_its_own_flows() -> None:
    mig = [TcpConn("10.0.0.1", 42000, "10.0.0.4", 8093, 1),
           TcpConn("10.0.0.1", 8091, "10.0.0.6", 50000, 1),
           TcpConn("10.0.0.1", 8091, "0.0.0.0", 0, 0x0A)]  # this host relays: it listens
    a = _sample(0.0, 0, [LISTEN], {1: (0, "other"), 2: (0, "agent")})
    b = _sample(1.0, 3_000_000, [LISTEN, *mig], {1: (10, "other"), 2: (90, "agent")}, opens=1)
    plain, aware = FeatureExtractor(), FeatureExtractor()
    for fx in (plain, aware):
        fx.step(a, a)
        fx.freeze()
    ctx = MigrationContext({8091, 8093}, {"10.0.0.4", "10.0.0.6"})
    socks = {c.key: (2_500_000, 0) for c in mig[:1]}
    r0, n0 = plain.step(a, b)
    r1, n1 = aware.step(a, b, ctx, socks)
    assert r0["new_ports"] == 1 and r0["rare_conns"] == 1 and r0["conns"] == 2
    assert r0["opens_ps"] == 1 and r0["out_ports"] == 1
    assert r1["new_ports"] == 0 and r1["rare_conns"] == 0 and r1["conns"] == 0
    assert r1["opens_ps"] == 0 and r0["opens_ps"] == 1
    assert r0["tx_Bps"] == 3_000_000 and r1["tx_Bps"] == 500_000
    assert r1["cpu"] < r0["cpu"]
    # a connection to a migration port from a host outside the migration still counts
    other = TcpConn("10.0.0.1", 43000, "10.0.0.9", 8093, 1)
    r2, _ = aware.step(b, _sample(2.0, 3_000_000, [LISTEN, *mig, other], b.cpu), ctx, socks)
    assert r2["conns"] == 1 and r2["new_peers"] == 1


def test_active_context_picks_this_hosts_migrations() -> None:
    migs = [{"hosts": ["h1", "h4"], "ports": [8093], "ips": ["10.0.0.1", "10.0.0.4"]},
            {"hosts": ["h7"], "ports": [8095], "ips": ["10.0.0.7"]}]
    ctx = active_context(migs, "h4")
    assert ctx is not None and ctx.ports == {8093} and ctx.peers == {"10.0.0.1", "10.0.0.4"}
    assert active_context(migs, "h2") is None


def test_process_finder_sees_a_child_and_not_itself() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        f = ProcessFinder()
        pids = f.pids()
        assert child.pid in pids and f.self_pid not in pids
        s = read_sample(f)
        assert s.tcp.get("ActiveOpens") is not None and "lo" in s.ifaces
        assert child.pid in s.cpu
    finally:
        child.kill()
        child.wait()
    time.sleep(0.05)
    assert child.pid not in ProcessFinder().pids()


def test_connections_left_by_a_closed_listener_are_not_outbound() -> None:
    """After the VM left, its service's accepted connections outlive the listener (TIME_WAIT):
    they must not read as this host connecting to many ports (a scan)."""
    fx = FeatureExtractor()
    svc = TcpConn("10.0.0.1", 7000, "0.0.0.0", 0, 0x0A)
    a = _sample(0.0, 0, [svc], {})
    fx.step(a, a)
    fx.freeze()
    left = [TcpConn("10.0.0.1", 7000, "10.0.0.7", 50000 + i, 6) for i in range(30)]
    relay = [TcpConn("10.0.0.1", 8094, "10.0.0.3", 40000 + i, 6) for i in range(5)]
    row, notes = fx.step(a, _sample(1.0, 0, left + relay, {}))
    assert row["out_ports"] == 0 and row["new_ports"] == 0 and not notes["rare"]
    assert row["conns"] == 35


def test_a_port_this_host_serves_is_known_after_training() -> None:
    fx = FeatureExtractor()
    a = _sample(0.0, 0, [LISTEN], {})
    fx.step(a, a)
    fx.freeze()
    b = _sample(1.0, 0, [LISTEN, TcpConn("10.0.0.1", 45000, "10.0.0.5", 8080, 6),
                         TcpConn("10.0.0.1", 45001, "10.0.0.5", 4444, 6)], {})
    _, notes = fx.step(a, b)
    assert notes["rare"] == [("10.0.0.5", 4444)]
