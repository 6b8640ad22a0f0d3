"""The active probers' recorded rounds and the curious intermediate, scored into metrics.

Fixtures are prober logs written here in the format ``experiments.probers`` writes (a VM that keeps
its address across the move; RTTs that rise during the migration in some trials), run folders
with a ground truth, analysed by ``attacks.probing.analyze_probes`` as ``analyze_folder`` does.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from attacks.intermediate import interpolate, parse_share
from attacks.probing import (
    analyze_probes,
    curious_figures,
    latency_figures,
    latency_scores,
    probe_log,
    read_jsonl,
    scan_figures,
    split_secret,
)
from attacks.truth import HostAddress, TrialTruth

VM = "10.0.200.1"
HOSTS = [f"10.0.0.{i}" for i in range(1, 9)]


def truth(trial: int, mode: str = "stealth", seed: int | None = None) -> TrialTruth:
    h = [HostAddress(f"h{i}", ip) for i, ip in enumerate(HOSTS, 1)]
    return TrialTruth(trial=trial, mode=mode, trial_in_mode=trial, seed=seed if seed else trial,
                      migration=f"m{trial}", migration_start=100.0, migration_end=110.0,
                      source=h[0], intermediates=[h[2], h[3]] if mode != "direct" else [],
                      leader=h[4], destination=h[5], hosts=h)


def scan_round(t: float, counter: int, vm_open: bool = True, extra: str | None = None) -> dict:
    probes = [{"ip": ip, "port": 7000, "open": ip == extra, "banner": None, "rtt_s": None,
               "error": None if ip == extra else "ConnectionRefusedError", "at": t} for ip in HOSTS]
    probes.append({"ip": VM, "port": 7000, "open": vm_open, "at": t, "rtt_s": 0.001,
                   "error": None, "banner": json.dumps({"vm": "vm1", "counter": counter})})
    return {"time": t, "probes": probes}


def test_scan_finds_the_vm_at_its_address_not_its_new_host():
    rounds = [scan_round(t, int(t)) for t in (90.0, 95.0, 115.0, 120.0)]
    f = scan_figures(rounds, truth(0))
    assert f["found_vm"] and f["vm_address"] == VM and f["same_address"]
    assert f["found_new_host"] is False and f["rounds_before"] == 2


def test_scan_names_the_new_host_when_the_vm_answers_there():
    # a VM that took its new host's address: the scan does find where it went
    rounds = [scan_round(90.0, 90), scan_round(115.0, 115, vm_open=False, extra=HOSTS[5])]
    rounds[1]["probes"][5]["banner"] = json.dumps({"vm": "vm1", "counter": 115})
    f = scan_figures(rounds, truth(0))
    assert f["vm_address"] == HOSTS[5] and f["found_new_host"] and not f["same_address"]


def test_scan_without_rounds_after_says_so():
    f = scan_figures([scan_round(90.0, 90)], truth(0))
    assert f["found_vm"] is None and "no scan round" in f["note"]


def latency_samples(rise: float, rng: random.Random) -> list[dict]:
    out = []
    for i in range(300):  # 60 s at 0.2 s, migration 100-110
        t = 70.0 + i * 0.2
        r = 0.001 * (1 + 0.1 * rng.random()) * (rise if 100 <= t <= 110 else 1.0)
        out.append({"time": t, "ip": VM, "rtt_s": r})
        out.append({"time": t, "ip": HOSTS[1], "rtt_s": None if i == 7 else 0.0008})
    return out


def test_latency_scores_and_auc_follow_the_rtts():
    rng = random.Random(3)
    starts, s = latency_scores(latency_samples(5.0, rng), 1.0)
    assert len(starts) == 60 and starts[0] == 70.0
    # one timeout in a window of 0.8 ms probes: that window scores high, the rest by the VM
    inside = (starts >= 100) & (starts < 110)
    assert s[inside].min() > 3 and np.median(s[~inside]) < 1.2
    with pytest.raises(ValueError):
        latency_scores([], 0)


def test_latency_threshold_comes_from_other_seeds():
    rng = random.Random(5)
    trials = {}
    for trial, (rise, group) in enumerate([(5.0, "a"), (5.0, "b"), (1.0, "c"), (5.0, "a")]):
        starts, s = latency_scores(latency_samples(rise, rng), 1.0)
        y = (starts < 110) & (starts + 1.0 > 100)
        trials[trial] = (starts, s, y, group)
    f = latency_figures(trials)
    assert f[0]["detection_auc"] > 0.95 and f[0]["alarm_detected"]
    assert f[2]["detection_auc"] < 0.8  # no rise: nothing to see
    # trial 0's threshold never saw trial 3 (its twin, group a): changing it leaves 0 alone
    changed = dict(trials)
    changed[3] = (trials[3][0], trials[3][1] * 100, trials[3][2], "a")
    assert latency_figures(changed)[0]["threshold"] == f[0]["threshold"]
    alone = latency_figures({0: trials[0]})
    assert alone[0]["threshold"] is None and alone[0]["alarm_detected"] is None


def test_split_secret_is_shamir():
    rng = random.Random(1)
    key = bytes(range(32))
    shares = split_secret(key, 2, 3, rng)
    assert interpolate([parse_share(s) for s in shares[:2]]) == key
    assert interpolate([parse_share(s) for s in shares[1:]]) == key
    with pytest.raises(ValueError):
        split_secret(key, 1, 3, rng)


def test_curious_intermediate_recovers_nothing_from_one_share():
    f = curious_figures(truth(0), k=2, seed=1)
    assert f["shares_held"] == 1 and f["consistent_values_per_key_byte"] == 256
    assert f["key_recovered"] is False and f["destination_recovered"] is False
    assert f["keys_tried"] >= 1 and "re-enacted" in f["view"]
    assert curious_figures(truth(1, "direct"), k=2, seed=1)["key_recovered"] is None


def test_the_re_enactment_opens_with_k_shares():
    """The positive control: with k shares the same attack recovers the key and the
    destination, so the one-share figures above are the split's doing, not a sealing bug."""
    f = curious_figures(truth(0), k=2, seed=1, shares_held=2)
    assert f["key_recovered"] is True and f["destination_recovered"] is True
    assert f["chunks_opened"] == 4


