"""Re-analysis reproduces the run: the runner's analysis (experiments.analysis) records what it
used in analysis.json, and ``stealth-mtd attack analyze --run DIR`` reads it back and writes the
same metrics.json, byte for byte; the metrics carry intervals, both spans, and the label used."""

from __future__ import annotations

import json

import pytest

from attacks.cli import main
from attacks.truth import TrialTruth
from experiments import analysis, report
from experiments.scenario import load
from tests.unit.attacks_twins import SETUP_S, twin_run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A recorded run (4 seeds × 2 modes, so the classifier trains) analysed by the runner's
    path, as ``stealth-mtd run`` leaves it."""
    run = twin_run(tmp_path_factory.mktemp("run"), n_seeds=4)
    sc = load("quick")
    sc.modes = ["direct", "stealth"]  # the arms of the recorded run
    an = analysis.analyze(run, sc)
    report.write(run, sc, an)
    return run, sc


def test_analysis_json_records_what_the_analysis_used(recorded):
    run, sc = recorded
    s = json.loads((run / "analysis.json").read_text())
    assert s["schema"] == "stealth-mtd/analysis/1"
    assert (s["window_s"], s["seed"], s["span"]) == (sc.attackers.window_s, sc.seed, "migration")
    assert s["candidates"] == [f"10.0.0.{i}" for i in range(1, 17)]  # the tenants, sorted
    assert s["vantage"] == list(sc.attackers.vantage) and s["modes"] == list(sc.modes)
    assert s["scenario"] == sc.name


def test_cli_rewrites_the_runs_metrics_identically(recorded, tmp_path):
    run, _ = recorded
    out = tmp_path / "again.json"
    assert main(["attack", "analyze", "--run", str(run), "--out", str(out)]) == 0
    assert out.read_bytes() == (run / "metrics.json").read_bytes()
    # the comparison can fail: another seed gives other intervals and models
    other = tmp_path / "seed0.json"
    assert main(["attack", "analyze", "--run", str(run), "--out", str(other), "--seed", "0"]) == 0
    assert json.loads(other.read_text()) != json.loads(out.read_text())


def test_metrics_carry_intervals_spans_and_the_label(recorded):
    run, _ = recorded
    m = json.loads((run / "metrics.json").read_text())
    assert m["schema"] == "stealth-mtd/run-metrics/2"
    assert m["label_span"]["span"] == "migration" and m["intervals"]["confidence"] == 0.95
    direct = m["modes"]["direct"]
    g = direct["attackers"]["global"]
    auc = g["intervals"]["detection_auc"]
    assert auc["n"] == 4 and auc["lo"] <= auc["mean"] <= auc["hi"]
    assert g["intervals"]["destination_top1"]["method"] == "wilson"
    # four seeds: each trial's classifier trained on the 6 trials of the 3 other seeds
    recs = [r for r in m["records"] if r["attacker"] == "global"]
    assert all(r["detector"] == "classifier" and r["label_span"] == "migration" for r in recs)
    assert all("trained on 6 trials of 3 other seeds" in r["detector_notes"] for r in recs)
    # both spans, each with an interval: the whole one holds the set-up the transfer lacks
    span, transfer = direct["migration_span_s"], direct["transfer_span_s"]
    assert span - transfer == pytest.approx(SETUP_S)
    assert direct["intervals"]["transfer_span_s"]["n"] == 4
    md = (run / "report.md").read_text()
    assert "overlaps the **migration** span" in md and "transfer phase (s)" in md
    row = next(line for line in md.splitlines() if line.startswith("| direct | global |"))
    iv = g["intervals"]["detection_auc"]
    assert f"{iv['mean']:.2f} [{iv['lo']:.2f}, {iv['hi']:.2f}] n=4" in row
    assert (run / "plots" / "summary.png").stat().st_size > 0 and "plots/summary.png" in md


def test_transfer_span_labels_the_windows_when_asked(recorded, tmp_path):
    run, _ = recorded
    out = tmp_path / "transfer.json"
    assert main(["attack", "analyze", "--run", str(run), "--out", str(out), "--span",
                 "transfer"]) == 0
    m = json.loads(out.read_text())
    assert m["label_span"]["span"] == "transfer" and m["analysis"]["span"] == "transfer"
    assert {r["label_span"] for r in m["records"]} == {"transfer"}
    base = json.loads((run / "metrics.json").read_text())
    # the set-up windows (no migration packet) are negatives now: a different figure
    assert [r["detection_auc"] for r in m["records"]] != \
        [r["detection_auc"] for r in base["records"]]


def test_trial_truth_spans():
    t = TrialTruth(0, migration_start=1.0, migration_end=9.0, transfer_start=4.0,
                   transfer_end=8.5)
    assert t.span() == (1.0, 9.0) and t.span("transfer") == (4.0, 8.5)
    assert TrialTruth.from_dict(t.to_dict()).span("transfer") == (4.0, 8.5)
    with pytest.raises(ValueError):
        t.span("setup")
