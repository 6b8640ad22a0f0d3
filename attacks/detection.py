"""Migration detectors: a score for every time window, from the features in ``attacks.features``.

Two detectors, both blind to ground truth when they score a trial:

- **change** (unsupervised): the per-window statistic is the largest robust z-score among the
  volume/flow features that a bulk transfer moves (``CHANGE_FEATURES``); a one-sided CUSUM over that
  statistic (drift ``k``, threshold ``h``) raises the alarms. ``scores`` is the statistic itself, so
  the ROC over windows is not smeared by the CUSUM's memory; ``alarms`` come from the CUSUM.
- **classifier** (supervised, scikit-learn random forest): trained on labelled windows of the
  trials of *other* workload seeds (leave-one-seed-out, ``seed_folds``: trial t of every mode
  shares a seed, so its twin of the other mode never trains its classifier), fed each window's
  robust z-scores plus those of its two neighbours. Its alarm threshold is the 99th percentile of
  the scores the training negatives get from models that did not see their seed, so the expected
  false-alarm rate is about 1 % without looking at the scored trial's labels.

Labels (only for training and scoring): a window is positive when it overlaps the migration's span.
Also here: two-sample KS tests of packet sizes and gaps, migration windows against normal ones.

Callers: ``attacks.pipeline`` (offline analysis of a run), ``attacks.live`` (the change detector,
incrementally), the tests.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from attacks.features import (
    CAPTURE_RELATIVE,
    FEATURE_NAMES,
    Windows,
    make_windows,
    robust_z,
    window_features,
)

# (feature, sign): a bulk transfer raises volumes and packs packets closer together
CHANGE_FEATURES = [
    ("bytes", 1.0),
    ("top_flow_bytes", 1.0),
    ("top_pair_bytes", 1.0),
    ("max_host_out", 1.0),
    ("max_host_in", 1.0),
    ("max_host_net_in", 1.0),
    ("gap_mean_log", -1.0),
]
CUSUM_DRIFT = 1.5
CUSUM_THRESHOLD = 2.0
TARGET_FPR = 0.01


@dataclass
class WindowFeatures:
    """One attacker's view of one trial, cut into windows."""

    window_starts: np.ndarray
    window_s: float
    X: np.ndarray  # raw features, FEATURE_NAMES columns
    Z: np.ndarray  # robust z against the same trial's windows
    windows: Windows | None = None
    extra: np.ndarray | None = None  # more per-window evidence (e.g. relayed bytes), raw


@dataclass
class Detection:
    """A detector's output for one trial: a score and an alarm flag for every window."""

    detector: str
    window_starts: np.ndarray
    window_s: float
    scores: np.ndarray
    alarms: np.ndarray
    threshold: float
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "detector": self.detector,
            "window_s": self.window_s,
            "window_starts": [round(float(t), 6) for t in self.window_starts],
            "scores": [round(float(s), 6) for s in self.scores],
            "alarms": [bool(a) for a in self.alarms],
            "threshold": float(self.threshold),
            "notes": self.notes,
        }


def trial_features(
    packets: np.ndarray, window_s: float = 1.0, t0: float | None = None, t1: float | None = None
) -> WindowFeatures:
    """Cut one capture into windows and compute raw and robust-z features."""
    w = make_windows(packets, window_s, t0, t1)
    X = window_features(packets, w)
    return WindowFeatures(window_starts=w.starts, window_s=window_s, X=X, Z=robust_z(X), windows=w)


def label_windows(
    window_starts: np.ndarray, window_s: float, start: float | None, end: float | None
) -> np.ndarray:
    """True for windows overlapping ``[start, end]`` (all False when there is no migration)."""
    if start is None or end is None:
        return np.zeros(len(window_starts), dtype=bool)
    return (window_starts + window_s > start) & (window_starts <= end)


def change_statistic(Z: np.ndarray) -> np.ndarray:
    """Per window: the largest signed z-score among ``CHANGE_FEATURES`` (0 when nothing rises)."""
    M = np.column_stack([sign * Z[:, FEATURE_NAMES.index(n)] for n, sign in CHANGE_FEATURES])
    return np.clip(M.max(axis=1), 0, None)


def cusum(stat: np.ndarray, drift: float = CUSUM_DRIFT) -> np.ndarray:
    """One-sided CUSUM: ``S_t = max(0, S_{t-1} + stat_t - drift)``."""
    s = np.zeros(len(stat))
    acc = 0.0
    for i, x in enumerate(stat):
        acc = max(0.0, acc + float(x) - drift)
        s[i] = acc
    return s