def write_run(tmp_path, trials, curious=True):
    (tmp_path / "scenario.json").write_text(json.dumps(
        {"attackers": {"active": ["service-scan", "latency"], "curious_intermediate": curious},
         "stealth": {"k": 2}}))
    rng = random.Random(9)
    for t in trials:
        p = probe_log(tmp_path, t, "service-scan")
        p.parent.mkdir(parents=True)
        p.write_text("".join(json.dumps(scan_round(x, int(x))) + "\n" for x in (90, 120))
                     + '{"time": 12')  # cut short by the prober's end
        probe_log(tmp_path, t, "latency").write_text(
            "".join(json.dumps(s) + "\n" for s in latency_samples(4.0, rng)))


def test_analyze_probes_gives_every_attacker_a_row_per_arm(tmp_path):
    trials = [truth(0, "direct", 1), truth(1, "stealth", 1), truth(2, "direct", 2),
              truth(3, "stealth", 2)]
    write_run(tmp_path, trials)
    a = analyze_probes(tmp_path, trials, 1.0, seed=4)
    assert a["modes"]["stealth"].keys() == {"service-scan", "latency", "curious-intermediate"}
    assert a["modes"]["direct"].keys() == {"service-scan", "latency"}  # no intermediate
    st = a["modes"]["stealth"]
    assert st["service-scan"]["found_new_host"]["mean"] == 0.0
    assert st["service-scan"]["found_vm"]["n"] == 2 and st["service-scan"]["found_vm"]["k"] == 2
    assert st["latency"]["detection_auc"]["mean"] > 0.9
    assert st["curious-intermediate"]["key_recovered"]["k"] == 0
    assert len([r for r in a["records"] if r["attacker"] == "latency"]) == 4
    assert analyze_probes(tmp_path, trials, 1.0, seed=4) == a  # deterministic


