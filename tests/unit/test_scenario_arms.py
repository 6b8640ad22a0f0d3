"""The arms of a scenario (direct, profile, fixed, cover, legacy stealth) and its [cover] section:
each arm's protocol mode and chunk policy, the cover rate (absolute or relative to the normal
traffic computed from [background]), the sweep's zero point, the errors that name the key."""

from __future__ import annotations

import random

import pytest

from experiments.runner import defaults_msg
from experiments.scenario import (
    BackgroundSettings,
    ScenarioError,
    expand,
    from_dict,
    load,
    mean_flow_bytes,
    normal_bytes_per_s,
)
from experiments.trial import arms_meta
from hosts.protocol.cover import COVER_PORT, CoverSettings
from hosts.workload import CDFS, flow_sizes

ARMS = ["direct", "profile", "fixed", "cover"]


def test_each_arm_has_its_protocol_mode_and_chunk_policy():
    sc = from_dict({"name": "x", "modes": ARMS + ["stealth"],
                    "stealth": {"policy": "fixed", "fixed_chunk": 4096, "rate_budget_mbit": 8},
                    "cover": {"rate_mbit": 8}})
    assert [sc.protocol_mode(m) for m in sc.modes] == ["direct"] + ["stealth"] * 4
    assert sc.chunk_policy("direct") == {"kind": "fixed", "size": 65536}
    assert sc.chunk_policy("fixed") == {"kind": "fixed", "size": 4096}
    prof = sc.chunk_policy("profile")
    assert prof["kind"] == "profile" and prof["rate_budget_bps"] == 1e6 and "size" not in prof
    assert sc.chunk_policy("cover") == {"kind": "cover"}
    assert sc.chunk_policy("stealth") == sc.chunk_policy("fixed")  # legacy: [stealth].policy
    assert [sc.uses_cover(m) for m in sc.modes] == [False, False, False, True, False]


def test_the_runner_tells_the_controller_each_arms_mode():
    sc = from_dict({"name": "x", "modes": ARMS, "cover": {"rate_x_normal": 1.0}})
    msgs = {m: defaults_msg(sc, m) for m in ARMS}
    assert msgs["direct"]["mode"] == "direct" and not msgs["direct"]["hide_destination"]
    for m in ("profile", "fixed", "cover"):
        assert msgs[m]["mode"] == "stealth" and msgs[m]["hide_destination"] is True
        assert msgs[m]["chunk_policy"] == sc.chunk_policy(m)
        assert (msgs[m]["n"], msgs[m]["k"]) == (sc.stealth.n, sc.stealth.k)


def test_quick_runs_direct_profile_and_cover():
    sc = load("quick")
    assert sc.modes == ["direct", "profile", "cover"] and sc.cover_rate_bytes_per_s() > 0


@pytest.mark.parametrize("cdf", sorted(CDFS))
@pytest.mark.parametrize("cap", [200, 100_000, 1_000_000, 2_000_000, 1 << 40])
def test_mean_flow_size_is_the_workloads_mean(cdf, cap):
    """The exact mean against a Monte Carlo of the workload's own sampler."""
    sizes, rng = flow_sizes(cdf, cap), random.Random(7)
    n = 100_000
    draws = [sizes.sample(rng) for _ in range(n)]
    mc = sum(draws) / n
    sd = (sum((d - mc) ** 2 for d in draws) / n) ** 0.5
    assert mean_flow_bytes(cdf, cap) == pytest.approx(mc, abs=5 * sd / n ** 0.5 + 1)


def test_normal_traffic_by_hand():
    # every flow capped at 1000 bytes; bulk uniform on [2 MB, 8 MB] (min(max / 4, 4 MiB)), 6/min
    bg = BackgroundSettings(flows_per_s=2.0, cap_bytes=1000, bulk_per_min=6.0,
                            bulk_max_bytes=8_000_000)
    assert normal_bytes_per_s(bg) == pytest.approx(2 * 1000 + 0.1 * 5_000_000)
    bg.bulk_max_bytes = 40 << 20  # the lower end is capped at 4 MiB
    assert normal_bytes_per_s(bg) == pytest.approx(2000 + 0.1 * ((4 << 20) + (40 << 20)) / 2)
    assert normal_bytes_per_s(BackgroundSettings(flows_per_s=0, bulk_per_min=0)) == 0


def test_cover_rate_absolute_or_relative():
    sc = from_dict({"name": "x", "modes": ["cover"], "cover": {"rate_mbit": 8}})
    assert sc.cover_rate_bytes_per_s() == 1e6
    sc = from_dict({"name": "x", "modes": ["cover"], "cover": {"rate_x_normal": 1.5},
                    "background": {"flows_per_s": 3.0}})
    assert sc.cover_rate_bytes_per_s() == pytest.approx(1.5 * normal_bytes_per_s(sc.background))
    s = sc.cover_settings(seed=1004)
    assert isinstance(s, CoverSettings) and s.seed == 1004 and s.port == COVER_PORT
    assert (s.rate_bytes_per_s, s.record_min, s.record_max, s.flow_cdf) == (
        sc.cover_rate_bytes_per_s(), 1024, 16384, "websearch")


