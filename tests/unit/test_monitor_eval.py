"""Scoring of the monitor experiment (experiments.monitor_eval.score_trials) on a made-up trial,
a run folder scored back from its ground_truth.json (score_run), and its scenario file; no root."""

from __future__ import annotations

import json

from experiments.monitor_eval import load, score_run, score_trials
from experiments.trial import write_ground_truth


def _row(t: float, host: str, aware: bool, unaware: bool, reported: dict | None = None) -> dict:
    r = {"t": t, "host": host, "features": {},
         "aware": {"alert": aware, "kind": "port_scan" if aware else None},
         "unaware": {"alert": unaware, "kind": "model" if unaware else None}}
    if reported:
        r["reported"] = reported
    return r


def test_score_trials_counts_each_interval_once_in_its_class() -> None:
    trial = {
        "anomalies": [{"kind": "scan", "host": "h1", "start": 100.0, "end": 120.0,
                       "migration_state": "done"}],
        "migrations": [{"why": "scan", "hosts": ["h1", "h2"], "start": 101.0, "end": 120.0}],
        "monitor_logs": {
            "h1": [{"t": 50.0, "training": True, "features": {}}]
            + [_row(float(t), "h1", t == 101, False,
                    {"detected_at": 100.5, "kind": "port_scan"} if t == 101 else None)
               for t in range(95, 140)],
            # h2: in the migration [101, 120 + grace 8]: 2 unaware alarms, 1 aware
            "h2": [_row(float(t), "h2", t == 110, t in (110, 111)) for t in range(95, 140)],
            "h3": [_row(float(t), "h3", False, t == 96) for t in range(95, 140)],
        },
    }
    m = score_trials([trial], grace_s=8.0, linger_s=10.0)
    assert m["true_positive_rate"] == 1.0 and abs(m["detection_delay_s"] - 0.5) < 1e-9
    k = m["per_kind"]["scan"]
    assert k["kind_correct"] == 1 and k["migrations_done"] == 1
    # h1 is anomalous 100..130 (linger), so in-migration intervals are h2's 101..128: 28
    assert m["intervals"]["migration_aware"] == 28
    assert m["alert_intervals"]["migration_aware"] == 1
    assert m["alert_intervals"]["migration_unaware"] == 2
    assert m["false_positive_rate_during_migration"]["unaware"] == 2 / 28
    # clean: h1 95..99 and 131..139 (14), h2 95..100 and 129..139 (17), h3 all 45
    assert m["intervals"]["clean_aware"] == 14 + 17 + 45
    assert m["false_positive_rate"] == 0.0
    assert m["false_positive_rate_unaware"] == 1 / (14 + 17 + 45)


def test_missed_anomaly_counts_against_tpr() -> None:
    trial = {"anomalies": [{"kind": "miner", "host": "h1", "start": 10.0, "end": 20.0}],
             "migrations": [], "monitor_logs": {"h1": [_row(15.0, "h1", False, False)]}}
    m = score_trials([trial])
    assert m["true_positive_rate"] == 0.0 and m["detection_delay_s"] is None
    assert m["per_kind"]["miner"]["detected"] == 0


def test_shipped_scenario_loads() -> None:
    sc, ms = load("monitor")
    assert sc.topology.kind == "leafspine" and set(ms.kinds) == {"scan", "exfil", "miner",
                                                                 "beacon"}


def test_score_run_reads_the_runners_ground_truth_shape(tmp_path) -> None:
    rows = [_row(15.0, "h1", True, True, {"detected_at": 12.0, "kind": "miner"})]
    truth = {"trial": 3, "anomalies": [{"kind": "miner", "host": "h1", "start": 10.0,
                                        "end": 20.0}], "migrations": []}
    write_ground_truth(tmp_path / "ground_truth.json", [truth])
    assert "trials" in json.loads((tmp_path / "ground_truth.json").read_text())
    mon = tmp_path / "logs" / "trial-3" / "monitor"
    mon.mkdir(parents=True)
    (mon / "h1.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{trunc")
    m = score_run(tmp_path)
    assert m == score_trials([{**truth, "monitor_logs": {"h1": rows}}])
    assert m["trials"] == 1 and m["per_kind"]["miner"]["detected"] == 1
    assert m["per_kind"]["miner"]["kind_correct"] == 0  # aware said port_scan, not miner
