"""``stealth-mtd run --shard I/N`` then ``stealth-mtd merge`` (experiments.merge) on synthetic
trials: the runner's own code with its trial replaced by synthetic pcaps, so the merged
folder's metrics.json is compared with a single-machine run of the same trials; and every bad
input the merge refuses. No root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from attacks.truth import load_truth, write_truth
from experiments import merge as merge_mod
from experiments import runner, timings
from experiments.merge import MergeError, merge
from experiments.scenario import Scenario
from tests.unit.attacks_synth import make_trial, write_pcap

SWEEP = "[sweep]\n\"background.flows_per_s\" = [1.0, 2.0]\n"


def fake_trial(sc: Scenario, mode: str, trial: int, trial_id: int, run_dir: Path,
               hooks: Any = None, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """What ``runner.run_trial`` leaves behind, from synthetic traffic fixed by the scenario's
    seed, point and trial: a pcap, a log, the ground-truth record, the phase timings."""
    seed = sc.seed * 1000 + int(sc.background.flows_per_s * 100) + trial_id
    st = make_trial(trial_id, mode, seed, duration=12.0, flows_per_s=2.0)
    rel = f"pcaps/global-{mode}-{trial}.pcap"
    (run_dir / "pcaps").mkdir(parents=True, exist_ok=True)
    write_pcap(run_dir / rel, st.table)
    logs = run_dir / "logs" / f"{mode}-{trial}"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "controller.log").write_text(f"trial {trial_id}\n")
    t = st.truth
    t.trial_in_mode, t.seed, t.pcaps = trial, seed, {"global": rel}
    t.result = {"migration_time_s": 2.0 + trial_id, "downtime_s": 0.1, "vm_bytes": 8_000_000}
    if timings is not None:
        timings.update(bringup_s=3.0, warmup_s=8.0, migration_s=2.0 + trial_id, cooldown_s=4.0,
                       teardown_s=1.0)
    return t.to_dict()


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes a small scenario file (extra TOML appended) and returns a function that runs it
    through ``runner.main`` with the fake trial."""
    monkeypatch.setattr(runner, "run_trial", fake_trial)
    base = (Path(runner.__file__).parent / "scenarios" / "quick.toml").read_text()
    base = base.replace('vantage = ["switch:l1", "switch:s1", "global"]', 'vantage = ["global"]')
    base = base.replace('modes = ["direct", "profile", "cover"]', 'modes = ["direct", "stealth"]')

    def run(out: Path, *args: str, extra: str = "", trials: int = 2,
            edit: tuple[str, str] = ("", "")) -> int:
        f = tmp_path / "smoke.toml"
        assert edit[0] in base
        f.write_text(base.replace(*edit) + extra if edit[0] else base + extra)
        return runner.main([str(f), "--trials", str(trials), "--out", str(out), *args])

    return run


def _shards(run, root: Path, n: int, **kw: Any) -> list[Path]:
    out = []
    for i in range(n):
        d = root / f"shard-{i}"
        assert run(d, "--shard", f"{i}/{n}", **kw) == 0
        out.append(d)
    return out


@pytest.mark.slow  # two analyses of synthetic runs
def test_shards_merge_into_the_single_machine_run(scenario, tmp_path):
    assert scenario(tmp_path / "single") == 0
    folders = _shards(scenario, tmp_path, 3)
    # a shard holds only its trials (round-robin over the 4), and no analysis
    assert [t.trial for t in load_truth(folders[0] / "ground_truth.json").trials] == [0, 3]
    assert [t.trial for t in load_truth(folders[2] / "ground_truth.json").trials] == [2]
    assert not (folders[0] / "metrics.json").exists()
    assert [r["trial"] for r in timings.read_csv(folders[1])] == [1]
    out = tmp_path / "merged"
    assert merge_mod.main([*map(str, folders), "--out", str(out)]) == 0
    single = tmp_path / "single"
    assert (out / "metrics.json").read_text() == (single / "metrics.json").read_text()
    assert (load_truth(out / "ground_truth.json").to_dict()
            == load_truth(single / "ground_truth.json").to_dict())
    for rel in ("pcaps/global-direct-1.pcap", "pcaps/global-stealth-0.pcap",
                "logs/stealth-1/controller.log"):
        assert (out / rel).read_bytes() == (single / rel).read_bytes()
    assert (out / "report.md").is_file() and (out / "plots" / "roc.png").is_file()
    rows = timings.read_csv(out)
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    assert all(r["analysis_s"] > 0 and r["bringup_s"] == 3.0 for r in rows)
    m = json.loads((out / "merged.json").read_text())
    assert m["of"] == 3 and sorted(m["shards"]) == ["0/3", "1/3", "2/3"] and m["trials"] == 4


