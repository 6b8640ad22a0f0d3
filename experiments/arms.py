"""What each arm costs, measured from packets: bandwidth overhead, relay goodput, the floor.

Per trial (``trial_costs``), from the global capture's deduplicated packets and the trial's
ground truth:

- ``bandwidth_overhead``: cover bytes (TCP on the cover port, 8443, both directions, the whole
  capture) over normal bytes (TCP on the tenants' service port, 8080: their flows and bulk
  transfers, the whole capture). 0 for an arm without cover; in the cover arm the relay bytes
  travel inside the cover records, so they are part of the cover bytes, not extra.
- ``cover_measured_bytes_per_s``: the cover bytes per tenant VM per second of capture (half of
  them each VM's own sending when the records flow both ways), beside ``cover_rate_bytes_per_s``,
  the rate each VM was given.
- ``relay_goodput_bytes_per_s``: VM bytes over the migration time; ``goodput_over_cover``: that
  over the cover rate (does the relay keep up with the rate it was given?).
- ``moved_bytes``: VM bytes plus the dirty pages re-sent (the source's ``pages_per_round``,
  4 KiB pages); ``floor_s``: moved bytes over the cover rate, the shortest migration the cover
  capacity allows; ``floor_ratio``: the migration time over it.
- ``decision_to_first_byte_s``: from the controller's decision to the source's first migration
  byte (the source's own stats; None where it does not record it): no visible start (issue 14).

Per arm (``arm_costs``): the means with their intervals (``attacks.stats``), plus
``time_vs_direct`` and ``downtime_vs_direct``, each trial's migration time and downtime over those
of the direct trial of the same seed (trial t of every arm shares one). The run's analysis saves
them as ``arms.json`` (``experiments.analysis.arms_of``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from attacks.scoring import aggregate_costs, source_stats
from attacks.truth import TrialTruth
from experiments.fleet import SERVICE_PORT
from hosts.protocol.cover import COVER_PORT

ARMS_SCHEMA = "stealth-mtd/arms/1"
PAGE = 4096
TCP = 6
TRIAL_FIELDS = ["cover_bytes", "normal_bytes", "bandwidth_overhead", "cover_rate_bytes_per_s",
                "cover_measured_bytes_per_s", "relay_goodput_bytes_per_s", "goodput_over_cover",
                "moved_bytes", "floor_s", "floor_ratio", "decision_to_first_byte_s"]
RATIO_FIELDS = ["time_vs_direct", "downtime_vs_direct"]
FIELDS = TRIAL_FIELDS + RATIO_FIELDS


def port_bytes(packets: np.ndarray, port: int) -> int:
    """Bytes on the wire of the TCP packets to or from ``port``."""
    tcp = packets["proto"] == TCP
    mask = tcp & ((packets["sport"] == port) | (packets["dport"] == port))
    return int(packets["length"][mask].sum())


def moved_bytes(truth: TrialTruth) -> int | None:
    """The bytes of VM memory the source sent: every page of every round (the first is the whole
    image, the others the dirty pages); None when the trial did not record its rounds."""
    rounds = source_stats(truth).get("pages_per_round")
    if not rounds:
        return None
    return int(sum(rounds)) * PAGE


def trial_costs(packets: np.ndarray | None, truth: TrialTruth,
                cover_rate: float | None) -> dict[str, Any]:
    """One trial's ``TRIAL_FIELDS`` (None where it cannot say). ``packets``: its global capture,
    deduplicated (None: no global capture); ``cover_rate``: bytes/s per VM, None without cover."""
    out: dict[str, Any] = dict.fromkeys(TRIAL_FIELDS)
    out["cover_rate_bytes_per_s"] = cover_rate
    if packets is not None and len(packets):
        cover, normal = port_bytes(packets, COVER_PORT), port_bytes(packets, SERVICE_PORT)
        out["cover_bytes"], out["normal_bytes"] = cover, normal
        out["bandwidth_overhead"] = cover / normal if normal else None
        duration = float(packets["ts"].max() - packets["ts"].min())
        if duration > 0 and truth.hosts:
            out["cover_measured_bytes_per_s"] = cover / duration / len(truth.hosts)
    res = truth.result
    vm, took = res.get("vm_bytes"), res.get("migration_time_s")
    if truth.status == "done" and vm and took:
        out["relay_goodput_bytes_per_s"] = vm / took
        if cover_rate:
            out["goodput_over_cover"] = vm / took / cover_rate
    out["decision_to_first_byte_s"] = source_stats(truth).get("decision_to_first_byte_s")
    moved = moved_bytes(truth)
    out["moved_bytes"] = moved
    if moved and cover_rate:
        out["floor_s"] = moved / cover_rate
        if truth.status == "done" and took:
            out["floor_ratio"] = took / out["floor_s"]
    return out


def _ratio(a: Any, b: Any) -> float | None:
    return float(a) / float(b) if a is not None and b else None


def arm_costs(trials: list[TrialTruth], packets: Mapping[int, np.ndarray],
              cover_rates: Mapping[str, float | None], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per arm (the trials' ``mode``): each of ``FIELDS`` as its mean, ``per_trial`` values (in
    the order of ``trials``, the trial ids) and ``intervals``, over the arm's finished trials.
    ``packets``: trial id → its global capture; ``cover_rates``: arm → its cover rate (bytes/s
    per VM, None without cover)."""
    done = [t for t in trials if t.status == "done"]
    direct = {t.trial_in_mode: t.result for t in done if t.mode == "direct"}
    out: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(t.mode for t in trials):
        ids, recs = [], []
        for t in (t for t in done if t.mode == mode):
            ids.append(t.trial)
            rec = trial_costs(packets.get(t.trial), t, cover_rates.get(mode))
            d = direct.get(t.trial_in_mode) or {}
            rec["time_vs_direct"] = _ratio(t.result.get("migration_time_s"),
                                           d.get("migration_time_s"))
            rec["downtime_vs_direct"] = _ratio(t.result.get("downtime_s"), d.get("downtime_s"))
            recs.append(rec)
        out[mode] = {"trials": ids, **aggregate_costs(recs, seed, FIELDS)}
    return out
