"""Leave-one-seed-out: trial t of both modes shares a workload seed, so a trial's classifier
must never train on its twin (attacks.detection.seed_folds), and with too few other seeds it is
not trained at all, saying why."""

from __future__ import annotations

import numpy as np

from attacks.detection import leave_one_seed_out, seed_folds
from attacks.pipeline import analyze_run, trial_groups
from attacks.truth import GLOBAL
from attacks.view import build_view
from tests.unit.attacks_twins import twin_captures


def test_the_split_keeps_twins_apart():
    # a run of 4 trials per mode: trials 0-3 direct, 4-7 stealth, trial t and t + 4 are twins
    groups = [f"seed:{1000 + t}" for t in range(4)] * 2
    folds = seed_folds(groups)
    assert [f.test for f in folds] == list(range(8))
    for f in folds:
        assert not f.skipped
        assert groups[f.test] not in {groups[j] for j in f.train}  # no twin, not itself
        assert len(f.train) == 6 and len({groups[j] for j in f.train}) == 3
    # leave-one-trial-out would have trained trial 0 on its twin, trial 4
    assert 4 not in folds[0].train and 0 not in folds[4].train


def test_too_few_other_seeds_skip_the_classifier_with_the_reason():
    # quick's 2 trials per mode: every trial has 2 trials but only 1 other seed to learn from
    folds = seed_folds(["seed:1", "seed:2"] * 2)
    assert all(f.skipped for f in folds)
    assert folds[0].skipped.startswith("1 other seed(s) (2 trials), needs 3")
    # 3 seeds × 2 modes: 4 other trials, 2 other seeds: still too few (3 other trials sufficed
    # under leave-one-trial-out)
    assert all("2 other seed(s) (4 trials)" in f.skipped for f in seed_folds(list("abc") * 2))
    # every trial its own seed: the old rule, three or more other trials
    assert not any(f.skipped for f in seed_folds(range(4)))
    assert all(f.skipped for f in seed_folds(range(3)))
    # labels: too few migration windows, or no normal window, in the other seeds' trials
    y = [np.array([False, True])] * 4
    assert "3 migration window(s)" in seed_folds(range(4), y, min_positives=8)[0].skipped
    full = [np.ones(10, dtype=bool)] * 4
    assert seed_folds(range(4), full)[0].skipped == "no normal window in the other seeds' trials"


def test_the_classifier_of_a_trial_does_not_depend_on_its_twin():
    caps, truths = twin_captures(4)
    trials = sorted(caps)
    views = [build_view(GLOBAL, t, [caps[t][GLOBAL]]) for t in trials]
    feats = [v.features for v in views]
    labels = [v.features.window_starts * 0 > 1 for v in views]  # all False, then the truth
    for i, t in enumerate(trials):
        ws = feats[i].window_starts
        labels[i] = (ws + feats[i].window_s > truths[t].migration_start) & \
            (ws <= truths[t].migration_end)
    groups = trial_groups(trials, truths)
    assert groups[0] == groups[4] and len(set(groups)) == 4
    base = leave_one_seed_out(feats, labels, groups, seed=3)
    assert all(not isinstance(d, str) for d in base)
    assert base[0].notes[-1] == "trained on 6 trials of 3 other seeds"
    # the twin's labels wiped out: trial 0's scores do not move ...
    twin_gone = list(labels)
    twin_gone[4] = np.zeros_like(labels[4])
    again = leave_one_seed_out(feats, twin_gone, groups, seed=3)
    assert np.array_equal(again[0].scores, base[0].scores)
    # ... but another seed's labels do reach it (the check above can fail)
    other_gone = list(labels)
    other_gone[1] = np.zeros_like(labels[1])
    moved = leave_one_seed_out(feats, other_gone, groups, seed=3)
    assert not np.array_equal(moved[0].scores, base[0].scores)


def test_a_run_with_two_seeds_reports_why_it_has_no_classifier():
    caps, truths = twin_captures(2)
    _, records, _ = analyze_run(caps, truths)
    records = [r for r in records if r["attacker"] == "global"]  # the built-in attacker's
    assert len(records) == 4
    for r in records:
        assert r["detector"] != "classifier" and "detection_auc_classifier" not in r
        assert any(n.startswith("classifier not trained: 1 other seed(s)")
                   for n in r["detector_notes"]), r["detector_notes"]