def calibrate_cusum(
    negative_stats: list[np.ndarray],
    drift: float = CUSUM_DRIFT,
    fpr: float = TARGET_FPR,
    floor: float = 1.0,
) -> float:
    """The smallest CUSUM threshold whose alarm rate over the negative windows is ≤ ``fpr``, but
    at least ``floor``: quiet rehearsal runs (a CUSUM that never left 0) must not turn every
    later blip into an alarm."""
    sums = np.concatenate([cusum(s, drift) for s in negative_stats]) if negative_stats else []
    if len(sums) == 0:
        return CUSUM_THRESHOLD
    return max(float(np.quantile(sums, 1 - fpr)), floor)


def detect_change(
    wf: WindowFeatures, drift: float = CUSUM_DRIFT, threshold: float = CUSUM_THRESHOLD
) -> Detection:
    """The unsupervised change detector on one trial's windows."""
    stat = change_statistic(wf.Z)
    s = cusum(stat, drift)
    return Detection(
        detector="change",
        window_starts=wf.window_starts,
        window_s=wf.window_s,
        scores=stat,
        alarms=s > threshold,
        threshold=threshold,
        notes=[f"cusum drift={drift} threshold={threshold:.3g}"],
    )


_IN_CONTEXT = [i for i, n in enumerate(FEATURE_NAMES) if n not in CAPTURE_RELATIVE]


def context_matrix(wf: WindowFeatures) -> np.ndarray:
    """Each window's raw features and z-scores, next to the z-scores of the previous and the next
    window. Raw features let the model learn absolute levels (runs of one scenario share a
    background load); z-scores carry over between loads. The features that tell a window's
    position in the capture (``attacks.features.CAPTURE_RELATIVE``) are left out."""
    Z = np.clip(wf.Z, -50, 50)
    prev = np.vstack([Z[:1], Z[:-1]])
    nxt = np.vstack([Z[1:], Z[-1:]])
    k = _IN_CONTEXT
    parts = [wf.X[:, k], Z[:, k], prev[:, k], nxt[:, k], change_statistic(Z)[:, None]]
    if wf.extra is not None:
        parts.append(np.log1p(np.clip(wf.extra, 0, None)).reshape(len(Z), -1))
    return np.hstack(parts)


def _forest(seed: int, n_estimators: int = 60):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=n_estimators,
        min_samples_leaf=5,
        class_weight="balanced_subsample",
        random_state=seed,
        n_jobs=1,
    )


def train_classifier(
    train: list[WindowFeatures],
    labels: list[np.ndarray],
    seed: int = 0,
    fpr: float = TARGET_FPR,
    calibration_folds: int = 3,
    groups: Sequence[Hashable] | None = None,
):
    """Fit a random forest on labelled windows; returns ``(model, alarm_threshold)``.

    The threshold is the ``1 - fpr`` quantile of scores that the training negatives get from
    models that did not see their trial's group (``groups[i]``, default: each trial its own; the
    groups dealt round-robin into ``calibration_folds`` folds): scores on a new seed, not
    in-sample or out-of-bag ones, which flatter the model.
    """
    mats = [context_matrix(wf) for wf in train]
    X = np.vstack(mats)
    y = np.concatenate(labels).astype(int)
    model = _forest(seed).fit(X, y)
    keys = list(range(len(mats))) if groups is None else list(groups)
    rank = {g: r for r, g in enumerate(dict.fromkeys(keys))}  # groups in order of appearance
    fold = np.concatenate([np.full(len(m), rank[g] % calibration_folds)
                           for g, m in zip(keys, mats, strict=True)])
    held: list[np.ndarray] = []
    for g in range(min(calibration_folds, len(rank))):
        fit, out = fold != g, fold == g
        if len(set(y[fit].tolist())) < 2 or not (out & (y == 0)).any():
            continue
        inner = _forest(seed + 1 + g, n_estimators=30).fit(X[fit], y[fit])
        held.append(inner.predict_proba(X[out & (y == 0)])[:, 1])
    neg = np.concatenate(held) if held else np.zeros(0)
    thr = float(np.quantile(neg, 1 - fpr)) if len(neg) else 0.5
    return model, max(thr, 1e-6)


def classify(model, threshold: float, wf: WindowFeatures) -> Detection:
    """Score one trial's windows with a trained model."""
    X = context_matrix(wf)
    p = model.predict_proba(X)
    scores = p[:, list(model.classes_).index(1)] if 1 in model.classes_ else np.zeros(len(X))
    return Detection(
        detector="classifier",
        window_starts=wf.window_starts,
        window_s=wf.window_s,
        scores=scores,
        alarms=scores > threshold,
        threshold=threshold,
    )


@dataclass(frozen=True)
class Fold:
    """Trial ``test``'s classifier: trained on the trials ``train`` (indices), or, when
    ``skipped`` says why, not trained at all (a stand-in detector scores the trial)."""

    test: int
    train: tuple[int, ...]
    skipped: str = ""


