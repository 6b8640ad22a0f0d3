"""The intervals of attacks.stats against known values: Wilson at 0/10, 5/10, 10/10; the seeded
bootstrap contains the mean, repeats itself, and agrees with scipy's percentile bootstrap; the
aggregates of attacks.scoring carry an interval and a trial count for every mean."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap

from attacks.scoring import METRIC_FIELDS, aggregate, aggregate_costs
from attacks.stats import (
    bootstrap_ci,
    format_interval,
    mean_interval,
    proportion_interval,
    wilson_ci,
)


@pytest.mark.parametrize(
    ("k", "lo", "hi"),
    [(0, 0.0, 0.2775), (5, 0.2366, 0.7634), (10, 0.7225, 1.0)],  # the published 95 % values
)
def test_wilson_known_values(k, lo, hi):
    got = wilson_ci(k, 10)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] <= k / 10 <= got[1] <= 1.0


def test_wilson_bounds_are_exact_at_the_ends_and_arguments_checked():
    assert wilson_ci(0, 3)[0] == 0.0 and wilson_ci(3, 3)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_ci(4, 3)
    with pytest.raises(ValueError):
        wilson_ci(0, 0)


def test_bootstrap_contains_the_mean_and_is_reproducible():
    rng = np.random.default_rng(7)
    for n in (2, 3, 10, 40):
        x = rng.uniform(0.3, 1.0, size=n)
        lo, hi = bootstrap_ci(x, seed=1)
        assert lo <= float(np.mean(x)) <= hi and lo < hi
        assert bootstrap_ci(x, seed=1) == (lo, hi)  # the same seed, the same interval
    x = rng.uniform(size=10)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=2)  # the seed does drive it
    assert bootstrap_ci([0.1] * 10, seed=3) == (pytest.approx(0.1), pytest.approx(0.1))
    assert bootstrap_ci([0.8], seed=0) is None and bootstrap_ci([], seed=0) is None


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    x = np.array([0.5, 0.7, 0.9, 1.0, 0.6, 0.95, 0.55, 0.8])
    ref = bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=20000,
                    method="percentile", random_state=0).confidence_interval
    assert bootstrap_ci(x, seed=0) == pytest.approx((ref.low, ref.high), abs=0.02)


def test_intervals_as_stored_and_shown():
    iv = mean_interval([0.5, None, 0.7, 0.9], seed=0)
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(0.7) and iv["method"] == "bootstrap"
    assert iv["lo"] <= iv["mean"] <= iv["hi"]
    p = proportion_interval([1.0, 0.0, None, 1.0, 1.0])
    assert (p["k"], p["n"], p["mean"]) == (3, 4, 0.75) and p["method"] == "wilson"
    assert (p["lo"], p["hi"]) == wilson_ci(3, 4)
    with pytest.raises(ValueError):
        proportion_interval([0.5])
    shown = format_interval({"mean": 0.81, "lo": 0.7, "hi": 0.9, "n": 10})
    assert shown == "0.81 [0.70, 0.90] n=10"
    assert format_interval(mean_interval([0.8], seed=0)) == "0.80 n=1"
    assert format_interval(mean_interval([None], seed=0)) == "–"
    assert format_interval({"mean": 8.4e6, "lo": 8e6, "hi": 9e6, "n": 2}, scale=1e6) == \
        "8.40 [8.00, 9.00] n=2"


def test_every_aggregated_mean_has_an_interval_and_a_count():
    recs = [{"trial": i, "mode": "direct", "attacker": "global", "detection_auc": 0.6 + 0.1 * i,
             "destination_top1": float(i % 2), "detection_auc_change": 0.5} for i in range(4)]
    entry = aggregate(recs, seed=5)["direct"]["global"]
    assert set(METRIC_FIELDS) | {"detection_auc_change"} <= set(entry["intervals"])
    auc = entry["intervals"]["detection_auc"]
    assert auc["n"] == 4 and auc["mean"] == entry["detection_auc"] and auc["lo"] < auc["hi"]
    top1 = entry["intervals"]["destination_top1"]
    assert top1["method"] == "wilson" and (top1["k"], top1["n"]) == (2, 4)
    assert entry["intervals"]["path_recall"]["n"] == 0  # no value: no mean, no interval
    assert aggregate(recs, seed=5) == aggregate(recs, seed=5)
    costs = aggregate_costs([{"migration_time_s": 2.0}, {"migration_time_s": 3.0}], seed=5)
    assert costs["migration_time_s"] == 2.5 and costs["intervals"]["migration_time_s"]["n"] == 2
