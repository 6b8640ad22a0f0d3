"""Each arm's costs from packets (experiments.arms): bandwidth overhead (cover over normal bytes),
relay goodput against the cover rate, the floor and the ratios to direct, on a small synthetic
packet table read back through the project's pcap reader, and through a run's analysis into
arms.json, arms.csv and report.md."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from attacks.capture import PACKET_DTYPE, dedupe_packets, ip_to_int, read_pcap
from attacks.truth import RunTruth, TrialTruth, write_truth
from experiments import analysis, report
from experiments.arms import PAGE, arm_costs, moved_bytes, port_bytes, trial_costs
from experiments.scenario import from_dict
from tests.unit.attacks_synth import make_trial, write_pcap

HOSTS = [{"host": f"h{i}", "ip": f"10.0.0.{i}"} for i in range(1, 5)]


def _rows(spec: list[tuple[float, int, int, int, int, int]]) -> np.ndarray:
    """(ts, src host, dst host, sport, dport, wire length) → packet rows."""
    a = np.zeros(len(spec), dtype=PACKET_DTYPE)
    for i, (ts, s, d, sp, dp, n) in enumerate(spec):
        a[i]["ts"], a[i]["src"], a[i]["dst"] = ts, ip_to_int(f"10.0.0.{s}"), \
            ip_to_int(f"10.0.0.{d}")
        a[i]["sport"], a[i]["dport"], a[i]["proto"], a[i]["length"] = sp, dp, 6, n
        a[i]["plen"], a[i]["ttl"], a[i]["ipid"] = max(n - 52, 0), 64, i
    return a


# 10 s of capture: 3000 cover bytes (both directions of port 8443), 6000 normal bytes (port 8080
# both ways), 5000 bytes elsewhere (a relay port, ssh) that count as neither
TABLE = _rows([
    (100.0, 1, 2, 40001, 8443, 1000), (100.5, 2, 1, 8443, 40001, 500),
    (101.0, 3, 4, 40002, 8443, 1500), (102.0, 1, 3, 40003, 8080, 1200),
    (103.0, 3, 1, 8080, 40003, 4800), (104.0, 1, 2, 40004, 8090, 4000),
    (110.0, 2, 4, 40005, 22, 1000),
])


def _truth(mode: str, trial_in_mode: int, took: float, down: float, rounds: list[int],
           trial: int = 0, status: str = "done") -> TrialTruth:
    return TrialTruth.from_dict({
        "trial": trial, "mode": mode, "trial_in_mode": trial_in_mode, "status": status,
        "source": HOSTS[0], "destination": HOSTS[3], "hosts": HOSTS,
        "result": {"migration_time_s": took, "downtime_s": down, "vm_bytes": rounds[0] * PAGE,
                   "role_stats": {"source:h1": {"pages_per_round": rounds,
                                                "decision_to_first_byte_s": 0.2}}}})


def test_port_bytes_count_both_directions_and_only_tcp():
    assert port_bytes(TABLE, 8443) == 3000 and port_bytes(TABLE, 8080) == 6000
    udp = TABLE.copy()
    udp["proto"] = 17
    assert port_bytes(udp, 8443) == 0


def test_a_hops_bytes_are_its_own_packets_but_none_in_a_cover_arm():
    from attacks.scoring import hop_bytes

    t = TrialTruth.from_dict({"trial": 0, "mode": "profile", "hosts": HOSTS, "paths": [
        {"from": "h1", "to": "h2", "port": 8090, "switches": ["l1"]}]})
    assert hop_bytes(TABLE, t, cover=False) == 4000  # the relay port's packet, not 8443's
    assert hop_bytes(TABLE, t, cover=True) is None  # its hops ride inside the cover records


def test_the_pcap_reader_sees_the_same_bytes(tmp_path):
    write_pcap(tmp_path / "t.pcap", TABLE)
    back = dedupe_packets(read_pcap(tmp_path / "t.pcap").packets)
    assert len(back) == len(TABLE)
    assert port_bytes(back, 8443) == 3000 and port_bytes(back, 8080) == 6000


def test_one_trials_overhead_goodput_and_floor():
    t = _truth("cover", 0, took=20.0, down=0.5, rounds=[2048, 256, 64])  # 8 MiB + 320 pages
    c = trial_costs(TABLE, t, cover_rate=500_000.0)
    assert (c["cover_bytes"], c["normal_bytes"]) == (3000, 6000)
    assert c["bandwidth_overhead"] == 0.5
    assert c["cover_measured_bytes_per_s"] == pytest.approx(3000 / 10.0 / 4)
    assert c["relay_goodput_bytes_per_s"] == 2048 * PAGE / 20.0
    assert c["goodput_over_cover"] == pytest.approx(2048 * PAGE / 20.0 / 500_000)
    assert moved_bytes(t) == c["moved_bytes"] == (2048 + 256 + 64) * PAGE
    assert c["floor_s"] == pytest.approx(2368 * PAGE / 500_000)
    assert c["floor_ratio"] == pytest.approx(20.0 / c["floor_s"])
    assert c["decision_to_first_byte_s"] == 0.2


def test_without_cover_or_packets_the_cover_figures_are_none():
    t = _truth("profile", 0, took=10.0, down=2.0, rounds=[2048, 100])
    c = trial_costs(TABLE, t, cover_rate=None)
    assert c["bandwidth_overhead"] == 0.5  # the capture's cover bytes, whoever sent them
    assert c["goodput_over_cover"] is None and c["floor_s"] is None and c["floor_ratio"] is None
    c = trial_costs(None, t, cover_rate=1e6)
    assert c["bandwidth_overhead"] is None and c["cover_bytes"] is None
    assert c["floor_s"] == pytest.approx(2148 * PAGE / 1e6)
    no_rounds = _truth("cover", 0, 10.0, 0.1, [2048])
    no_rounds.result["role_stats"] = {}
    assert trial_costs(TABLE, no_rounds, 1e6)["floor_s"] is None  # unknown, not guessed
    failed = _truth("cover", 0, 10.0, 0.1, [2048], status="failed")
    assert trial_costs(TABLE, failed, 1e6)["floor_ratio"] is None


def test_ratios_pair_each_trial_with_the_direct_trial_of_its_seed():
    trials = [_truth("direct", 0, 1.0, 0.1, [2048], trial=0),
              _truth("direct", 1, 2.0, 0.2, [2048], trial=1),
              _truth("cover", 0, 10.0, 0.5, [2048, 10], trial=2),
              _truth("cover", 1, 30.0, 0.2, [2048, 10], trial=3),
              _truth("cover", 2, 30.0, 0.2, [2048, 10], trial=4, status="failed")]
    out = arm_costs(trials, {2: TABLE}, {"direct": None, "cover": 1e6}, seed=3)
    c = out["cover"]
    assert c["trials"] == [2, 3]  # the failed trial is not a cost
    assert c["per_trial"]["time_vs_direct"] == [10.0, 15.0] and c["time_vs_direct"] == 12.5
    assert c["per_trial"]["downtime_vs_direct"] == pytest.approx([5.0, 1.0])
    assert c["per_trial"]["bandwidth_overhead"] == [0.5, None]  # trial 3 had no capture
    iv = c["intervals"]["time_vs_direct"]
    assert iv["n"] == 2 and iv["lo"] <= 12.5 <= iv["hi"]
    assert out["direct"]["time_vs_direct"] == 1.0 and out["direct"]["floor_s"] is None


def _cover_packets(hosts: list[str], t0: float, t1: float, rate: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Cover records between random tenant pairs on port 8443, ``rate`` bytes/s per host."""
    n = int((t1 - t0) * rate * len(hosts) / 1500)
    a = np.zeros(n, dtype=PACKET_DTYPE)
    src = rng.integers(0, len(hosts), n)
    dst = (src + rng.integers(1, len(hosts), n)) % len(hosts)
    a["ts"] = np.sort(rng.uniform(t0, t1, n))
    a["src"] = [ip_to_int(hosts[i]) for i in src]
    a["dst"] = [ip_to_int(hosts[i]) for i in dst]
    a["sport"], a["dport"], a["proto"], a["length"], a["plen"] = 41000, 8443, 6, 1500, 1448
    a["ttl"], a["seq"] = 64, np.arange(n)
    a["ipid"] = np.arange(n) & 0xFFFF
    return a


