"""A run folder's analysis and report (experiments.analysis, tables, plots, report) on synthetic
pcaps: the ground truth is read through attacks.truth, every output file is written."""

from __future__ import annotations

import csv
import json

from attacks.truth import RunTruth, write_truth
from experiments import analysis, report
from experiments.scenario import load
from tests.unit.attacks_synth import make_trial, write_pcap


def test_analysis_and_report_of_a_synthetic_run(tmp_path):
    trials = []
    for i, mode in enumerate(["direct", "direct", "stealth", "stealth"]):
        st = make_trial(i, mode, 4000 + i)
        rel = f"pcaps/global-{mode}-{i // 2}.pcap"
        (tmp_path / "pcaps").mkdir(exist_ok=True)
        write_pcap(tmp_path / rel, st.table)
        t = st.truth
        t.trial_in_mode, t.pcaps = i % 2, {"global": rel}
        t.result = {"migration_time_s": 2.0 + i, "downtime_s": 0.1, "vm_bytes": 16_000_000}
        t.capture_stats = {"global": {"captured": len(st.table), "dropped_by_kernel": 0}}
        trials.append(t)
    trials[3].status, trials[3].reason = "failed", "stalled"
    write_truth(tmp_path / "ground_truth.json", RunTruth(trials, scenario="synthetic"))
    sc = load("quick")
    sc.modes = ["direct", "stealth"]  # the arms of the synthetic run
    an = analysis.analyze(tmp_path, sc)
    report.write(tmp_path, sc, an)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["modes"]["direct"]["n_trials"] == 2 and m["modes"]["stealth"]["failed"] == 1
    assert m["modes"]["direct"]["migration_time_s"] == 2.5
    assert "global" in m["modes"]["stealth"]["attackers"]
    assert sorted({r["trial"] for r in m["records"]}) == [0, 1, 2]
    rows = list(csv.reader(open(tmp_path / "costs.csv")))
    assert rows[0][:3] == ["mode", "trial", "status"] and len(rows) == 5
    assert len(list(csv.reader(open(tmp_path / "metrics.csv")))) == 1 + len(m["records"])
    md = (tmp_path / "report.md").read_text()
    assert "| stealth | 2 | failed stalled |" in md
    for png in ("traffic", "bytes_per_host", "roc"):
        assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 0
        assert f"plots/{png}.png" in md
