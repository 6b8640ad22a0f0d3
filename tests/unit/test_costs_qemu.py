"""A QEMU guest's own migration figures (query-migrate at the source) reach the costs in
metrics.json beside the testbed's; a model VM's trial has None there."""

from __future__ import annotations

import copy

from attacks.scoring import COST_FIELDS, aggregate_costs, cost_record
from attacks.truth import TrialTruth

from .test_attacks_truth import RUNNER_TRIAL


def test_qemu_figures_come_from_the_source_role_stats() -> None:
    d = copy.deepcopy(RUNNER_TRIAL)
    d["result"] = {**d.get("result", {}), "migration_time_s": 7.2, "role_stats": {
        "source:h1": {"qemu": {"total_time_ms": 7100, "downtime_ms": 178,
                               "transferred_bytes": 69_700_000, "dirty_sync_count": 3}},
        "leader:h5": {"chunks": 9}}}
    qemu = cost_record(TrialTruth.from_dict(d), None)
    model = cost_record(TrialTruth.from_dict(RUNNER_TRIAL), None)
    assert set(qemu) == set(model) == set(COST_FIELDS)
    assert (qemu["qemu_total_time_ms"], qemu["qemu_downtime_ms"], qemu["qemu_transferred_bytes"],
            qemu["qemu_dirty_sync_count"]) == (7100, 178, 69_700_000, 3)
    assert all(model[f] is None for f in COST_FIELDS if f.startswith("qemu_"))
    agg = aggregate_costs([qemu, model])
    assert agg["qemu_downtime_ms"] == 178 and agg["intervals"]["qemu_downtime_ms"]["n"] == 1
