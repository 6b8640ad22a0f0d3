"""The cover schedule and contract: deterministic, at the configured rate, sizes and peers uniform,
connection budgets from the tenant flow-size CDF, and bad input refused by name."""

from __future__ import annotations

import itertools
import statistics

import pytest

from hosts.cover import CoverSchedule
from hosts.protocol.cover import CoverConfig, CoverError, CoverPeer, CoverSettings
from hosts.workload import CDFS, MSS

PEERS = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


def take(it, n):
    return list(itertools.islice(it, n))


def test_same_seed_same_schedule_other_seed_another() -> None:
    st = CoverSettings(rate_bytes_per_s=1e6, seed=7)
    a = take(CoverSchedule(st, "h1", PEERS, 3).slots(), 2000)
    b = take(CoverSchedule(st, "h1", list(reversed(PEERS)), 3).slots(), 2000)
    assert a == b  # peer order given does not matter either
    assert a != take(CoverSchedule(st, "h1", PEERS, 4).slots(), 2000)
    assert a != take(CoverSchedule(st, "h2", PEERS, 3).slots(), 2000)
    other_run = CoverSettings(rate_bytes_per_s=1e6, seed=8)
    assert a != take(CoverSchedule(other_run, "h1", PEERS, 3).slots(), 2000)


def test_rate_sizes_and_peers() -> None:
    st = CoverSettings(rate_bytes_per_s=2e6, record_min=1000, record_max=9000)
    slots = take(CoverSchedule(st, "h1", PEERS, 1).slots(), 20000)
    times = [t for t, _, _ in slots]
    assert times == sorted(times) and times[0] > 0
    sizes = [s for _, _, s in slots]
    assert min(sizes) >= 1000 and max(sizes) <= 9000
    assert abs(statistics.mean(sizes) - 5000) < 100
    rate = sum(sizes) / times[-1]
    assert abs(rate - 2e6) / 2e6 < 0.03
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    mean_gap = statistics.mean(gaps)
    assert abs(statistics.pstdev(gaps) / mean_gap - 1) < 0.05  # exponential: sd == mean
    for p in PEERS:
        share = sum(1 for _, q, _ in slots if q == p) / len(slots)
        assert abs(share - 1 / 3) < 0.02


def test_connection_budgets_follow_the_flow_cdf_and_do_not_depend_on_slots() -> None:
    st = CoverSettings(rate_bytes_per_s=1e6, flow_cdf="websearch", flow_cap_bytes=200_000)
    sch = CoverSchedule(st, "h1", PEERS, 5)
    first = take(sch.connections(PEERS[0]), 500)
    take(sch.slots(), 5000)  # a busy schedule draws nothing a connection uses
    again = take(CoverSchedule(st, "h1", PEERS, 5).connections(PEERS[0]), 500)
    assert first == again
    assert first != take(sch.connections(PEERS[1]), 500)
    budgets = [b for b, *_ in first]
    assert min(budgets) >= 64 and max(budgets) <= 200_000
    assert 200_000 in budgets  # the cap binds: websearch has flows to 20000 packets
    small = CDFS["websearch"][2][0] * MSS  # 20 % of web-search flows are at most 13 packets
    assert 0.1 < sum(b <= small for b in budgets) / len(budgets) < 0.3
    for _, m1, conf, m2 in first:
        assert all(st.record_min <= x <= st.record_max for x in (m1, conf, m2))


def test_bad_input_is_refused_by_name() -> None:
    st = CoverSettings(rate_bytes_per_s=1e6)
    with pytest.raises(CoverError, match="no cover peers"):
        CoverSchedule(st, "h1", [], 0)
    with pytest.raises(CoverError, match="duplicate"):
        CoverSchedule(st, "h1", ["10.0.0.2", "10.0.0.2"], 0)
    with pytest.raises(CoverError, match="not a cover peer"):
        next(CoverSchedule(st, "h1", PEERS, 0).connections("10.0.0.9"))
    with pytest.raises(ValueError, match="unknown flow-size"):
        CoverSchedule(CoverSettings(rate_bytes_per_s=1e6, flow_cdf="nope"), "h1", PEERS, 0)
    with pytest.raises(CoverError, match="rate"):
        CoverSettings(rate_bytes_per_s=0)
    with pytest.raises(CoverError, match="record sizes"):
        CoverSettings(rate_bytes_per_s=1, record_min=100)
    with pytest.raises(CoverError, match="stream_timeout_s"):
        CoverSettings(rate_bytes_per_s=1, stream_timeout_s=0)
    with pytest.raises(CoverError, match="unknown cover setting"):
        CoverSettings.from_dict({"rate_bytes_per_s": 1, "rat": 2})


def test_config_round_trips_with_its_seed() -> None:
    cfg = CoverConfig(CoverSettings(rate_bytes_per_s=5e5, spray=False), "h1", "10.0.0.1",
                      (CoverPeer("h2", "10.0.0.2", "ab" * 32),), seed=42)
    assert CoverConfig.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    del d["seed"]
    assert CoverConfig.from_dict(d).seed == 0
    with pytest.raises(CoverError, match="missing or bad field"):
        CoverConfig.from_dict({"settings": cfg.settings.to_dict(), "host": "h1"})
