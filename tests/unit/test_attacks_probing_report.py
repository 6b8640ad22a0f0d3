"""A run folder with recorded prober logs: the runner's analysis puts every active attacker and
the curious intermediate into metrics.json, active.csv and report.md, and ``attack analyze --run``
writes the same metrics.json again."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict

from attacks import cli
from attacks.probing import probe_log
from attacks.truth import RunTruth, write_truth
from experiments import analysis, report
from experiments.scenario import load
from tests.unit.attacks_synth import make_trial, write_pcap


def _scan(t: float, vm_ip: str, counter: int) -> str:
    probes = [{"ip": vm_ip, "port": 7000, "open": True, "at": t, "rtt_s": 0.001, "error": None,
               "banner": json.dumps({"vm": "vm1", "counter": counter})}]
    return json.dumps({"time": t, "probes": probes}) + "\n"


def test_active_attackers_reach_metrics_and_report(tmp_path):
    rng = random.Random(2)
    trials = []
    (tmp_path / "pcaps").mkdir()
    for i, mode in enumerate(["direct", "direct", "stealth", "stealth"]):
        st = make_trial(i, mode, 4000 + i)
        rel = f"pcaps/global-{mode}-{i // 2}.pcap"
        write_pcap(tmp_path / rel, st.table)
        t = st.truth
        t.trial_in_mode, t.pcaps = i % 2, {"global": rel}
        t.result = {"migration_time_s": 2.0, "downtime_s": 0.1, "vm_bytes": 16_000_000}
        trials.append(t)
        a, b = t.migration_start, t.migration_end
        scan = probe_log(tmp_path, t, "service-scan")
        scan.parent.mkdir(parents=True)
        scan.write_text(_scan(a - 5, "10.0.200.1", 1) + _scan(b + 2, "10.0.200.1", 9))
        lines = []
        x = a - 20
        while x < b + 10:
            rise = 4.0 if a <= x <= b else 1.0
            lines.append(json.dumps({"time": x, "ip": "10.0.200.1",
                                     "rtt_s": 0.001 * rise * (1 + 0.1 * rng.random())}) + "\n")
            x += 0.2
        probe_log(tmp_path, t, "latency").write_text("".join(lines))
    write_truth(tmp_path / "ground_truth.json", RunTruth(trials, scenario="synthetic"))
    sc = load("quick")
    sc.modes = ["direct", "stealth"]
    sc.attackers.active, sc.attackers.curious_intermediate = ["service-scan", "latency"], True
    (tmp_path / "scenario.json").write_text(json.dumps(asdict(sc)))
    an = analysis.analyze(tmp_path, sc)
    report.write(tmp_path, sc, an)
    m = json.loads((tmp_path / "metrics.json").read_text())
    act = m["active"]["modes"]
    assert set(act["stealth"]) == {"service-scan", "latency", "curious-intermediate"}
    assert act["direct"]["service-scan"]["found_vm"]["k"] == 2
    assert act["stealth"]["service-scan"]["found_new_host"]["k"] == 0
    assert act["stealth"]["latency"]["detection_auc"]["mean"] > 0.9
    assert act["stealth"]["curious-intermediate"]["key_recovered"]["k"] == 0
    rows = list(csv.reader(open(tmp_path / "active.csv")))
    assert len(rows) == 1 + len(m["active"]["records"])
    md = (tmp_path / "report.md").read_text()
    assert "## Active attackers and the curious intermediate" in md
    assert "| stealth | curious-intermediate | key recovered 0.00" in md
    # re-analysis from the folder writes the same metrics, active attackers included
    again = tmp_path / "again.json"
    assert cli.main(["analyze", "--run", str(tmp_path), "--out", str(again)]) == 0
    assert json.loads(again.read_text()) == m