def seed_folds(
    groups: Sequence[Hashable],
    labels: Sequence[np.ndarray] | None = None,
    min_groups: int = 3,
    min_positives: int = 8,
) -> list[Fold]:
    """Leave one seed out: for trial ``i``, train on every trial whose group (its workload
    seed, ``groups[i]``) differs from its own, so no trial trains on its twin.

    Skipped, with the reason, where the other seeds are fewer than ``min_groups`` (too few to
    calibrate the alarm threshold on seeds the model did not see) or, given ``labels``, hold
    fewer than ``min_positives`` migration windows or no normal one.
    """
    folds = []
    for i, g in enumerate(groups):
        train = tuple(j for j, h in enumerate(groups) if h != g)
        others = len({groups[j] for j in train})
        why = ""
        if others < min_groups:
            why = (f"{others} other seed(s) ({len(train)} trials), needs {min_groups} to "
                   "calibrate its alarm threshold on seeds it did not see")
        elif labels is not None:
            positives = sum(int(labels[j].sum()) for j in train)
            if positives < min_positives:
                why = (f"{positives} migration window(s) in the other seeds' trials, "
                       f"needs {min_positives}")
            elif all(labels[j].all() for j in train):
                why = "no normal window in the other seeds' trials"
        folds.append(Fold(i, train, why))
    return folds


def leave_one_seed_out(
    views: list[WindowFeatures],
    labels: list[np.ndarray],
    groups: Sequence[Hashable] | None = None,
    seed: int = 0,
    min_positives: int = 8,
    min_groups: int = 3,
) -> list[Detection | str]:
    """For each trial, a classifier trained on the trials of the other seeds (``groups[i]``,
    default: each trial its own seed), or the reason it was not trained (``seed_folds``)."""
    groups = list(range(len(views))) if groups is None else list(groups)
    out: list[Detection | str] = []
    for fold in seed_folds(groups, labels, min_groups, min_positives):
        if fold.skipped:
            out.append(f"classifier not trained: {fold.skipped}")
            continue
        train = [views[j] for j in fold.train]
        model, thr = train_classifier(train, [labels[j] for j in fold.train], seed=seed,
                                      groups=[groups[j] for j in fold.train])
        det = classify(model, thr, views[fold.test])
        det.notes.append(f"trained on {len(train)} trials of "
                         f"{len({groups[j] for j in fold.train})} other seeds")
        out.append(det)
    return out


def leave_one_seed_out_change(
    views: list[WindowFeatures],
    labels: list[np.ndarray],
    groups: Sequence[Hashable] | None = None,
    drift: float = CUSUM_DRIFT,
) -> list[Detection]:
    """The change detector with its CUSUM threshold calibrated on the negatives of the trials of
    the other seeds (``groups``, default: each trial its own)."""
    groups = list(range(len(views))) if groups is None else list(groups)
    out = []
    for i, wf in enumerate(views):
        negs = [
            change_statistic(v.Z)[~y]
            for j, (v, y) in enumerate(zip(views, labels, strict=True))
            if groups[j] != groups[i]
        ]
        negs = [n for n in negs if len(n)]
        thr = calibrate_cusum(negs, drift) if negs else CUSUM_THRESHOLD
        out.append(detect_change(wf, drift, thr))
    return out


def detect_relay(wf: WindowFeatures) -> Detection:
    """Windows in which relaying was seen (``wf.extra``: relayed bytes per window): the score is
    ``log1p`` of those bytes, every window with any is an alarm."""
    act = np.zeros(len(wf.window_starts)) if wf.extra is None else wf.extra.reshape(-1)
    return Detection(
        detector="relay",
        window_starts=wf.window_starts,
        window_s=wf.window_s,
        scores=np.log1p(act),
        alarms=act > 0,
        threshold=0.0,
    )


def ks_tests(packets: np.ndarray, windows: Windows, positive: np.ndarray) -> dict:
    """Two-sample KS of packet sizes and of inter-packet gaps: migration windows vs the others.

    Returns ``{"sizes": {"statistic", "pvalue", "n_mig", "n_norm"}, "gaps": {...}}``; entries are
    None when one side has fewer than 5 packets.
    """
    from scipy.stats import ks_2samp

    in_pos = positive[windows.index]
    gaps = np.diff(packets["ts"], prepend=packets["ts"][:1])
    out: dict = {}
    for name, values in (("sizes", packets["length"].astype(float)), ("gaps", gaps)):
        a, b = values[in_pos], values[~in_pos]
        if len(a) < 5 or len(b) < 5:
            out[name] = None
            continue
        r = ks_2samp(a, b)
        out[name] = {
            "statistic": float(r.statistic),
            "pvalue": float(r.pvalue),
            "n_mig": int(len(a)),
            "n_norm": int(len(b)),
        }
    return out
