"""The ground-truth schema (attacks.truth): one shape on disk, old shapes still load, clear
errors; and the one vantage-point name type."""

from __future__ import annotations

import json

import pytest

from attacks.truth import (
    GLOBAL,
    Anomaly,
    HopPath,
    HostAddress,
    MonitorMigration,
    RunTruth,
    TrialTruth,
    TruthError,
    Vantage,
    load_truth,
    write_truth,
)

# what experiments/runner.py writes for one trial
RUNNER_TRIAL = {
    "trial": 1, "mode": "stealth", "trial_in_mode": 0, "seed": 7000, "migration": "m-1",
    "status": "done", "reason": "", "migration_start": 100.5, "migration_end": 104.25,
    "source": {"host": "h1", "ip": "10.0.0.1"},
    "intermediates": [{"host": "h3", "ip": "10.0.0.3"}, {"host": "h4", "ip": "10.0.0.4"}],
    "leader": {"host": "h5", "ip": "10.0.0.5"}, "destination": {"host": "h9", "ip": "10.0.0.9"},
    "virtual_ip": "10.255.0.1",
    "paths": [{"from": "h1", "to": "h3", "port": 7101, "switches": ["e1", "a1"],
               "virtual_ip": None}],
    "hosts": [{"host": "h1", "ip": "10.0.0.1"}, {"host": "h9", "ip": "10.0.0.9"}],
    "attackers": [{"host": "x1", "ip": "10.0.0.101"}],
    "pcaps": {"switch-e1": "pcaps/switch-e1-stealth-0.pcap", "global": "pcaps/global.pcap"},
    "capture_stats": {"global": {"captured": 10, "dropped_by_kernel": 0}},
    "result": {"migration_time_s": 3.75, "vm_bytes": 1000},
}
# what experiments/monitor_eval.py writes for one trial (a bare list of these)
MONITOR_TRIAL = {
    "trial": 0, "seed": 5000,
    "migrations": [{"migration": "m-2", "why": "scan", "state": "done", "hosts": ["h2", "h6"],
                    "source": "h2", "roles": {"destination": "h6"}, "start": 10.0, "end": 12.0,
                    "reason": ""}],
    "anomalies": [{"kind": "scan", "host": "h2", "c2": "h7", "start": 9.0, "migration": "m-2",
                   "trigger": {"kind": "scan"}, "migration_state": "done", "end": 13.0}],
    "clean": [1.0, 8.0], "end": 20.0, "ips": {"h2": "10.0.0.2"},
}


def test_runner_trial_round_trips_and_is_typed():
    t = TrialTruth.from_dict(RUNNER_TRIAL)
    assert t.source == HostAddress("h1", "10.0.0.1")
    assert t.leader.host == "h5" and [h.ip for h in t.intermediates] == ["10.0.0.3", "10.0.0.4"]
    assert t.paths == [HopPath("h1", "h3", 7101, ["e1", "a1"], None)]
    assert t.vantage_pcaps() == {Vantage("e1"): "pcaps/switch-e1-stealth-0.pcap",
                                 GLOBAL: "pcaps/global.pcap"}
    d = t.to_dict()
    assert {k: d[k] for k in RUNNER_TRIAL} == RUNNER_TRIAL
    assert TrialTruth.from_dict(json.loads(json.dumps(d))) == t


def test_monitor_trial_round_trips():
    t = TrialTruth.from_dict(MONITOR_TRIAL)
    assert t.migrations[0] == MonitorMigration("m-2", "scan", "done", ["h2", "h6"], "h2",
                                               {"destination": "h6"}, 10.0, 12.0, "")
    assert isinstance(t.anomalies[0], Anomaly) and t.anomalies[0].c2 == "h7"
    assert t.clean == (1.0, 8.0)
    d = t.to_dict()
    assert {k: d[k] for k in MONITOR_TRIAL} == MONITOR_TRIAL


def test_write_then_load_is_the_object_shape(tmp_path):
    run = RunTruth([TrialTruth.from_dict(RUNNER_TRIAL)], scenario="quick", seed=7,
                   meta={"note": "x"})
    path = tmp_path / "ground_truth.json"
    write_truth(path, run)
    on_disk = json.loads(path.read_text())
    assert isinstance(on_disk, dict) and on_disk["schema"] == "stealth-mtd/ground-truth/1"
    assert on_disk["trials"][0]["mode"] == "stealth"
    assert load_truth(path) == run
    assert load_truth(path).by_trial()[1].destination.host == "h9"


def test_old_shapes_still_load(tmp_path):
    bare = tmp_path / "monitor.json"  # monitor-eval's bare list
    bare.write_text(json.dumps([MONITOR_TRIAL]))
    assert load_truth(bare).trials[0].anomalies[0].kind == "scan"
    old = tmp_path / "runner.json"  # the runner's object without metadata
    old.write_text(json.dumps({"trials": [RUNNER_TRIAL]}))
    assert load_truth(old).trials[0] == TrialTruth.from_dict(RUNNER_TRIAL)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trials": [{**RUNNER_TRIAL, "destinaton": None}]}, "unknown field(s) 'destinaton'"),
        ({"trials": [{"mode": "direct"}]}, "'trial' must be an integer"),
        ({"trials": [{**RUNNER_TRIAL, "source": {"host": "h1"}}]}, "missing field 'ip'"),
        ({"trials": [{**RUNNER_TRIAL, "paths": [{"to": "h3"}]}]}, "missing field 'from'"),
        ({"trials": [{**MONITOR_TRIAL, "anomalies": [{"kind": "scan"}]}]}, "'host', 'start'"),
        ({"runs": []}, "an object with a 'trials' list"),
        ({"schema": "other/9", "trials": []}, "schema 'other/9'"),
    ],
)
def test_bad_ground_truth_names_the_field(tmp_path, data, message):
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TruthError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_truth(path)


def test_vantage_names_convert_through_one_type():
    e1 = Vantage.parse("switch:e1")
    assert e1 == Vantage.parse("switch-e1") == Vantage("e1") == Vantage.from_stem("e1")
    assert (str(e1), e1.file_stem, e1.switch, e1.is_global) == ("switch:e1", "switch-e1", "e1",
                                                                 False)
    for name in ("global", "all", "any"):
        assert Vantage.parse(name) == GLOBAL == Vantage.from_stem(name)
    assert (str(GLOBAL), GLOBAL.file_stem, GLOBAL.switch) == ("global", "global", None)
    assert Vantage.parse(str(e1)) == Vantage.parse(e1.file_stem) == e1
    for bad in ("wire", "switch:", "e1", ""):
        with pytest.raises(ValueError, match="'global' or 'switch:<switch name>'"):
            Vantage.parse(bad)
