"""Live mode: the guess forms while packets arrive, and a sniffer replays a pcap into it."""

from __future__ import annotations

import numpy as np

from attacks.live import LiveDetector, live_capture
from tests.unit.attacks_synth import make_trial, write_pcap


def test_live_guess_names_the_hosts_soon_after_the_migration_starts():
    st = make_trial(0, "direct", 1000)  # h1 -> h9
    t = st.truth
    det = LiveDetector(window_s=1.0)
    guesses = []
    for row in st.table.tolist():
        g = det.feed(row)
        if g is not None:
            guesses.append(g)
    before = [g for g in guesses if g.window_end <= t.migration_start]
    assert before and not any(g.alarm for g in before)
    first = next(g for g in guesses if g.alarm)
    assert t.migration_start < first.window_end <= t.migration_start + 3.0
    assert (first.source, first.destination) == ("10.0.0.1", "10.0.0.9")
    assert det.packets_seen == len(st.table)
    assert "ALARM" in first.line()


def test_quiet_background_stays_quiet():
    st = make_trial(3, "background", 1003)
    det = LiveDetector()
    alarms = [g.alarm for g in (det.feed(r) for r in st.table.tolist()) if g is not None]
    assert len(alarms) > 20 and np.mean(alarms) <= 0.1


def test_async_sniffer_replays_a_pcap_into_the_detector(tmp_path):
    """The sniffer path (scapy dissects every packet, slow) on a short capture."""
    st = make_trial(0, "direct", 5, duration=8.0, flows_per_s=2.0, vm_bytes=1_000_000, backups=0)
    pcap = tmp_path / "short.pcap"
    write_pcap(pcap, st.table)
    det = LiveDetector(warmup_windows=3)
    seen, started = [], []
    sniffer = live_capture(
        det,
        on_guess=seen.append,
        offline=str(pcap),
        started_callback=lambda: started.append(True),
        pcap_out=str(tmp_path / "copy.pcap"),
    )
    sniffer.join(timeout=60)
    sniffer.pcap_writer.close()
    last = det.flush()
    assert started and det.packets_seen == len(st.table)
    span = st.table["ts"].max() - st.table["ts"].min()
    assert len(seen) >= int(span) - 1 and last is not None
    assert (tmp_path / "copy.pcap").stat().st_size > 0
