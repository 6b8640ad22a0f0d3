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

``aggregate`` averages each field over trials (ignoring None) per mode per attacker, keeps the
per-trial values and gives every mean its 95 % interval and trial count under ``intervals``
(``attacks.stats``: a seeded bootstrap over trials; the 0/1 hit rates of ``PROPORTION_FIELDS`` as
proportions with a Wilson interval).

The costs of a migration (``cost_record``, averaged by ``aggregate_costs``), from its ground truth
and the global capture: ``migration_time_s`` and ``downtime_s`` as the controller reported them,
``vm_bytes``, ``bytes_on_wire`` (the packets of the migration's hops, ``migration_mask``, each
counted once; None in a cover arm, whose hops travel inside the cover records: that arm's cost is
``experiments.arms``' bandwidth overhead), ``migration_span_s`` (``migration_end -
migration_start``: the whole migration, its set-up included) and ``transfer_span_s``
(``transfer_end - transfer_start``: the source's first to last migration packet, see
``attacks.truth.SPANS``).

Callers: ``attacks.pipeline``, the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attacks.capture import ip_to_int
from attacks.detection import Detection, label_windows
from attacks.stats import interval
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
# one 0/1 outcome per trial: reported as proportions with a Wilson interval
PROPORTION_FIELDS = {"destination_top1", "destination_top3", "source_top1"}
COST_FIELDS = [
    "migration_time_s",
    "downtime_s",
    "bytes_on_wire",
    "vm_bytes",
    "migration_span_s",
    "transfer_span_s",
    # a QEMU guest's migration as QEMU itself reported it (query-migrate at the source), beside
    # the testbed's own figures; None for the model VM
    "qemu_total_time_ms",
    "qemu_downtime_ms",
    "qemu_transferred_bytes",
    "qemu_dirty_sync_count",
]
QEMU_FIGURES = ("total_time_ms", "downtime_ms", "transferred_bytes", "dirty_sync_count")


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


def _detector_fields(records: list[dict[str, Any]]) -> list[str]:
    """The per-detector AUCs the records carry (``detection_auc_change``, ...), sorted."""
    return sorted({k for r in records for k in r if k.startswith("detection_auc_")})


def aggregate(
    records: list[dict[str, Any]], seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per mode per attacker: each field's mean over trials, plus ``n_trials``, ``trials``,
    ``per_trial`` (``{field: [value per trial]}``) and ``intervals`` (``{field: {"mean", "lo",
    "hi", "n", "method"}}``, bootstrap seeded with ``seed``)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["mode"], r["attacker"]), []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (mode, attacker), recs in sorted(groups.items()):
        recs = sorted(recs, key=lambda r: r["trial"])
        fields = METRIC_FIELDS + _detector_fields(recs)
        entry: dict[str, Any] = {f: _mean([r.get(f) for r in recs]) for f in fields}
        entry["n_trials"] = len(recs)
        entry["trials"] = [r["trial"] for r in recs]
        entry["per_trial"] = {f: [r.get(f) for r in recs] for f in fields}
        entry["intervals"] = {
            f: interval(entry["per_trial"][f], seed, proportion=f in PROPORTION_FIELDS)
            for f in fields
        }
        out.setdefault(mode, {})[attacker] = entry
    return out


# ----------------------------------------------------------------------------- costs
def migration_mask(packets: np.ndarray, truth: TrialTruth) -> np.ndarray:
    """Packets of the migration's TCP hops (both directions), by addresses and port."""
    ip = {h.host: ip_to_int(h.ip) for h in truth.hosts}
    mask = np.zeros(len(packets), dtype=bool)
    for p in truth.paths:
        a = np.array([ip[p.src]], dtype="u4")
        b = [ip[p.to]] + ([ip_to_int(p.virtual_ip)] if p.virtual_ip else [])
        b = np.array(b, dtype="u4")
        fwd = np.isin(packets["src"], a) & np.isin(packets["dst"], b) & \
            (packets["dport"] == p.port)
        rev = np.isin(packets["src"], b) & np.isin(packets["dst"], a) & \
            (packets["sport"] == p.port)
        mask |= fwd | rev
    return mask


def hop_bytes(packets: np.ndarray, truth: TrialTruth, cover: bool) -> int | None:
    """The bytes of the migration's hops in ``packets`` (``migration_mask``); None in a cover arm
    (``cover``), whose hops ride inside the cover records on the cover port: their bytes are the
    cover's, not packets of their own (that arm's cost is arms.json's bandwidth overhead)."""
    return None if cover else int(packets["length"][migration_mask(packets, truth)].sum())


def _span(start: float | None, end: float | None) -> float | None:
    return end - start if start is not None and end is not None else None


def source_stats(truth: TrialTruth) -> dict[str, Any]:
    """What the trial's source role reported of itself (its stats), ``{}`` if nothing."""
    src = truth.source.host if truth.source else None
    stats = (truth.result.get("role_stats") or {}).get(f"source:{src}")
    return stats if isinstance(stats, dict) else {}


def cost_record(truth: TrialTruth, bytes_on_wire: int | None) -> dict[str, Any]:
    """One trial's costs (``COST_FIELDS``); None where the trial did not say."""
    res = truth.result
    qemu = source_stats(truth).get("qemu") or {}
    return {
        "migration_time_s": res.get("migration_time_s"),
        "downtime_s": res.get("downtime_s"),
        "bytes_on_wire": bytes_on_wire,
        "vm_bytes": res.get("vm_bytes"),
        "migration_span_s": _span(truth.migration_start, truth.migration_end),
        "transfer_span_s": _span(truth.transfer_start, truth.transfer_end),
        **{f"qemu_{k}": qemu.get(k) for k in QEMU_FIGURES},
    }


def aggregate_costs(costs: list[dict[str, Any]], seed: int = 0,
                    fields: Sequence[str] = COST_FIELDS) -> dict[str, Any]:
    """Each cost's (of ``fields``) mean over the trials, ``per_trial`` values and
    ``intervals``."""
    per_trial = {f: [c.get(f) for c in costs] for f in fields}
    out: dict[str, Any] = {f: _mean(per_trial[f]) for f in fields}
    out["per_trial"] = per_trial
    out["intervals"] = {f: interval(per_trial[f], seed) for f in fields}
    return out
