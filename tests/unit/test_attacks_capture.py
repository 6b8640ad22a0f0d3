"""Reading captures: pcap → packet table, merging vantage points, duplicates, virtual addresses."""

from __future__ import annotations

import numpy as np
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether
from scapy.utils import wrpcap

from attacks.aliases import apply_aliases, resolve_aliases
from attacks.capture import (
    Capture,
    dedupe_packets,
    int_to_ip,
    ip_to_int,
    merge_captures,
    packet_record,
    read_pcap,
    read_pcaps,
)
from tests.unit.attacks_synth import make_trial, split_vip_views, write_pcap


def test_read_pcap_full_frames_of_several_kinds(tmp_path):
    pkts = [
        Ether()
        / IP(src="10.0.0.1", dst="10.0.0.9", id=7)
        / TCP(sport=1234, dport=7000, flags="PA", seq=99)
        / (b"x" * 100),
        Ether()
        / Dot1Q(vlan=5)
        / IP(src="10.0.0.2", dst="10.0.0.3")
        / UDP(sport=53, dport=5353)
        / (b"y" * 10),
        Ether() / ARP(psrc="10.0.0.4", pdst="10.0.0.5"),
    ]
    for i, p in enumerate(pkts):
        p.time = 1000.0 + i * 0.5
    path = tmp_path / "mixed.pcap"
    wrpcap(str(path), pkts)
    cap = read_pcap(path)
    assert cap.vantages == ["mixed"]
    assert len(cap.packets) == 2
    a, b = cap.packets
    assert int_to_ip(a["src"]) == "10.0.0.1" and int_to_ip(a["dst"]) == "10.0.0.9"
    assert (a["sport"], a["dport"], a["proto"], a["ipid"], a["seq"]) == (1234, 7000, 6, 7, 99)
    assert a["plen"] == 100 and a["length"] == 140 and a["flags"] == 0x18
    assert a["ts"] == 1000.0
    assert (b["proto"], b["plen"], b["dport"]) == (17, 10, 5353)
    assert cap.arp_hosts == {ip_to_int("10.0.0.4")}


def test_tcpdump_any_cooked_v2_capture(tmp_path):
    """``tcpdump -i any`` (libpcap >= 1.10) writes Linux cooked v2 frames, link type 276."""
    from scapy.layers.l2 import CookedLinuxV2

    p = CookedLinuxV2(proto=0x0800) / IP(src="10.0.0.3", dst="10.0.0.4") / UDP(dport=9)
    p.time = 7.0
    arp = CookedLinuxV2(proto=0x0806) / ARP(psrc="10.0.0.3")
    arp.time = 7.5
    path = tmp_path / "any.pcap"
    wrpcap(str(path), [p, arp], linktype=276)
    cap = read_pcap(path)
    assert len(cap.packets) == 1 and int_to_ip(cap.packets[0]["dst"]) == "10.0.0.4"
    assert cap.arp_hosts == {ip_to_int("10.0.0.3")}
    assert packet_record(p)[2] == ip_to_int("10.0.0.4")


def test_cooked_and_scapy_packet_records():
    cooked = CookedLinux(proto=0x0800) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP()
    cooked.time = 5.0
    rec = packet_record(cooked)
    assert rec is not None and rec[0] == 5.0 and rec[1] == ip_to_int("10.0.0.1")
    assert packet_record(Ether() / ARP(psrc="10.0.0.7"))[0] == "arp"


def test_synthetic_pcap_round_trip_is_exact(tmp_path):
    st = make_trial(0, "direct", 3, duration=10.0, vm_bytes=2_000_000)
    path = tmp_path / "t.pcap"
    write_pcap(path, st.table)
    cap = read_pcap(path)
    fields = ["src", "dst", "sport", "dport", "seq", "ipid", "length", "plen", "flags"]
    assert np.array_equal(cap.packets[fields], st.table[fields])
    assert np.abs(cap.packets["ts"] - st.table["ts"]).max() < 1e-6


def test_global_view_counts_a_packet_seen_on_two_switches_once(tmp_path):
    st = make_trial(0, "direct", 4, duration=10.0, vm_bytes=2_000_000)
    later = st.table.copy()
    later["ts"] += 0.0004  # the next switch on the path sees the same packets slightly later
    write_pcap(tmp_path / "s1.pcap", st.table)
    write_pcap(tmp_path / "s2.pcap", later[: len(later) // 2])
    merged = read_pcaps([tmp_path / "s1.pcap", tmp_path / "s2.pcap"])
    assert merged.vantages == ["s1", "s2"]
    assert len(merged.packets) == len(st.table)
    raw = read_pcaps([tmp_path / "s1.pcap", tmp_path / "s2.pcap"], dedupe=False)
    assert len(raw.packets) == len(st.table) + len(later) // 2
    # genuinely different packets with the same header fields far apart in time stay
    again = st.table.copy()
    again["ts"] += 5.0
    both = np.sort(np.concatenate([st.table, again]), order="ts")
    assert len(dedupe_packets(both)) == 2 * len(st.table)


def test_virtual_address_is_resolved_only_with_the_edge_switch_in_view():
    st = make_trial(0, "stealth", 5, virtual_ip=True)
    vip, real = st.truth.virtual_ip, st.truth.destination.ip
    core, edge = split_vip_views(st.table, vip, real)
    merged = merge_captures([Capture(core, ["core"]), Capture(edge, ["edge"])], dedupe=False)
    aliases = resolve_aliases(merged.packets)
    assert aliases == {ip_to_int(vip): ip_to_int(real)}
    fixed = dedupe_packets(apply_aliases(merged.packets, aliases))
    assert ip_to_int(vip) not in set(fixed["dst"].tolist())
    # the core switch alone never sees the rewrite
    assert resolve_aliases(core, distinct_vp=False) == {}