def test_the_runner_says_where_each_trials_time_went(scenario, tmp_path, capsys):
    assert scenario(tmp_path / "run", trials=1) == 0
    rows = timings.read_csv(tmp_path / "run")
    assert [(r["mode"], r["migration_s"]) for r in rows] == [("direct", 2.0), ("stealth", 3.0)]
    for r in rows:  # the fake trial's phases, its share of the analysis, their sum
        assert (r["bringup_s"], r["warmup_s"], r["cooldown_s"], r["teardown_s"]) == (3, 8, 4, 1)
        assert r["analysis_s"] > 0 and r["lock_wait_s"] == 0
        assert r["total_s"] == pytest.approx(16 + r["migration_s"] + r["analysis_s"], abs=0.01)
    t = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert t["trials"] == 2 and t["trials_per_hour"] == pytest.approx(7200 / t["wall_s"], 0.01)
    printed = capsys.readouterr().out
    assert "where a trial's time went" in printed and "trials per hour" in printed


@pytest.mark.slow  # two analyses of synthetic runs
def test_a_sweep_merges_point_by_point_also_with_empty_shards(scenario, tmp_path):
    assert scenario(tmp_path / "single", extra=SWEEP, trials=1) == 0
    folders = _shards(scenario, tmp_path, 5, extra=SWEEP, trials=1)  # 4 trials, 5 shards
    assert not any((folders[4]).glob("*/ground_truth.json"))  # the empty shard
    out = tmp_path / "merged"
    merge(folders, out)
    for point in ("flows_per_s=1.0", "flows_per_s=2.0"):
        assert ((out / point / "metrics.json").read_text()
                == (tmp_path / "single" / point / "metrics.json").read_text())
    assert (out / "sweep.json").read_text() == (tmp_path / "single" / "sweep.json").read_text()


@pytest.fixture
def three(scenario, tmp_path) -> list[Path]:
    return _shards(scenario, tmp_path / "a", 3)


def _refused(folders: list[Path], out: Path, match: str) -> None:
    with pytest.raises(MergeError, match=match):
        merge(folders, out)


def test_refuses_shards_of_another_seed_or_scenario(scenario, three, tmp_path):
    other = tmp_path / "b"
    assert scenario(other, "--shard", "1/3", "--seed", "5") == 0
    _refused([three[0], other, three[2]], tmp_path / "m", r"another run .*seed = 5 there, 1 in")
    shutil.rmtree(other)
    assert scenario(other, "--shard", "1/3", edit=("mib = 8", "mib = 4")) == 0
    _refused([three[0], other, three[2]], tmp_path / "m", r"vm\.mib = 4 there, 8 in")


def test_refuses_shards_of_another_split(scenario, three, tmp_path):
    two = _shards(scenario, tmp_path / "b", 2)
    _refused([three[0], three[1], two[1]], tmp_path / "m", "different splits")


def test_refuses_overlapping_and_missing_shards(three, tmp_path):
    _refused([three[0], three[1], three[1], three[2]], tmp_path / "m",
             "shard 1/3 given twice")
    copy = tmp_path / "copy"
    shutil.copytree(three[2], copy)
    _refused([*three, copy], tmp_path / "m", "shard 2/3 given twice")
    _refused([three[0], three[2]], tmp_path / "m", r"missing shard\(s\) 1/3 of 3 \(given: 0/3, 2/3")
    _refused([three[1]], tmp_path / "m", r"missing shard\(s\) 0/3, 2/3")


def test_refuses_a_shard_that_did_not_finish(three, tmp_path):
    truth = load_truth(three[0] / "ground_truth.json")
    truth.trials = truth.trials[:1]  # trial 3 (stealth 1) never finished
    write_truth(three[0] / "ground_truth.json", truth)
    _refused(three, tmp_path / "m", r"shard 0/3\) did not finish: no stealth trial 1 \(id 3\)")
    (three[0] / "ground_truth.json").unlink()
    _refused(three, tmp_path / "m", "it ran none of its 2 trial")


def test_refuses_a_missing_pcap_and_foreign_trials(three, tmp_path):
    (three[1] / "pcaps" / "global-direct-1.pcap").unlink()
    _refused(three, tmp_path / "m", "names the pcap pcaps/global-direct-1.pcap, which is missing")
    t0 = load_truth(three[0] / "ground_truth.json")
    t2 = load_truth(three[2] / "ground_truth.json")
    t2.trials += t0.trials[:1]
    write_truth(three[2] / "ground_truth.json", t2)
    _refused([three[0], three[2], three[1]], tmp_path / "m", r"trial id\(s\) \[0\].*not of this")


def test_refuses_folders_that_are_not_shards(three, scenario, tmp_path):
    assert scenario(tmp_path / "plain", trials=1) == 0  # a whole run, not a shard
    _refused([*three, tmp_path / "plain"], tmp_path / "m", "a run folder but not a shard")
    (tmp_path / "empty").mkdir()
    _refused([tmp_path / "empty"], tmp_path / "m", "not a run folder")
    _refused([], tmp_path / "m", "no shard folders")


def test_refuses_an_out_folder_in_use(three, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    _refused(three, tmp_path / "used", "exists and is not an empty folder")
    _refused(three, three[0] / "merged", "inside")
    assert merge_mod.main([*map(str, three), "--out", str(tmp_path / "used")]) == 2
    assert "merge refused" in capsys.readouterr().out