def test_analyze_probes_without_probers_is_none(tmp_path):
    assert analyze_probes(tmp_path, [truth(0)], 1.0) is None


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(p)


@pytest.mark.parametrize("attackers, topology, match", [
    ({"active": ["nmap"]}, {}, "attackers.active"),
    ({"active": ["latency", "latency"]}, {}, "attackers.active"),
    ({"active": ["latency"]}, {"attackers": []}, "attacker host"),
    ({"curious_intermediate": "yes"}, {}, "curious_intermediate"),
])
def test_scenario_checks_the_attackers(attackers, topology, match):
    from experiments.scenario import ScenarioError, from_dict

    with pytest.raises(ScenarioError, match=match):
        from_dict({"name": "bad", "attackers": {"vantage": ["global"], **attackers},
                   "topology": {"kind": "leafspine", "args": [2, 2, 4], **topology}})


def test_scenario_accepts_the_probers():
    from experiments.scenario import from_dict

    sc = from_dict({"name": "ok", "attackers": {"active": ["service-scan", "latency"],
                                                "curious_intermediate": True},
                    "topology": {"kind": "leafspine", "args": [2, 2, 4], "attackers": ["l1"]}})
    assert sc.attackers.active == ["service-scan", "latency"] and sc.attackers.curious_intermediate


def test_prober_targets():
    from experiments.probers import prober_targets

    targets, every = prober_targets("service-scan", HOSTS)
    assert targets[:len(HOSTS)] == HOSTS and VM in targets and every > 0
    assert prober_targets("latency", HOSTS)[0][0] == VM
    with pytest.raises(ValueError):
        prober_targets("nmap", HOSTS)


def test_an_enabled_prober_that_recorded_nothing_keeps_its_row(tmp_path):
    (tmp_path / "scenario.json").write_text(json.dumps(
        {"attackers": {"active": ["service-scan", "latency"]}}))
    a = analyze_probes(tmp_path, [truth(0)], 1.0)
    assert {r["attacker"] for r in a["records"]} == {"service-scan", "latency"}
    assert all(r["note"] == "the prober recorded nothing" for r in a["records"])
    assert set(a["modes"]["stealth"]) == {"service-scan", "latency"}


def test_closed_parent(tmp_path):
    from pathlib import Path

    from experiments.testbed import closed_parent

    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (tmp_path / "a").chmod(0o700)
    shut = closed_parent(inner)
    assert shut is not None and not shut.stat().st_mode & 0o001 and inner.is_relative_to(shut)
    (tmp_path / "a").chmod(0o755)
    assert closed_parent(inner) != tmp_path / "a"  # open again: the next closed one, if any
    assert closed_parent(Path("/")) is None


def test_the_probers_host_is_no_mirror_port():
    from experiments.probers import prober_host
    from experiments.scenario import ScenarioError, from_dict

    desc = {"hosts": [{"name": "h1", "attacker": False, "switch": "l1"},
                      {"name": "x1", "attacker": True, "switch": "l1"},
                      {"name": "x2", "attacker": True, "switch": "s1"},
                      {"name": "x3", "attacker": True, "switch": "l1"}]}
    assert prober_host(desc, ["switch:l1", "switch:s1", "global"]) == "x3"
    assert prober_host(desc, ["global"]) == "x1"
    with pytest.raises(RuntimeError, match="mirror port"):
        prober_host({"hosts": desc["hosts"][:3]}, ["switch:l1", "switch:s1"])
    with pytest.raises(ScenarioError, match="mirror port"):
        from_dict({"name": "bad", "attackers": {"vantage": ["switch:l1"], "active": ["latency"]},
                   "topology": {"kind": "leafspine", "args": [2, 2, 4], "attackers": ["l1"]}})