@pytest.mark.slow  # one analysis of a synthetic run (two trials)
def test_a_runs_arms_json_csv_and_report(tmp_path):
    sc = from_dict({"name": "arms", "modes": ["direct", "cover"], "trials": 1,
                    "cover": {"rate_mbit": 2.0}, "attackers": {"vantage": ["global"]},
                    "topology": {"kind": "leafspine", "args": [4, 2, 4]}})
    (tmp_path / "pcaps").mkdir()
    trials, tables = [], {}
    for i, mode in enumerate(sc.modes):
        st = make_trial(i, "direct" if mode == "direct" else "stealth", 5000, duration=20.0,
                        flows_per_s=3.0, service_port=8080)
        table = st.table
        if mode == "cover":
            hosts = [h.ip for h in st.truth.hosts]
            table = np.sort(np.concatenate([table, _cover_packets(
                hosts, table["ts"].min(), table["ts"].max(), 250_000,
                np.random.default_rng(i))]), order="ts")
        tables[i] = table
        rel = f"pcaps/global-{mode}-0.pcap"
        write_pcap(tmp_path / rel, table)
        t = st.truth
        t.mode, t.trial_in_mode, t.seed, t.pcaps = mode, 0, 5000, {"global": rel}
        t.result = {"migration_time_s": 1.0 if mode == "direct" else 40.0, "downtime_s": 0.1,
                    "vm_bytes": 8 << 20,
                    "role_stats": {f"source:{t.source.host}": {"pages_per_round": [2048, 50]}}}
        trials.append(t)
    write_truth(tmp_path / "ground_truth.json", RunTruth(trials, scenario=sc.name))
    an = analysis.analyze(tmp_path, sc)
    report.write(tmp_path, sc, an)
    arms = json.loads((tmp_path / "arms.json").read_text())
    assert arms["schema"] == "stealth-mtd/arms/1"
    d, c = arms["arms"]["direct"], arms["arms"]["cover"]
    assert (d["protocol_mode"], c["protocol_mode"], c["chunk_policy"]) == ("direct", "stealth",
                                                                         "cover")
    assert d["bandwidth_overhead"] == 0 and d["cover_rate_bytes_per_s"] is None
    want = port_bytes(tables[1], 8443) / port_bytes(tables[1], 8080)
    assert c["bandwidth_overhead"] == pytest.approx(want) and want > 0.1
    assert c["cover_rate_bytes_per_s"] == 250_000 and c["time_vs_direct"] == 40.0
    assert c["floor_s"] == pytest.approx(2098 * PAGE / 250_000)
    assert c["goodput_over_cover"] == pytest.approx((8 << 20) / 40.0 / 250_000)
    rows = list(csv.DictReader(open(tmp_path / "arms.csv")))
    assert [r["mode"] for r in rows] == ["direct", "cover"]
    assert float(rows[1]["bandwidth_overhead"]) == pytest.approx(want)
    md = (tmp_path / "report.md").read_text()
    assert "## The arms' costs from packets" in md and "`cover` (stealth, chunk policy cover, " \
        "cover 2.00 Mbit/s per VM (absolute)" in md
    row = next(line for line in md.splitlines() if line.startswith("| cover | 2 |"))
    assert "40.00" in row  # time over direct's
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert list(m["modes"]) == ["direct", "cover"]  # each arm a mode of its own
