"""The cover-aware attacker (``attacks.coveraware``): its copied constants match the project, it
rebuilds cover records from packets, it catches naive ways of carrying a migration in cover
traffic (bytes on top, relays forwarding at once, a backlogged sender), and on a capture whose
cover schedule is that of the run without a migration it is at chance. The design-aware attacker
on the same captures finds no hop and says so.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from attacks import coveraware as ca
from attacks import designaware as da
from attacks import pipeline
from attacks.capture import Capture, ip_to_int
from attacks.truth import GLOBAL
from tests.unit import attacks_cover_synth as cs
from tests.unit.attacks_synth import make_trial

ATTACKERS = ("cover-aware", "design-aware")


# --- the copied constants against the project's ---------------------------------------------
def test_cover_design_constants_match_the_project():
    from controllers import addresses
    from hosts.protocol.cover import COVER_PORT, CoverSettings
    from hosts.workload import CDFS, MSS

    s = CoverSettings(rate_bytes_per_s=1.0)
    assert ca.COVER_PORT == COVER_PORT == s.port == da.COVER_PORT == cs.COVER_PORT
    assert (ca.RECORD_MIN, ca.RECORD_MAX) == (s.record_min, s.record_max)
    assert ca.FLOW_CAP_BYTES == s.flow_cap_bytes and s.flow_cdf == "websearch"
    assert list(ca.WEBSEARCH_CDF) == [tuple(x) for x in CDFS["websearch"]] == cs.WEBSEARCH
    assert ca.FLOW_MSS == MSS
    assert ca.is_virtual(ip_to_int(addresses.address(1).ip))
    assert not ca.is_virtual(ip_to_int("10.0.0.1"))


# --- records from packets -------------------------------------------------------------------
def test_records_are_rebuilt_from_segments():
    """Scheduled records come back whole, with their sender, receiver and size (two that a
    connection sends within ``GAP_S`` of each other come back as one); a retransmitted segment
    is counted aside, not as a record."""
    ips = np.array([ip_to_int(cs.host_ip(i)) for i in range(1, 5)], dtype=np.uint32)
    rec = cs.schedule(7, 4, 100.0, 20.0, 50e3, 1024, 16384)
    pk = cs.packets(rec, ips, 7, 1024, 16384)
    got, retrans = ca.cover_records(pk)
    assert len(retrans) == 0
    # scheduled records plus three handshake records per connection
    opens = int(((pk["flags"] & 0x12) == 0x02).sum())
    expected = len(rec["t"]) + 3 * opens
    assert 0.98 * expected <= len(got) <= expected
    assert got["bytes"].sum() == pk["plen"].sum()
    sched = set(zip(ips[rec["src"]].tolist(), ips[rec["dst"]].tolist(), rec["size"].tolist(),
                    strict=True))
    seen = set(zip(got["src"].tolist(), got["dst"].tolist(), got["bytes"].astype(int).tolist(),
                   strict=True))
    assert len(sched & seen) >= 0.97 * len(sched)
    # a retransmission: one data segment sent again 50 ms later
    k = int(np.nonzero(pk["plen"] > 0)[0][10])
    again = pk[k : k + 1].copy()
    again["ts"] += 0.05
    both = np.concatenate([pk, again])
    got2, retrans2 = ca.cover_records(both[np.argsort(both["ts"], kind="stable")])
    assert len(retrans2) == 1 and len(got2) == len(got)


# --- naive migrations are caught, the ideal one is not ----------------------------------------
@lru_cache(maxsize=8)
def _run(kind: str, n: int = 6, base: int = 400, moved: bool = False, start_s=None,
         flows_per_s: float = 4.0, attackers: tuple[str, ...] = ATTACKERS):
    trials = [cs.cover_trial(i, "stealth", base + i, kind, moved=moved, start_s=start_s,
                             flows_per_s=flows_per_s) for i in range(n)]
    captures = {st.truth.trial: {GLOBAL: Capture(st.table, ["global"])} for st in trials}
    truths = {st.truth.trial: st.truth for st in trials}
    results, records, _ = pipeline.analyze_run(
        captures, truths, attackers={a: pipeline.ATTACKERS[a] for a in attackers})
    return trials, results, records


def _mean(records, attacker, key):
    vals = [r[key] for r in records if r["attacker"] == f"global/{attacker}"]
    return float(np.mean(vals))


@pytest.mark.parametrize(
    "kind, family, auc",
    [
        ("additive", "volume", 0.9),  # relay records on top of the schedule
        ("immediate", "forward", 0.85),  # relays forward at once
        ("backlog", "burst", 0.75),  # the source sends its slots back to back
    ],
)
def test_a_naive_migration_is_detected(kind, family, auc):
    _, results, records = _run(kind)
    assert _mean(records, "cover-aware", "detection_auc") >= auc, kind
    assert _mean(records, "cover-aware", f"detection_auc_{family}") >= auc, kind
    # the unsupervised statistic alone (no rehearsal) does better than chance too
    assert _mean(records, "cover-aware", "detection_auc_cover") >= 0.65, kind
    mine = [r for r in results if r.attacker == "global/cover-aware"]
    assert all(r.detection.detector == "classifier" for r in mine)


@pytest.mark.parametrize("kind", ["additive", "immediate"])
def test_a_naive_migration_is_traced(kind):
    """Bytes on top, or forwards at once, lead to the destination and along the path."""
    _, _, records = _run(kind)
    assert _mean(records, "cover-aware", "destination_top1") >= 0.8, kind
    assert _mean(records, "cover-aware", "path_recall") >= 0.8, kind
    assert _mean(records, "cover-aware", "path_precision") >= 0.5, kind


def test_the_same_schedule_with_and_without_a_migration_is_at_chance():
    """The ideal arm: relay bytes replace padding, so the packets are those of the twin without
    a migration (checked); whatever the attacker computes from them is at chance."""
    n = 10
    trials, results, records = _run("ideal", n, 500)
    for st in trials[:3]:
        twin = cs.cover_trial(st.truth.trial, "background", st.truth.seed, "ideal")
        assert np.array_equal(st.table, twin.table)
        assert st.truth.migration_start is not None and twin.truth.migration_start is None
    auc = _mean(records, "cover-aware", "detection_auc")
    assert 0.35 <= auc <= 0.65, auc
    for fam in ("volume", "forward", "burst", "cover"):
        assert 0.3 <= _mean(records, "cover-aware", f"detection_auc_{fam}") <= 0.7, fam
    chance = _mean(records, "cover-aware", "destination_chance")
    hits = sum(r["destination_top1"] for r in records if r["attacker"] == "global/cover-aware")
    assert hits <= chance * n + 2, (hits, chance)
    assert _mean(records, "cover-aware", "path_recall") <= 0.25
    # the design-aware attacker: no relay port, no hop handshake: it found no hop and says so
    for res in results:
        if res.attacker == "global/design-aware":
            assert any("no hop found" in n for n in res.detection.notes)
            assert not res.detection.scores.any() and not res.graph.edges


def test_a_migration_a_fixed_time_into_every_capture_is_not_learnt():
    """The runner starts every migration the same time into its capture: a classifier fed
    window features that grow with that time (flow ages) learns the time, not the migration.
    The cover-aware classifier is not fed them: on the ideal arm it stays at chance."""
    _, _, records = _run("ideal", 10, 800, start_s=12.0, attackers=("cover-aware",))
    assert 0.3 <= _mean(records, "cover-aware", "detection_auc") <= 0.65


def test_a_vm_that_takes_its_traffic_to_its_new_host_is_followed():
    """Ideal cover, but after the move the VM answers at its new host's address (its tenant
    connections go there): the destination is named though the cover says nothing."""
    _, _, records = _run("ideal", 8, 700, moved=True, flows_per_s=20.0,
                         attackers=("cover-aware",))
    assert _mean(records, "cover-aware", "destination_top1") >= 0.6
    assert _mean(records, "cover-aware", "source_top1") >= 0.6


def test_without_cover_traffic_every_cover_statistic_is_zero():
    st = make_trial(0, "background", 5300)
    captures = {0: {GLOBAL: Capture(st.table, ["global"])}}
    results, _, metrics = pipeline.analyze_run(captures, {0: st.truth})
    assert "global/cover-aware" in metrics["modes"]["background"]
    res = next(r for r in results if r.attacker == "global/cover-aware")
    assert not res.detections["cover"].scores.any()
    assert any("no cover traffic" in n for n in res.detections["cover"].notes)
    assert pipeline.ATTACKERS["cover-aware"] is ca.attack


def test_bad_migration_kind_is_refused():
    with pytest.raises(ValueError, match="migration kind"):
        cs.cover_trial(0, "stealth", 1, "sideways")


def test_a_trial_is_never_scored_with_its_own_seeds_labels():
    """Flip the labels of one seed's trials: only that seed's results may change, never its own
    (the classifier and the alarm threshold rehearse on the other seeds)."""
    from attacks.pipeline import window_labels
    from attacks.view import AttackContext, build_view

    trials = [cs.cover_trial(i, "stealth", 600 + i % 4, "additive") for i in range(5)]
    views = [build_view(GLOBAL, st.truth.trial, [Capture(st.table, ["global"])])
             for st in trials]
    labels = [window_labels(v, st.truth) for v, st in zip(views, trials, strict=True)]
    groups = [f"seed:{st.truth.seed}" for st in trials]  # trials 0 and 4 are twins
    before = ca.attack(views, AttackContext("c", labels, 0, None, groups))
    flipped = [~y if g == groups[0] else y for y, g in zip(labels, groups, strict=True)]
    after = ca.attack(views, AttackContext("c", flipped, 0, None, groups))
    for i in (0, 4):
        assert np.array_equal(before[i].detection.scores, after[i].detection.scores)
        assert before[i].detection.threshold == after[i].detection.threshold
        assert before[i].ranking.destination == after[i].ranking.destination
        for name, det in before[i].detections.items():  # every detector, not only the primary
            assert det.threshold == after[i].detections[name].threshold, name
            assert np.array_equal(det.scores, after[i].detections[name].scores), name
    assert any(not np.array_equal(b.detection.scores, a.detection.scores)
               for b, a in zip(before[1:4], after[1:4], strict=True))


@pytest.mark.parametrize("port, hop", [(ca.COVER_PORT, False), (8080, True)])
def test_a_noise_sized_handshake_on_the_cover_port_is_no_hop(port, hop):
    """Every cover connection opens with a handshake padded to record sizes, which now and then
    falls in Noise IK's sizes: on the cover port the design-aware attacker does not take it for
    a relay hop (and finds none); on the tenants' port it still does."""
    from tests.unit.attacks_synth import Traffic, handshake

    tr = Traffic(np.random.default_rng(3))
    conn = tr.connect(100.0, "10.0.0.1", "10.0.0.2", port)
    t = handshake(tr, conn, 100.001, "noise")
    tr.send(conn, t, 9000, 50e6, psh_only=True)
    tr.close(conn, t + 0.01)
    hops, _ = da.hop_connections(tr.table())
    assert da.describe(hops)["hops"] == int(hop)
