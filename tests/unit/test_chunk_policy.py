"""Chunk policies: sizes from the profile, gaps within the rate budget, the registry of kinds."""

from __future__ import annotations

import time

import pytest

from hosts.chunk_policy import (
    POLICIES,
    FixedChunkPolicy,
    Pacer,
    ProfileChunkPolicy,
    policy_from_settings,
)
from hosts.protocol.plan import DEFAULTS
from hosts.traffic import TrafficProfile


def test_policy_draws_profile_sizes_and_respects_budget() -> None:
    prof = TrafficProfile(message_sizes=[2000, 8000, 50000], gaps_s=[0.0, 0.001])
    pol = ProfileChunkPolicy(prof, rate_budget_bps=1e6, seed=1)
    sizes = {pol.next_size() for _ in range(200)}
    assert sizes == {2000, 8000, 50000}
    for s in (2000, 50000):
        assert pol.next_gap(s) >= s / 1e6
    total = sum(pol.next_size() for _ in range(1000))
    gaps = sum(pol.next_gap(s) for s in [50000] * 10)
    assert gaps >= 0.5 - 1e-9 and total > 0


def test_fixed_policy_and_settings() -> None:
    f = FixedChunkPolicy(4096)
    assert f.next_size() == 4096 and f.next_gap(4096) == 0.0
    p = policy_from_settings({"kind": "profile", "rate_budget_bps": 1000.0}, seed=2, share=0.5)
    assert isinstance(p, ProfileChunkPolicy) and p.rate_budget_bps == 500.0
    with pytest.raises(ValueError):
        policy_from_settings({"kind": "magic"})
    with pytest.raises(ValueError):
        FixedChunkPolicy(10)


def test_parallel_senders_share_the_budget() -> None:
    prof = TrafficProfile(message_sizes=[4000], gaps_s=[0.0])
    pol = ProfileChunkPolicy(prof, rate_budget_bps=3e6, seed=1)
    one = pol.for_sender(share=1 / 3, seed=2)
    assert one.rate_budget_bps == pytest.approx(1e6)
    assert one.next_gap(4000) == pytest.approx(0.004)
    assert FixedChunkPolicy(4096, 0.01).for_sender(0.5, 1).gap_s == 0.01


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown chunk policy kind 'magic': known kinds are "
                                         r"cover, fixed, profile"):
        policy_from_settings({"kind": "magic"})
    assert set(POLICIES) == {"cover", "fixed", "profile"}


def test_cover_policy_is_64k_back_to_back_and_never_sniffs() -> None:
    p = policy_from_settings({"kind": "cover"}, seed=4, share=0.25, ip="10.0.0.1")
    assert [p.next_size() for _ in range(3)] == [65536] * 3
    assert p.next_gap(65536) == 0.0 and p.for_sender(0.5, 9).next_gap(1) == 0.0
    assert p.describe() == {"kind": "cover", "size": 65536, "gap_s": 0.0}
    # a sniff or profile setting means nothing to it: nothing is measured, nothing is waited for
    t0 = time.monotonic()
    q = policy_from_settings({"kind": "cover", "sniff_iface": "nonexistent0", "sniff_s": 3.0})
    assert time.monotonic() - t0 < 0.1 and q.next_size() == 65536
    with pytest.raises(ValueError, match="no gaps"):
        policy_from_settings({"kind": "cover", "gap_s": 0.01})


def test_fixed_is_the_default_kind_with_the_protocol_chunk_size() -> None:
    p = policy_from_settings({})
    assert isinstance(p, FixedChunkPolicy) and p.size == DEFAULTS.chunk_size
    assert p.describe() == {"kind": "fixed", "size": DEFAULTS.chunk_size, "gap_s": 0.0}
    assert FixedChunkPolicy().size == DEFAULTS.chunk_size


def test_profile_settings_reach_the_policy() -> None:
    prof = TrafficProfile(message_sizes=[100, 3000, 9_000_000], gaps_s=[0.02])
    p = policy_from_settings({"kind": "profile", "profile": prof.to_dict(), "min_size": 1024,
                              "max_size": 8192, "rate_budget_bps": 4000.0}, seed=1, share=0.25)
    assert isinstance(p, ProfileChunkPolicy) and p.rate_budget_bps == 1000.0
    assert {p.next_size() for _ in range(100)} == {1024, 3000, 8192}
    assert p.next_gap(100) == pytest.approx(0.1)  # the budget, not the profile's 20 ms, rules
    assert p.describe() == {"kind": "profile", "rate_budget_bps": 1000.0, "sizes": 3, "gaps": 1}


def test_pacer_keeps_the_asked_gaps() -> None:
    import time

    pacer = Pacer()
    t0 = time.monotonic()
    for _ in range(5):
        pacer.wait(0.02)
    assert 0.1 - 1e-3 <= time.monotonic() - t0 < 0.5