def test_the_ground_truth_records_each_arm():
    sc = from_dict({"name": "x", "modes": ["direct", "profile", "cover"],
                    "cover": {"rate_mbit": 4, "record_min": 512}})
    arms = arms_meta(sc)["arms"]
    assert arms["direct"] == {"protocol_mode": "direct", "cover": None,
                              "chunk_policy": {"kind": "fixed", "size": 65536}}
    assert arms["profile"]["protocol_mode"] == "stealth" and arms["profile"]["cover"] is None
    assert arms["cover"]["cover"]["rate_bytes_per_s"] == 500_000
    assert arms["cover"]["cover"]["record_min"] == 512 and "seed" not in arms["cover"]["cover"]


BAD = [
    ({"cover": {"rate_mbit": -1}}, "cover.rate_mbit", ">= 0"),
    ({"cover": {"rate_x_normal": "1"}}, "cover.rate_x_normal", "a finite number"),
    ({"cover": {"rate_mbit": 2, "rate_x_normal": 1}}, "cover.rate_mbit", "give one cover rate"),
    ({"cover": {"record_min": 100}}, "cover.record_min", "256 <= record_min <= record_max"),
    ({"cover": {"record_min": 9000, "record_max": 4000}}, "cover.record_max", "9000..4000"),
    ({"cover": {"record_max": 70000}}, "cover.record_max", "<= 65535"),
    ({"cover": {"flow_cdf": "video"}}, "cover.flow_cdf", "'datamining', 'websearch'"),
    ({"cover": {"flow_cap_bytes": 100}}, "cover.flow_cap_bytes", ">= 16384"),
    ({"cover": {"rate": 3}}, "[cover]", "unknown field"),
    ({"modes": ["cover"]}, "cover.rate_mbit", "neither rate is set"),
    ({"modes": ["cover"], "cover": {"rate_x_normal": 2},
      "background": {"flows_per_s": 0, "bulk_per_min": 0}}, "cover.rate_x_normal",
     "the background sends nothing"),
    ({"modes": ["cover"], "cover": {"rate_mbit": 50}, "topology": {"bw_mbit": 40}},
     "topology.bw_mbit", "does not fit"),
    ({"modes": ["teleport"]}, "modes", "'profile', 'fixed', 'cover'"),
    ({"modes": ["profile"], "topology": {"kind": "leafspine", "args": [1, 1, 4]}}, "stealth.n",
     "at most 1"),  # every arm but direct needs its relay hosts
]


@pytest.mark.parametrize("data,key,allowed", BAD, ids=[f"{k}-{i}" for i, (_, k, _) in
                                                       enumerate(BAD)])
def test_bad_cover_settings_name_the_key(data, key, allowed):
    with pytest.raises(ScenarioError) as info:
        from_dict({"name": "bad", **data})
    assert key in str(info.value) and allowed in str(info.value), str(info.value)


def test_a_cover_section_without_the_cover_arm_is_fine():
    sc = from_dict({"name": "x", "modes": ["direct", "profile"]})
    assert sc.cover_rate_bytes_per_s() == 0 and not any(sc.uses_cover(m) for m in sc.modes)


def test_the_frontier_sweeps_zero_point_is_the_profile_arm():
    sc = from_dict({"name": "f", "modes": ["direct", "cover"],
                    "cover": {"rate_x_normal": 1.0},
                    "sweep": {"cover.rate_x_normal": [0.0, 0.5, 2.0]}})
    points = expand(sc)
    assert [(label, v.modes) for label, v in points] == [
        ("rate_x_normal=0.0", ["direct", "profile"]),
        ("rate_x_normal=0.5", ["direct", "cover"]),
        ("rate_x_normal=2.0", ["direct", "cover"])]
    normal = normal_bytes_per_s(sc.background)
    assert [v.cover_rate_bytes_per_s() for _, v in points] == pytest.approx(
        [0, 0.5 * normal, 2 * normal])
    # a profile arm already listed is not doubled; a sweep of other keys keeps its arms
    sc = from_dict({"name": "f", "modes": ["direct", "profile", "cover"],
                    "sweep": {"cover.rate_mbit": [0.0, 4.0]}})
    assert [v.modes for _, v in expand(sc)] == [["direct", "profile"],
                                                ["direct", "profile", "cover"]]
    with pytest.raises(ScenarioError, match="neither rate is set"):
        from_dict({"name": "f", "modes": ["cover"], "sweep": {"stealth.n": [2, 3]}})


@pytest.mark.parametrize("name", ["frontier", "frontier-heavy"])
def test_the_shipped_frontiers(name):
    sc = load(name)
    points = expand(sc)
    rates = [v.cover_rate_bytes_per_s() for _, v in points]
    assert rates[0] == 0 and len([r for r in rates if r > 0]) >= 4
    assert points[0][1].modes == ["direct", "profile"]
    assert all(v.modes == ["direct", "cover"] for _, v in points[1:])
    assert sc.trials >= 10 and sc.topology.kind == "leafspine"
    if name == "frontier-heavy":
        base = load("frontier").background
        assert sc.background.cdf == "datamining" and sc.background.flows_per_s > \
            base.flows_per_s
