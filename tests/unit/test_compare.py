"""``stealth-mtd compare``: two small run folders written here, compared figure by figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import compare


def _iv(mean: float, lo: float | None, hi: float | None, n: int = 3) -> dict:
    return {"mean": mean, "lo": lo, "hi": hi, "n": n, "method": "bootstrap"}


def _run(d: Path, auc: dict, dest: str = "h7", top1: dict | None = None) -> Path:
    d.mkdir()
    metrics = {"modes": {"cover": {
        "attackers": {"global": {"intervals": {"detection_auc": auc,
                                               "destination_top1": top1 or _iv(0.0, 0.0, 0.5)}}},
        "intervals": {"migration_time_s": _iv(10.0, 9.0, 11.0)}}},
        "active": {"modes": {"cover": {"service-scan": {
            "found_vm": _iv(1.0, 0.4, 1.0), "rounds": 9}}}}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    who = lambda h: {"host": h, "ip": "10.0.0.1"}  # noqa: E731
    gt = {"trials": [{"mode": "cover", "trial_in_mode": t, "destination": who(dest),
                      "intermediates": [who("h2"), who("h3")], "leader": who("h4"),
                      "status": "done"} for t in range(2)]}
    (d / "ground_truth.json").write_text(json.dumps(gt))
    (d / "timings.json").write_text(json.dumps({"trials": 2, "wall_s": 100.0, "lock_wait_s": 0,
                                                "trials_per_hour": 72.0}))
    (d / "timings.csv").write_text("trial,bringup_s,total_s\n0,9.0,60\n1,2.0,50\n")
    return d


def test_overlapping_runs_agree(tmp_path, capsys) -> None:
    a = _run(tmp_path / "a", _iv(0.55, 0.50, 0.60))
    b = _run(tmp_path / "b", _iv(0.58, 0.52, 0.66))
    c = compare.compare(a, b)
    figs = {(x["who"], x["figure"]): x["agree"] for x in c["cells"]}
    assert figs == {("global", "detection_auc"): True, ("global", "destination_top1"): True,
                    ("costs", "migration_time_s"): True, ("active:service-scan", "found_vm"): True}
    assert c["disagree"] == 0 and c["roles_differ"] == [] and c["trials_compared"] == 2
    assert c["phases"]["a"] == {"bringup_s": 5.5, "total_s": 55.0}
    assert compare.main([str(a), str(b), "--check", "--labels", "fresh,reused"]) == 0
    out = capsys.readouterr().out
    assert "| cover | global | detection_auc | 0.55 [0.5, 0.6] | 0.58 [0.52, 0.66] | yes |" in out


def test_disjoint_intervals_and_other_roles_fail_the_check(tmp_path) -> None:
    a = _run(tmp_path / "a", _iv(0.55, 0.50, 0.60))
    b = _run(tmp_path / "b", _iv(0.90, 0.80, 0.95), dest="h8")
    c = compare.compare(a, b, figures=["detection_auc"])
    assert [(x["figure"], x["agree"]) for x in c["cells"]] == [("detection_auc", False)]
    assert c["disagree"] == 1 and c["roles_differ"] == [["cover", 0], ["cover", 1]]
    assert compare.main([str(a), str(b)]) == 0  # without --check it only reports
    assert compare.main([str(a), str(b), "--check", "--out", str(tmp_path / "cmp")]) == 1
    assert json.loads((tmp_path / "cmp.json").read_text())["disagree"] == 1
    assert "**no**" in (tmp_path / "cmp.md").read_text()


def test_one_trial_has_no_interval(tmp_path) -> None:
    a = _run(tmp_path / "a", _iv(0.5, None, None, n=1))
    b = _run(tmp_path / "b", _iv(0.9, 0.8, 0.95))
    c = compare.compare(a, b, figures=["detection_auc"])
    assert c["cells"][0]["agree"] is None and c["no_interval"] == 1 and c["disagree"] == 0
    empty = _run(tmp_path / "c", _iv(None, None, None, n=0))  # no trial had the figure
    assert "| – | 0.9 [0.8, 0.95] | – |" in compare.markdown(compare.compare(empty, b))


def test_not_a_run_folder_is_a_clear_error(tmp_path, capsys) -> None:
    a = _run(tmp_path / "a", _iv(0.5, 0.4, 0.6))
    with pytest.raises(SystemExit) as exc:
        compare.main([str(a), str(tmp_path / "missing")])
    assert exc.value.code == 2
    assert "metrics.json: not there" in capsys.readouterr().err
