"""The anomaly's time in a trial is seeded and spread (a fixed start lets a rehearsed classifier
learn *when* instead of *what*: positional features such as the oldest flow's age then give it
away, see attacks.features.CAPTURE_RELATIVE, which the classifiers now leave out)."""

from __future__ import annotations

import tomllib

import pytest

from experiments.scenario import ScenarioError, from_dict
from experiments.trial import warmup_s

BASE = """
name = "j"
seed = 7
trials = 20
modes = ["direct", "cover"]
[cover]
rate_x_normal = 1.0
[background]
warmup_s = 8
start_jitter_s = 6
"""


def load_scenario_text(text: str):
    return from_dict(tomllib.loads(text), "test")


def test_each_trial_draws_its_start_within_the_jitter_and_again_the_same() -> None:
    sc = load_scenario_text(BASE)
    starts = [warmup_s(sc, t) for t in range(sc.trials)]
    assert all(8 <= s < 14 for s in starts)
    assert max(starts) - min(starts) > 3  # spread, not one offset
    assert starts == [warmup_s(load_scenario_text(BASE), t) for t in range(sc.trials)]


def test_no_jitter_is_the_plain_warm_up_and_a_negative_one_is_refused() -> None:
    sc = load_scenario_text(BASE.replace("start_jitter_s = 6", "start_jitter_s = 0"))
    assert {warmup_s(sc, t) for t in range(5)} == {8.0}
    with pytest.raises(ScenarioError, match="start_jitter_s"):
        load_scenario_text(BASE.replace("start_jitter_s = 6", "start_jitter_s = -1"))
