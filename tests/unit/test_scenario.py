"""Scenario files: the shipped ones load, mistakes get errors that name the field."""

import pytest

from experiments.scenario import SCENARIO_DIR, ScenarioError, from_dict, load


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path):
    sc = load(path)
    assert sc.trials >= 1 and sc.modes
    sc.build_topology()  # the topology can be built (no root needed)


def test_quick_is_found_by_name():
    assert load("quick").name == "quick"


def test_chunk_policy_per_mode():
    sc = from_dict({"name": "x", "stealth": {"rate_budget_mbit": 8}})
    assert sc.chunk_policy("direct") == {"kind": "fixed", "size": 65536}
    pol = sc.chunk_policy("stealth")
    assert pol["kind"] == "profile" and pol["rate_budget_bps"] == 1e6  # bytes per second


@pytest.mark.parametrize("data,match", [
    ({"modes": ["teleport"]}, "modes"),
    ({"stealth": {"n": 2, "k": 3}}, "k=3"),
    ({"vm": {"size": 3}}, r"\[vm\]: unknown field"),
    ({"topology": {"kind": "torus"}}, "topology.kind"),
    ({"attackers": {"vantage": ["switch:e9"]}}, "add 'e9' to topology.attackers"),
    ({"attackers": {"vantage": ["wire"]}}, "'global' or 'switch:<name>'"),
    ({"trials": 0}, "trials"),
])
def test_errors_name_the_field(data, match):
    with pytest.raises(ScenarioError, match=match):
        from_dict({"name": "bad", **data})


def test_missing_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ScenarioError, match="quick.toml"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ScenarioError, match="bad.toml"):
        load(bad)


def test_sweep_expands_to_the_cartesian_product():
    from experiments.scenario import expand

    sc = load("paper")
    variants = expand(sc)
    assert len(variants) == 16
    labels = [label for label, _ in variants]
    assert len(set(labels)) == 16
    for _, v in variants:
        assert v.stealth.policy in ("profile", "fixed") and v.stealth.n in (3, 5)
        assert not v.sweep
    with pytest.raises(ScenarioError, match="sweep key"):
        from_dict({"name": "x", "sweep": {"nope": [1]}})
    with pytest.raises(ScenarioError, match="k=2"):  # each variant is validated
        from_dict({"name": "x", "stealth": {"k": 2}, "sweep": {"stealth.n": [1, 3]}})
