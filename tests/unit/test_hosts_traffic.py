"""Traffic profiles: from packets, from a pcap, from a sniff, and from a policy's settings."""

from __future__ import annotations

import pytest

from hosts.traffic import TrafficProfile, from_packets, from_pcap, profile_from_settings


def test_profile_from_packets() -> None:
    a, b = ("10.0.0.1", 80, "10.0.0.2", 5000), ("10.0.0.3", 22, "10.0.0.2", 6000)
    pkts = [(0.0, 1000, a), (0.01, 1000, a), (0.5, 200, b), (1.0, 1500, a)]
    p = from_packets(pkts)
    assert sorted(p.flow_sizes) == [200, 3500]
    assert sorted(p.message_sizes) == [200, 1500, 2000]
    assert p.rate_bps == pytest.approx(3700 / 1.0)
    assert p.gaps_s == pytest.approx([0.5, 0.5])
    assert TrafficProfile.from_dict(p.to_dict()) == p


def test_profile_from_pcap(tmp_path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    pkts = []
    for i in range(10):
        p = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=80, dport=4000) / Raw(b"x" * 100)
        p.time = i * 0.1
        pkts.append(p)
    wrpcap(str(tmp_path / "n.pcap"), pkts)
    prof = from_pcap(str(tmp_path / "n.pcap"))
    assert len(prof.packet_sizes) == 10 and prof.flow_sizes == [1400]
    assert prof.rate_bps == pytest.approx(1400 / 0.9)


def test_profile_from_settings_picks_the_source_of_samples(tmp_path) -> None:
    given = TrafficProfile(message_sizes=[700, 900], gaps_s=[0.01])
    assert profile_from_settings({"kind": "profile", "profile": given.to_dict()}) == given
    assert profile_from_settings({"kind": "profile"}, seed=4) == TrafficProfile.synthetic(4)
    assert profile_from_settings({"kind": "profile"}, seed=4) != TrafficProfile.synthetic(5)
    with pytest.raises(ValueError, match="no interface holds 203.0.113.77"):
        profile_from_settings({"sniff_iface": "auto"}, ip="203.0.113.77")


def test_iface_of_loopback() -> None:
    from hosts.traffic import iface_of

    assert iface_of("127.0.0.1") == "lo"
    assert iface_of("203.0.113.77") is None


@pytest.mark.root
def test_measure_sniff_on_lo() -> None:
    """Needs root (raw sockets); profiles a few TCP connection attempts on lo."""
    import os
    import socket
    import threading
    import time

    from hosts.traffic import measure_sniff

    if os.geteuid() != 0:
        pytest.skip("sniffing needs root")

    def traffic() -> None:
        time.sleep(0.3)
        for _ in range(10):
            try:
                socket.create_connection(("127.0.0.1", 9), timeout=0.1).close()
            except OSError:
                pass
            time.sleep(0.03)

    threading.Thread(target=traffic, daemon=True).start()
    prof = measure_sniff("lo", 1.2, bpf="tcp port 9")
    assert len(prof.packet_sizes) >= 10 and prof.rate_bps > 0
