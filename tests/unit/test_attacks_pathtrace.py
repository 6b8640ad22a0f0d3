"""Path tracing: a relay source → 3 intermediates → leader → destination, hidden in background.

The relay runs over persistent hop connections with chunk sizes drawn from the background's own
size mix, padded key shares on the same hops and padded acks relayed backwards, as the protocol
does; the tracer must recover exactly the forward hops.
"""

from __future__ import annotations

import numpy as np

from attacks.capture import Capture, ip_to_int, read_pcap
from attacks.detection import label_windows
from attacks.evidence import trace_relays, transfers
from attacks.passive import analyze, detect
from attacks.relaygraph import relay_graph
from attacks.scoring import path_metrics
from attacks.truth import GLOBAL, TrialTruth, Vantage
from attacks.view import build_view
from tests.unit.attacks_synth import make_trial, split_vip_views, trial_pcap


def _truth_edges(truth: TrialTruth) -> set[tuple[str, str]]:
    return {(p.src, p.to) for p in truth.paths}


def test_relay_path_is_recovered_from_a_pcap():
    st = trial_pcap(0, "stealth", 77)
    view = build_view(GLOBAL, 0, [read_pcap(st.pcap)])
    res = analyze(view, detect([view])[0])
    names = {h.ip: h.host for h in st.truth.hosts}
    got = {(names[a], names[b]) for a, b in res.graph.edges}
    assert got == _truth_edges(st.truth)
    assert res.ranking.source[0][0] == st.truth.source.ip
    assert res.ranking.destination[0][0] == st.truth.destination.ip
    # the relay detector flags the windows in which chunks were relayed, and only those
    rel = res.detections["relay"]
    y = label_windows(
        rel.window_starts, rel.window_s, st.truth.migration_start, st.truth.migration_end
    )
    assert rel.alarms[y].mean() >= 0.7 and not rel.alarms[~y].any()
    # the leader relays: it is neither the source nor the destination guess
    leader = st.truth.leader.ip
    assert leader not in (res.ranking.source[0][0], res.ranking.destination[0][0])


def test_relay_paths_over_several_seeds():
    precision, recall = [], []
    for seed in range(3):
        st = make_trial(seed, "stealth", 300 + seed)
        ev = trace_relays(st.table)
        g = relay_graph(ev, st.truth.source.ip, st.truth.destination.ip)
        m = path_metrics(g.edges, st.truth)
        precision.append(m["path_precision"])
        recall.append(m["path_recall"])
    assert np.mean(precision) >= 0.9 and np.mean(recall) >= 0.9, (precision, recall)


def test_no_relay_is_invented_in_background_or_direct_migrations():
    for seed, mode in ((11, "background"), (12, "background"), (13, "direct")):
        st = make_trial(seed, mode, 400 + seed)
        assert trace_relays(st.table) == [], mode


def test_bursts_split_a_persistent_connection_into_chunks():
    st = make_trial(0, "stealth", 78)
    src = ip_to_int(st.truth.source.ip)
    inter = ip_to_int(st.truth.intermediates[0].ip)
    whole = transfers(st.table, burst_gap_s=None)
    bursts = transfers(st.table, burst_gap_s=0.005)
    one = (whole["src"] == src) & (whole["dst"] == inter)
    many = (bursts["src"] == src) & (bursts["dst"] == inter)
    assert one.sum() == 1 and many.sum() > 5
    assert abs(whole["bytes"][one].sum() - bursts["bytes"][many].sum()) < 1


def test_virtual_destination_global_view_vs_core_switch():
    st = make_trial(0, "stealth", 79, virtual_ip=True)
    vip, real = st.truth.virtual_ip, st.truth.destination.ip
    core, edge = split_vip_views(st.table, vip, real)
    core_cap, edge_cap = Capture(core, ["core"]), Capture(edge, ["edge"])
    edge_cap.packets["vp"] = 0
    # global passive: sees both switches, resolves the virtual address, names the real host
    g = build_view(GLOBAL, 0, [core_cap, edge_cap])
    res = analyze(g, detect([g])[0])
    assert res.aliases == {vip: real}
    assert res.ranking.destination[0][0] == real
    assert path_metrics(res.graph.edges, st.truth)["path_recall"] == 1.0
    # one core switch: the destination it names is the virtual address, which is no host
    c = build_view(Vantage("core"), 0, [core_cap])
    res_c = analyze(c, detect([c])[0])
    assert res_c.aliases == {}
    assert res_c.ranking.destination[0][0] == vip
    hosts_only = {ip_to_int(h.ip) for h in st.truth.hosts}
    res_h = analyze(c, detect([c])[0], candidates=hosts_only)
    assert vip not in [ip for ip, _ in res_h.ranking.destination]


def test_real_protocol_capture_from_the_loopback_bed():
    """The agents' own stealth migration on the wire (see attacks_fixtures/README.md)."""
    from pathlib import Path

    pcap = Path(__file__).parent / "attacks_fixtures" / "loopback-stealth.pcap"
    view = build_view(Vantage("lo"), 0, [read_pcap(pcap)], drop_loopback=False)
    res = analyze(view, detect([view])[0])
    net = "127.0.77."
    assert res.ranking.source[0][0] == net + "11"
    assert res.ranking.destination[0][0] == net + "16"
    hops = {
        ("11", "12"),
        ("11", "13"),
        ("11", "14"),
        ("12", "15"),
        ("13", "15"),
        ("14", "15"),
        ("15", "16"),
    }
    truth = {(net + a, net + b) for a, b in hops}
    got = set(res.graph.edges)
    # every edge named is real; h2's hop carried ~200 KB in three chunks of loopback-flight
    # sizes, below what a single exact re-send needs and dropped as TCP-flight-sized bursts
    assert got <= truth and len(got & truth) >= 5, got
