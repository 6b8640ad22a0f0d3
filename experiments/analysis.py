"""Analyse a run: the attackers on every trial's pcaps, and the defender's costs per mode.

``analyze`` reads the run's ``ground_truth.json`` (``attacks.truth.load_truth``), hands each
trial's pcaps to the attackers (``attacks.pipeline.analyze_run``: they see packets; the ground
truth only enters their scoring) and adds the costs per mode: migration time, downtime, bytes on
the wire (migration packets in the global capture, each counted once) and VM bytes. The result,
an ``Analysis``, holds the metrics (saved as metrics.json) and what the plots need.

Callers: the runner and the demo, then ``experiments.report.write``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks.capture import Capture, dedupe_packets, ip_to_int, read_pcap
from attacks.detection import label_windows
from attacks.truth import GLOBAL, RunTruth, TrialTruth, Vantage, load_truth
from experiments.scenario import Scenario

COST_FIELDS = ["migration_time_s", "downtime_s", "bytes_on_wire", "vm_bytes"]


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


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


def load_captures(out: Path, trials: list[TrialTruth]) -> dict[int, dict[Vantage, Capture]]:
    """Every trial's pcaps (the ones its ground truth names), keyed by vantage point."""
    return {t.trial: {v: read_pcap(out / rel, vantage=str(v))
                      for v, rel in t.vantage_pcaps().items()}
            for t in trials}


@dataclass
class Analysis:
    """What ``analyze`` found: the metrics (saved as metrics.json), plus what the plots need."""

    metrics: dict[str, Any]
    truth: RunTruth = field(default_factory=RunTruth)
    roc: dict[str, dict[str, tuple[list[float], list[bool]]]] = field(default_factory=dict)
    global_packets: dict[int, np.ndarray] = field(default_factory=dict)  # trial → deduplicated
    bytes_on_wire: dict[int, int | None] = field(default_factory=dict)  # trial → bytes


def analyze(out: Path, sc: Scenario, truth: RunTruth | None = None) -> Analysis:
    """Analyse the run folder ``out`` (its ground truth: ``truth``, else its ground_truth.json)."""
    from attacks.pipeline import analyze_run

    run = truth if truth is not None else load_truth(out / "ground_truth.json")
    truths = run.trials
    metrics: dict[str, Any] = {"schema": "stealth-mtd/run-metrics/1", "scenario": sc.name,
                               "window_s": sc.attackers.window_s, "modes": {}, "records": []}
    # the candidate hosts an attacker ranks: the tenants' addresses, which an ARP or ping sweep
    # finds from the wire (tests/mininet/test_active_attacks.py); attackers' own hosts excluded
    tenant_ips = {ip_to_int(h.ip) for t in truths for h in t.hosts}
    done = [t for t in truths if t.status == "done"]
    by_id = {t.trial: t for t in done}
    caps = load_captures(out, done)
    an = Analysis(metrics, run)
    for t in done:
        if GLOBAL in caps[t.trial]:
            pk = dedupe_packets(caps[t.trial][GLOBAL].packets)
            an.global_packets[t.trial] = pk
            an.bytes_on_wire[t.trial] = int(pk["length"][migration_mask(pk, t)].sum())
    results, records, m = [], [], {"modes": {}}
    if done:
        # one analysis over every trial of every mode: the classifier of each trial is trained
        # on all the other trials (an attacker who rehearsed on both kinds of migration)
        results, records, m = analyze_run(caps, by_id, sc.attackers.window_s,
                                          candidates=tenant_ips, seed=sc.seed)
    metrics["records"] = records
    for r in results:
        t = by_id[r.trial]
        y = label_windows(r.detection.window_starts, r.detection.window_s,
                          t.migration_start, t.migration_end)
        s, yy = an.roc.setdefault(t.mode, {}).setdefault(r.attacker, ([], []))
        s += [float(x) for x in r.detection.scores]
        yy += [bool(x) for x in y]
    for mode in sc.modes:
        mine = [t for t in done if t.mode == mode]
        entry: dict[str, Any] = {
            "n_trials": len(mine),
            "failed": len([t for t in truths if t.mode == mode]) - len(mine),
            "attackers": m["modes"].get(mode, {}),
            "per_trial": {f: [] for f in COST_FIELDS}}
        for t in mine:
            res = t.result
            entry["per_trial"]["migration_time_s"].append(res.get("migration_time_s"))
            entry["per_trial"]["downtime_s"].append(res.get("downtime_s"))
            entry["per_trial"]["vm_bytes"].append(res.get("vm_bytes"))
            entry["per_trial"]["bytes_on_wire"].append(an.bytes_on_wire.get(t.trial))
        for f in COST_FIELDS:
            entry[f] = _mean(entry["per_trial"][f])
        metrics["modes"][mode] = entry
    return an
