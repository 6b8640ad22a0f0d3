"""Scenario files: the shipped ones load, mistakes get errors that name the field."""

import os

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


# Each wrong type or value: (the scenario's keys, the key the message must name, a piece of what
# it says is allowed). The first group is the list in issue 15.
BAD = [
    ({"trials": "3"}, "trials", "an integer"),
    ({"stealth": {"k": "2"}}, "stealth.k", "an integer"),
    ({"vm": {"mib": "16"}}, "vm.mib", "an integer"),
    ({"trigger": 1}, "trigger", "a string"),
    ({"sweep": 3}, "sweep", "a table"),
    ({"timeout_s": "soon"}, "timeout_s", "a finite number"),
    ({"stealth": {"n": 300}}, "stealth.n", "2 <= k <= n <= 255"),
    ({"topology": {"args": 4}}, "topology.args", "a list of"),
    ({"name": "../../x"}, "name", "no '..'"),
    # types
    ({"trials": True}, "trials", "an integer"),
    ({"trials": 2.5}, "trials", "an integer"),
    ({"seed": "1"}, "seed", "an integer"),
    ({"modes": "direct"}, "modes", "a list of strings"),
    ({"timeout_s": float("inf")}, "timeout_s", "a finite number"),
    ({"timeout_s": float("nan")}, "timeout_s", "a finite number"),
    ({"stealth": {"hide_destination": "yes"}}, "stealth.hide_destination", "true or false"),
    ({"stealth": {"rate_budget_mbit": "40"}}, "stealth.rate_budget_mbit", "a finite number"),
    ({"vm": {"name": 7}}, "vm.name", "a string"),
    ({"topology": {"args": [[4]]}}, "topology.args", "integers or numbers or strings"),
    ({"topology": {"attackers": "l1"}}, "topology.attackers", "a list of strings"),
    ({"topology": {"bw_mbit": "10"}}, "topology.bw_mbit", "a finite number"),
    ({"background": {"cap_bytes": 1.5}}, "background.cap_bytes", "an integer"),
    ({"attackers": {"vantage": "global"}}, "attackers.vantage", "a list of strings"),
    ({"monitor": [1]}, "monitor", "a table"),
    ({"vm": 3}, "vm", "a table"),
    ({"sweep": {"stealth.n": 3}}, "sweep.'stealth.n'", "a non-empty list"),
    ({"sweep": {"stealth.n": []}}, "sweep.'stealth.n'", "a non-empty list"),
    ({"sweep": {"stealth.n": ["3"]}}, "sweep.'stealth.n'", "an integer"),
    ({"sweep": {"timeout_s.real": [1]}}, "sweep key 'timeout_s.real'", "<section>.<field>"),
    ({"sweep": {"stealth": [1]}}, "sweep key 'stealth'", "<section>.<field>"),
    # values, ranges and names
    ({"name": "a/b"}, "name", "letters, digits"),
    ({"name": ".."}, "name", "letters, digits"),
    ({"name": ""}, "name", "letters, digits"),
    ({"name": "x" * 65}, "name", "at most 64"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"trials": -2}, "trials", ">= 1"),
    ({"modes": []}, "modes", "non-empty list"),
    ({"modes": ["direct", "direct"]}, "modes", "at most once"),
    ({"timeout_s": 0}, "timeout_s", "> 0"),
    ({"trigger": "monitor:dance"}, "trigger", "scan, exfil, miner, beacon"),
    ({"trigger": "monitor"}, "trigger", "'controller' or 'monitor:<kind>'"),
    ({"stealth": {"k": 1}}, "stealth.k", "2 <= k <= n <= 255"),
    ({"stealth": {"n": 20}}, "stealth.n", "at most 13"),  # a k=4 fat-tree has 16 hosts
    ({"stealth": {"policy": "random"}}, "stealth.policy", "'fixed', 'profile'"),
    ({"stealth": {"fixed_chunk": 10}}, "stealth.fixed_chunk", ">= 512"),
    ({"stealth": {"fixed_chunk": 1 << 30}}, "stealth.fixed_chunk", "<= 4194304"),
    ({"stealth": {"rate_budget_mbit": -1}}, "stealth.rate_budget_mbit", ">= 0"),
    ({"stealth": {"sniff_s": 0}}, "stealth.sniff_s", "> 0"),
    ({"vm": {"name": "../../../../tmp/x"}}, "vm.name", "letters, digits"),
    ({"vm": {"mib": 0}}, "vm.mib", ">= 1"),
    ({"vm": {"mib": 10 ** 6}}, "vm.mib", "<= 16384"),
    ({"vm": {"host": "h99"}}, "vm.host", "h1..h16"),
    ({"vm": {"host": "x1"}}, "vm.host", "tenant host"),
    ({"vm": {"dirty_pages_per_s": -5}}, "vm.dirty_pages_per_s", ">= 0"),
    ({"vm": {"kind": "xen"}}, "vm.kind", "'model', 'qemu'"),
    ({"vm": {"kind": "qemu", "mib": 16}}, "vm.mib", ">= 96"),
    ({"vm": {"kind": "qemu", "mib": 4096}}, "vm.mib", "<= 1024"),
    ({"background": {"cdf": "nope"}}, "background.cdf", "'datamining', 'websearch'"),
    ({"background": {"flows_per_s": -1}}, "background.flows_per_s", ">= 0"),
    ({"background": {"cap_bytes": 0}}, "background.cap_bytes", ">= 1"),
    ({"attackers": {"window_s": 0}}, "attackers.window_s", "> 0"),
    ({"topology": {"args": [3]}}, "topology.args", "fattree takes [k]"),
    ({"topology": {"args": ["four"]}}, "topology.args", "fattree takes [k]"),
    ({"topology": {"args": [4, 2, 4, 9]}}, "topology.args", "fattree takes [k]"),
    ({"topology": {"attackers": ["z9"]}}, "topology.attackers", "switch names"),
    ({"topology": {"bw_mbit": 0}}, "topology.bw_mbit", "> 0"),
    ({"topology": {"kind": "leafspine", "args": [1, 1, 2]}}, "stealth.n", "at most 0"),
    ({"sweep": {"vm.name": ["ok", "../x"]}}, "vm.name", "letters, digits"),
    ({"sweep": {"stealth.k": [2, 4]}}, "stealth.k", "2 <= k <= n <= 255"),
    ({"source_file": "/etc/passwd"}, "top level", "unknown field"),
]


