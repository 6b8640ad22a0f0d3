"""Scoring: attack results against the trial's ground truth (``attacks.truth.TrialTruth``), in
one place, after the attack.

Nothing here feeds back into an attacker. Per attacker per trial one record:

- ``detection_auc``: ROC AUC of the detector's window scores; a window is positive when it overlaps
  ``[migration_start, migration_end]``. None when the trial has no positive or no negative window.
- ``tpr_at_1pct_fpr``: the highest true-positive rate on the ROC curve at a false-positive rate
  ≤ 1 % (over this trial's windows).
- ``time_to_detect_s``: end of the first alarmed window that ends after ``migration_start`` and
  starts no later than ``migration_end`` (a window is only complete at its end), minus
  ``migration_start``; None when no alarm falls in that span (a miss).
- ``false_alarm_rate``: alarmed negative windows / negative windows.
- ``destination_top1`` / ``destination_top3``: 1.0 when the true destination is the first / among
  the first three of the attacker's ranking, else 0.0; ``destination_chance`` = 1 / (hosts − 1),
  the top-1 rate of a uniform guess among the hosts other than the source
  (``destination_top3_chance`` = min(1, 3 / (hosts − 1))). ``source_top1`` likewise for the source.
- ``path_precision`` / ``path_recall``: over directed host-level edges. Predicted edges are the
  attacker's relay graph, addresses mapped to host names through the ground truth's host list (an
  unresolved virtual address maps to nothing and counts as wrong); true edges are
  ``{(p.src, p.to) for p in paths}`` (``"from"``/``"to"`` in ground_truth.json).
  precision = |P ∩ T| / |P| (0.0 when P is empty), recall = |P ∩ T| / |T| (None when T is empty).
- ``ks_sizes_stat``, ``ks_sizes_p``, ``ks_gaps_stat``, ``ks_gaps_p``: two-sample KS of packet sizes
  and inter-packet gaps, migration windows vs the others (None without both).

``aggregate`` averages each field over trials (ignoring None) per mode per attacker and keeps
the per-trial values. Caller: ``attacks.pipeline`` and the experiments runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attacks.detection import Detection, label_windows
from attacks.truth import TrialTruth

METRIC_FIELDS = [
    "detection_auc",
    "tpr_at_1pct_fpr",
    "time_to_detect_s",
    "false_alarm_rate",
    "destination_top1",
    "destination_top3",
    "destination_chance",
    "destination_top3_chance",
    "source_top1",
    "path_precision",
    "path_recall",
    "ks_sizes_stat",
    "ks_sizes_p",
    "ks_gaps_stat",
    "ks_gaps_p",
]


def detection_metrics(det: Detection, start: float | None, end: float | None) -> dict[str, Any]:
    """AUC, TPR at 1 % FPR, time to detect and false-alarm rate of one detection."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = label_windows(det.window_starts, det.window_s, start, end)
    out: dict[str, Any] = {
        "detection_auc": None,
        "tpr_at_1pct_fpr": None,
        "time_to_detect_s": None,
        "false_alarm_rate": None,
    }
    neg = ~y
    if neg.any():
        out["false_alarm_rate"] = float(det.alarms[neg].mean())
    if y.any() and neg.any():
        out["detection_auc"] = float(roc_auc_score(y, det.scores))
        fpr, tpr, _ = roc_curve(y, det.scores)
        out["tpr_at_1pct_fpr"] = float(tpr[fpr <= 0.01].max()) if (fpr <= 0.01).any() else 0.0
    if start is not None and end is not None:
        ends = det.window_starts + det.window_s
        hit = det.alarms & (ends > start) & (det.window_starts <= end)
        if hit.any():
            out["time_to_detect_s"] = float(max(ends[np.argmax(hit)] - start, 0.0))
    return out


def _ip_to_host(truth: TrialTruth) -> dict[str, str]:
    return {h.ip: h.host for h in truth.hosts}


def identification_metrics(
    source_ranking: list[str], destination_ranking: list[str], truth: TrialTruth
) -> dict[str, Any]:
    """Top-1/top-3 accuracy (1.0 or 0.0) and the chance rates; rankings are lists of IPs."""
    n_hosts = len(truth.hosts)
    others = max(n_hosts - 1, 1)
    out: dict[str, Any] = {
        "destination_top1": None,
        "destination_top3": None,
        "destination_chance": 1.0 / others if n_hosts else None,
        "destination_top3_chance": min(1.0, 3.0 / others) if n_hosts else None,
        "source_top1": None,
    }
    dst = truth.destination.ip if truth.destination else None
    src = truth.source.ip if truth.source else None
    if dst:
        out["destination_top1"] = float(destination_ranking[:1] == [dst])
        out["destination_top3"] = float(dst in destination_ranking[:3])
    if src:
        out["source_top1"] = float(source_ranking[:1] == [src])
    return out


def path_metrics(edges: list[tuple[str, str]], truth: TrialTruth) -> dict[str, Any]:
    """Edge precision and recall of a relay graph given as (ip, ip) pairs."""
    names = _ip_to_host(truth)
    pred = {(names.get(a, a), names.get(b, b)) for a, b in edges}
    true = {(p.src, p.to) for p in truth.paths}
    hit = len(pred & true)
    return {
        "path_precision": hit / len(pred) if pred else (None if not true else 0.0),
        "path_recall": hit / len(true) if true else None,
    }


def ks_metrics(ks: dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("sizes", "gaps"):
        r = (ks or {}).get(name)
        out[f"ks_{name}_stat"] = r["statistic"] if r else None
        out[f"ks_{name}_p"] = r["pvalue"] if r else None
    return out


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per mode per attacker: each field's mean over trials, plus ``n_trials``, ``trials`` and
    ``per_trial`` (``{field: [value per trial]}``)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["mode"], r["attacker"]), []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (mode, attacker), recs in sorted(groups.items()):
        recs = sorted(recs, key=lambda r: r["trial"])
        entry: dict[str, Any] = {f: _mean([r.get(f) for r in recs]) for f in METRIC_FIELDS}
        entry["n_trials"] = len(recs)
        entry["trials"] = [r["trial"] for r in recs]
        entry["per_trial"] = {f: [r.get(f) for r in recs] for f in METRIC_FIELDS}
        out.setdefault(mode, {})[attacker] = entry
    return out
