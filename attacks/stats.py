"""Confidence intervals for the means a run reports: pure functions, seeded, no I/O.

- ``bootstrap_ci(values, seed)``: the 95 % percentile-bootstrap interval of a mean over trials
  (``N_RESAMPLES`` resamples of the trials with replacement, drawn from
  ``numpy.random.default_rng(seed)``, so the same values and seed give the same interval).
- ``wilson_ci(k, n)``: the 95 % Wilson score interval of a proportion ``k / n`` (top-1 and top-3
  hits, one 0/1 outcome per trial); unlike the normal approximation it stays inside [0, 1] and is
  not empty at 0/n or n/n.
- ``mean_interval`` / ``proportion_interval``: what ``metrics.json`` stores per field,
  ``{"mean", "lo", "hi", "n", "method"}`` (``"k"`` too for a proportion); ``interval`` picks one.

With fewer than two values a bootstrap has nothing to resample: ``lo``/``hi`` are None (the mean
and ``n`` are still given). Callers: ``attacks.scoring`` (the attackers' figures and the costs),
``experiments.tables`` and ``experiments.plots`` (their display), the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile (1.959964 for 95 %)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson_ci(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (``n >= 1``)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n and n >= 1, got k={k} n={n}")
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at k = 0 or k = n the bound is exactly 0 or 1; rounding must not move it
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def bootstrap_ci(
    values: Sequence[float],
    seed: int,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float] | None:
    """The percentile-bootstrap interval of the mean of ``values``; None for fewer than two."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = (float(q) for q in np.quantile(means, [alpha / 2, 1 - alpha / 2]))
    m = float(x.mean())
    # the resampled means of equal values can differ from their mean in the last bit
    return min(lo, m), max(hi, m)


def _present(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None]


def mean_interval(
    values: Sequence[Any], seed: int, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """``{"mean", "lo", "hi", "n", "method": "bootstrap"}`` over the values that are not None."""
    x = _present(values)
    ci = bootstrap_ci(x, seed, confidence)
    return {
        "mean": float(np.mean(x)) if x else None,
        "lo": ci[0] if ci else None,
        "hi": ci[1] if ci else None,
        "n": len(x),
        "method": "bootstrap",
    }


def proportion_interval(values: Sequence[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``{"mean", "lo", "hi", "n", "k", "method": "wilson"}`` over 0/1 outcomes (None skipped)."""
    x = _present(values)
    if any(v not in (0.0, 1.0) for v in x):
        raise ValueError(f"proportion_interval: outcomes must be 0 or 1, got {x}")
    k, n = int(sum(x)), len(x)
    lo, hi = wilson_ci(k, n, confidence) if n else (None, None)
    return {"mean": k / n if n else None, "lo": lo, "hi": hi, "n": n, "k": k, "method": "wilson"}


def interval(
    values: Sequence[Any], seed: int, proportion: bool = False, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """A proportion's Wilson interval or a mean's bootstrap interval."""
    if proportion:
        return proportion_interval(values, confidence)
    return mean_interval(values, seed, confidence)


def format_interval(iv: dict[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    """``"0.81 [0.70, 0.90] n=10"``; ``"–"`` without a mean, ``"0.81 n=1"`` without bounds."""
    if not iv or iv.get("mean") is None:
        n = (iv or {}).get("n")
        return "–" if not n else f"– n={n}"

    def f(v: float) -> str:
        v = v / scale
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"

    bounds = "" if iv.get("lo") is None else f" [{f(iv['lo'])}, {f(iv['hi'])}]"
    return f"{f(iv['mean'])}{bounds} n={iv['n']}"
