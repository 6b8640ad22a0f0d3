"""The vectorised pcap reader gives exactly the rows of the scapy-based reader."""

import struct

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, CookedLinux, Ether

from attacks.capture import read_pcap
from attacks.pcapfast import read_pcap_fast


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


@pytest.mark.parametrize("link", [Ether, CookedLinux], ids=["ethernet", "linux-sll"])
@pytest.mark.parametrize("snaplen", [65535, 60])
def test_same_rows_as_the_scapy_reader(tmp_path, link, snaplen):
    path = tmp_path / "t.pcap"
    linktype = 1 if link is Ether else 113
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for p in frames(link):  # records cut at the snap length, as tcpdump -s writes them
        raw = bytes(p)
        sec, usec = int(p.time), round((float(p.time) - int(p.time)) * 1e6)
        out.append(struct.pack("<IIII", sec, usec, min(len(raw), snaplen), len(raw)))
        out.append(raw[:snaplen])
    path.write_bytes(b"".join(out))
    a, b = read_pcap(path), read_pcap_fast(path)
    assert len(a.packets) == len(b.packets) == 50
    for name in a.packets.dtype.names:
        assert np.array_equal(a.packets[name], b.packets[name]), name
    assert a.arp_hosts == b.arp_hosts
