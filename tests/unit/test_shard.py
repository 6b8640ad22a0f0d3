"""The shard partition of a run's (point, mode, trial) list (experiments.shard) and the runner's
``--shard I/N`` argument. No root."""

from __future__ import annotations

import json

import pytest

from experiments import runner
from experiments.scenario import expand, load
from experiments.shard import (
    Job,
    Shard,
    ShardError,
    jobs,
    read_record,
    select,
    write_record,
)


def _sweep(trials: int = 3):
    sc = load("quick")
    sc.trials, sc.modes = trials, ["direct", "stealth"]  # two arms: the counts below
    sc.sweep = {"background.flows_per_s": [0.5, 1.0, 2.0], "stealth.n": [2, 3]}
    return sc


def test_the_list_is_the_single_machine_order_with_its_trial_ids():
    sc = _sweep(trials=2)
    variants = expand(sc)
    all_jobs = jobs(variants)
    assert len(all_jobs) == len(variants) * 2 * 2 == 24
    for label, v in variants:
        mine = [(j.mode, j.trial, j.trial_id) for j in all_jobs if j.label == label]
        # the runner's trial ids: the place in its point's mode-major list
        assert mine == [(m, t, i) for i, (m, t) in
                        enumerate((m, t) for m in v.modes for t in range(v.trials))]
    assert all_jobs[0] == Job(variants[0][0], "direct", 0, 0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 24, 25, 40])
def test_every_trial_exactly_once_over_n_shards(n):
    all_jobs = jobs(expand(_sweep(trials=2)))
    parts = [select(all_jobs, Shard(i, n)) for i in range(n)]
    flat = [j for p in parts for j in p]
    assert sorted(flat, key=all_jobs.index) == all_jobs  # each once, none lost
    assert len(flat) == len(set(flat)) == len(all_jobs)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # round-robin: balanced
    if n > len(all_jobs):
        assert sizes.count(0) == n - len(all_jobs)  # more shards than trials: empty shards


def test_the_partition_is_deterministic_across_loads():
    a = [select(jobs(expand(_sweep())), Shard(i, 4)) for i in range(4)]
    b = [select(jobs(expand(_sweep())), Shard(i, 4)) for i in range(4)]
    assert a == b
    # round-robin: shard 1 of 4 holds the list's items 1, 5, 9, ...
    all_jobs = jobs(expand(_sweep()))
    assert a[1] == [all_jobs[i] for i in range(1, len(all_jobs), 4)]


def test_one_trial_runs_on_each_of_more_shards_than_trials():
    sc = load("quick")
    sc.trials, sc.modes = 1, ["direct", "stealth"]
    all_jobs = jobs(expand(sc))
    assert [len(select(all_jobs, Shard(i, 3))) for i in range(3)] == [1, 1, 0]


@pytest.mark.parametrize("text,shard", [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)),
                                        (" 11/12 ", Shard(11, 12))])
def test_shard_parses(text, shard):
    assert Shard.parse(text) == shard
    assert str(shard) == text.strip()


@pytest.mark.parametrize("text,match", [
    ("3/2", "I must be < N"), ("2/2", "I must be < N"), ("a/b", "expected I/N"),
    ("0/0", "N must be >= 1"), ("-1/2", "expected I/N"), ("1/", "expected I/N"),
    ("", "expected I/N"), ("1/2/3", "expected I/N"), ("1.0/2", "expected I/N")])
def test_bad_shards_are_refused(text, match):
    with pytest.raises(ShardError, match=match):
        Shard.parse(text)


@pytest.mark.parametrize("arg,match", [("3/2", "--shard 3/2: I must be < N"),
                                       ("a/b", "--shard 'a/b': expected I/N"),
                                       ("0/0", "--shard 0/0: N must be >= 1")])
def test_runner_refuses_a_bad_shard_before_anything_runs(arg, match, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a bad --shard ran trials"))
    with pytest.raises(SystemExit) as info:
        runner.main(["quick", "--shard", arg])
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_the_shard_record_reads_back(tmp_path):
    sc = _sweep()
    write_record(tmp_path, sc, Shard(2, 5))
    d = json.loads((tmp_path / "shard.json").read_text())
    assert (d["shard"], d["of"]) == (2, 5) and "source_file" not in d["scenario"]
    r = read_record(tmp_path)
    assert r.shard == Shard(2, 5) and r.jobs == jobs(expand(sc))
    assert r.mine == select(r.jobs, Shard(2, 5))
    assert r.scenario.sweep == sc.sweep and r.scenario.trials == 3


def test_a_record_of_another_list_is_refused(tmp_path):
    write_record(tmp_path, _sweep(), Shard(0, 2))
    d = json.loads((tmp_path / "shard.json").read_text())
    d["jobs"] = d["jobs"][1:]
    (tmp_path / "shard.json").write_text(json.dumps(d))
    with pytest.raises(ShardError, match="does not follow from its scenario"):
        read_record(tmp_path)


def test_not_a_shard_folder(tmp_path):
    with pytest.raises(ShardError, match="not a run folder"):
        read_record(tmp_path)
    (tmp_path / "ground_truth.json").write_text("{}")
    with pytest.raises(ShardError, match="a run folder but not a shard"):
        read_record(tmp_path)
    with pytest.raises(ShardError, match="not a folder"):
        read_record(tmp_path / "nothing")