@pytest.mark.parametrize("data,key,allowed", BAD, ids=[f"{k}-{i}" for i, (_, k, _) in
                                                       enumerate(BAD)])
def test_every_bad_value_is_a_scenario_error_naming_the_key(data, key, allowed):
    with pytest.raises(ScenarioError) as info:
        from_dict({"name": "bad", **data})
    assert type(info.value) is ScenarioError
    assert key in str(info.value) and allowed in str(info.value), str(info.value)


def test_good_edge_values_load():
    sc = from_dict({"name": "a-b_c.1", "seed": 0, "trials": 1, "modes": ["stealth"],
                    "timeout_s": 1, "stealth": {"n": 13, "k": 13, "fixed_chunk": 512},
                    "vm": {"host": "h16", "mib": 1}, "topology": {"bw_mbit": 10}})
    assert sc.stealth.n == 13 and sc.vm.host == "h16"
    for kind in ("scan", "exfil", "miner", "beacon"):
        assert from_dict({"name": "m", "trigger": f"monitor:{kind}"}).trigger.endswith(kind)


@pytest.mark.parametrize("content,match", [
    (b'name = "caf\xe9"\n', "not UTF-8"),
    (b"trials = \n", "bad.toml"),
    (b'trials = "3"\n', "trials"),
    (b'name = "../../x"\n', "name"),
    (b'[topology]\nargs = 4\n', "topology.args"),
])
def test_bad_files_are_scenario_errors(tmp_path, content, match):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content)
    with pytest.raises(ScenarioError, match=match) as info:
        load(bad)
    assert type(info.value) is ScenarioError


def test_a_directory_is_a_scenario_error(tmp_path):
    (tmp_path / "x.toml").mkdir()
    with pytest.raises(ScenarioError, match="not a file"):
        load(tmp_path / "x.toml")


def test_the_name_defaults_to_a_safe_file_stem(tmp_path):
    (tmp_path / "ok-1.toml").write_text("trials = 1\n")
    assert load(tmp_path / "ok-1.toml").name == "ok-1"
    (tmp_path / "a b.toml").write_text("trials = 1\n")
    with pytest.raises(ScenarioError, match="name = 'a b'"):
        load(tmp_path / "a b.toml")


def test_monitor_trigger_kinds_are_the_anomaly_kinds():
    from hosts.anomalies import KINDS

    assert KINDS  # the scenario accepts exactly these
    for kind in KINDS:
        from_dict({"name": "m", "trigger": f"monitor:{kind}"})


def _runner_must_not_run(monkeypatch):
    import experiments.runner as runner

    def refuse(*args, **kwargs):
        pytest.fail("a bad scenario or argument started a run")

    monkeypatch.setattr(runner, "run", refuse)
    return runner


@pytest.mark.parametrize("argv,match", [
    (["quick", "--trials", "0"], "--trials 0: must be >= 1"),
    (["quick", "--trials", "-3"], "--trials -3: must be >= 1"),
    (["quick", "--seed", "-1"], "--seed -1: must be >= 0"),
])
def test_runner_refuses_bad_overrides(argv, match, monkeypatch, capsys):
    runner = _runner_must_not_run(monkeypatch)
    with pytest.raises(SystemExit) as info:
        runner.main(argv)
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_runner_prints_a_bad_scenario_and_returns_2(tmp_path, monkeypatch, capsys):
    runner = _runner_must_not_run(monkeypatch)
    bad = tmp_path / "bad.toml"
    bad.write_text("[stealth]\nn = 300\n")
    assert runner.main([str(bad)]) == 2
    out = capsys.readouterr().out
    assert "scenario error" in out and "stealth.n" in out and "255" in out


@pytest.mark.root  # `stealth-mtd run` asks for root before it reads the scenario
@pytest.mark.parametrize("content,match", [
    (b'trials = "3"\n', "trials = '3': must be an integer"),
    (b"\xff\xfe\n", "not UTF-8"),
    (None, "is not a file"),
])
def test_cli_prints_the_error_and_exits_2(tmp_path, content, match):
    """The real command, as a user runs it: a message, exit code 2, no traceback. None of
    these files could start a network even if loading them were broken (the run would stop
    at its first use of the value); it runs in tmp_path so nothing lands in results/."""
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    if content is None:
        bad.mkdir()
    else:
        bad.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "experiments.cli", "run", str(bad)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, env={**os.environ,
                                                                          "COLUMNS": "300"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "scenario error" in r.stdout and match in r.stdout, r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_vm_kind_qemu_is_a_choice_beside_the_model():
    assert from_dict({"name": "m"}).vm.kind == "model"  # the model stays the default
    sc = from_dict({"name": "q", "vm": {"kind": "qemu", "mib": 96}})
    assert sc.vm.kind == "qemu" and sc.vm.mib == 96
