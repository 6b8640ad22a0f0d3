"""``read_pcap``'s two paths: the vectorised one gives exactly the rows of the scapy-based one,
and ``read_pcap`` takes the fast path for classic pcaps and falls back to scapy for pcapng."""

import struct

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether
from scapy.utils import PcapNgWriter

from attacks import capture
from attacks.capture import _read_classic, _read_scapy, read_pcap
from tests.unit.attacks_synth import pcap_header


def frames(link):
    out = []
    for i in range(50):
        ip = IP(src=f"10.0.0.{i % 7 + 1}", dst="10.0.0.9", id=i, ttl=60 + i % 3)
        l4 = [TCP(sport=40000 + i, dport=8080, seq=i * 1000, flags="PA") / (b"x" * i),
              UDP(sport=5353, dport=53) / (b"q" * 3), ICMP()][i % 3]
        p = link() / ip / l4
        p.time = 1_700_000_000 + i * 0.01
        out.append(p)
    arp = link() / ARP(psrc="10.0.0.42", pdst="10.0.0.1")
    arp.time = 1_700_000_001.0
    return out + [arp]


def tagged():
    return Ether() / Dot1Q(vlan=5)


@pytest.mark.parametrize(
    "link", [Ether, tagged, CookedLinux], ids=["ethernet", "802.1q", "linux-sll"]
)
@pytest.mark.parametrize("snaplen", [65535, 60])
def test_same_rows_as_the_scapy_reader(tmp_path, link, snaplen):
    path = write_classic(tmp_path / "t.pcap", link, snaplen)
    a, b = _read_scapy(path), _read_classic(path)
    assert b is not None
    assert len(a.packets) == len(b.packets) == 50
    for name in a.packets.dtype.names:
        assert np.array_equal(a.packets[name], b.packets[name]), name
    assert a.arp_hosts == b.arp_hosts


def write_classic(path, link, snaplen):
    linktype = 113 if link is CookedLinux else 1
    out = [pcap_header(snaplen, linktype)]
    for p in frames(link):  # records cut at the snap length, as tcpdump -s writes them
        raw = bytes(p)
        sec, usec = int(p.time), round((float(p.time) - int(p.time)) * 1e6)
        out.append(struct.pack("<IIII", sec, usec, min(len(raw), snaplen), len(raw)))
        out.append(raw[:snaplen])
    path.write_bytes(b"".join(out))
    return path


def test_read_pcap_takes_the_fast_path_for_classic_pcaps(tmp_path, monkeypatch):
    path = write_classic(tmp_path / "t.pcap", Ether, 65535)

    def no_scapy(*args, **kwargs):
        raise AssertionError("the scapy path was taken for a classic pcap")

    monkeypatch.setattr(capture, "_read_scapy", no_scapy)
    cap = read_pcap(path, vantage="e1")
    assert len(cap.packets) == 50 and cap.vantages == ["e1"]
    assert cap.arp_hosts == {capture.ip_to_int("10.0.0.42")}


def test_read_pcap_falls_back_to_scapy_for_pcapng(tmp_path):
    classic = write_classic(tmp_path / "t.pcap", Ether, 65535)
    ng = tmp_path / "t.pcapng"
    with PcapNgWriter(str(ng)) as w:
        for p in frames(Ether):
            w.write(p)
    assert _read_classic(ng) is None
    a, b = read_pcap(classic), read_pcap(ng)
    assert len(b.packets) == 50
    for name in a.packets.dtype.names:
        assert np.array_equal(a.packets[name], b.packets[name]), name
    assert a.arp_hosts == b.arp_hosts
