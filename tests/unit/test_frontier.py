"""The trade-off frontier (experiments.frontier) from fixture metrics: a sweep folder as the
runner writes it (sweep.json, a folder per point with metrics.json and arms.json) → the points,
frontier.md with the references, frontier.png, frontier.json; the command; write_sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import frontier
from experiments.frontier import FrontierError, points_of
from experiments.tables import write_sweep

ATTACKERS = ["global", "global/design-aware", "switch:l1"]


def _att(auc: float, top1: float, recall: float) -> dict:
    return {"detection_auc": auc, "destination_top1": top1, "destination_chance": 1 / 15,
            "path_recall": recall,
            "intervals": {"detection_auc": {"mean": auc, "lo": auc - 0.05, "hi": auc + 0.05,
                                            "n": 10},
                          "destination_top1": {"mean": top1, "lo": max(top1 - 0.2, 0),
                                               "hi": min(top1 + 0.2, 1), "n": 10}}}


def _mode(aucs: list[float], top1: float, recall: float, took: float, down: float) -> dict:
    return {"n_trials": 10, "failed": 0, "migration_time_s": took, "downtime_s": down,
            "attackers": {a: _att(x, top1, recall) for a, x in zip(ATTACKERS, aucs,
                                                                   strict=True)}}


# label → (arm, its AUCs per attacker, top-1, recall, time, downtime, cover rate B/s, bw overhead,
# time over direct's, floor ratio)
POINTS = {
    "rate_x_normal=0.0": ("profile", [0.8, 0.85, 0.7], 1.0, 0.4, 10.0, 5.0, None, 0.0, 12.5,
                          None),
    "rate_x_normal=0.5": ("cover", [0.62, 0.58, 0.55], 0.2, 0.2, 40.0, 0.4, 212_000, 0.52, 50.0,
                          1.2),
    "rate_x_normal=1.0": ("cover", [0.55, 0.59, 0.52], 0.1, 0.1, 22.0, 0.3, 425_000, 1.01, 27.5,
                          1.3),
}


def _write_point(folder: Path, name: str, arm: str, aucs, top1, recall, took, down, rate, bw,
                 tvd, floor) -> dict:
    folder.mkdir(parents=True)
    metrics = {"scenario": name, "modes": {"direct": _mode([0.97, 0.99, 0.9], 1.0, 1.0, 0.8,
                                                           0.1),
                                           arm: _mode(aucs, top1, recall, took, down)}}
    arms = {"arms": {"direct": {"cover_rate_bytes_per_s": None, "bandwidth_overhead": 0.0,
                                "time_vs_direct": 1.0, "downtime_vs_direct": 1.0},
                     arm: {"cover_rate_bytes_per_s": rate, "bandwidth_overhead": bw,
                           "time_vs_direct": tvd, "downtime_vs_direct": down / 0.1,
                           "floor_ratio": floor, "goodput_over_cover": 0.7 if rate else None}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "arms.json").write_text(json.dumps(arms))
    return metrics


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    run = tmp_path / "frontier-run"
    done = {label: _write_point(run / label, f"frontier-{label}", *p) for label, p in
            POINTS.items()}
    (run / "sweep.json").write_text(json.dumps(done))
    return run


def test_points_per_arm_per_sweep_point(sweep):
    pts = points_of(sweep)
    assert [(p.label, p.arm) for p in pts] == [
        (label, arm) for label in POINTS for arm in ("direct", POINTS[label][0])]
    assert {p.series for p in pts} == {"frontier"}  # the sweep's name, not the point's
    cover = next(p for p in pts if p.label == "rate_x_normal=0.5" and p.arm == "cover")
    assert cover.best_auc[:2] == ("global", 0.62)  # the attacker with the highest mean
    assert cover.best_top1[1] == 0.2 and cover.chance == pytest.approx(1 / 15)
    assert cover.bandwidth_overhead == 0.52 and cover.time_vs_direct == 50.0
    # 0.62 > 0.6 and top-1 0.2 > chance + 0.1: missed; recall, floor and downtime met
    assert cover.misses() == ["AUC <= 0.6", "top-1 <= chance + 0.1"]
    best = next(p for p in pts if p.label == "rate_x_normal=1.0" and p.arm == "cover")
    assert best.misses() == ["time <= 1.25x floor"]
    profile = next(p for p in pts if p.arm == "profile")
    assert "downtime < 1 s" in profile.misses() and "time <= 1.25x floor" not in \
        profile.misses()  # no cover rate: no floor to miss


def test_frontier_files_with_the_references(sweep, tmp_path):
    made = frontier.write(sweep, [sweep])
    assert made == ["frontier.png", "frontier.md", "frontier.json"]
    assert (sweep / "frontier.png").stat().st_size > 10_000
    md = (sweep / "frontier.md").read_text()
    assert "WTF-PAD" in md and "91% → 20%" in md and "< 60% bandwidth overhead" in md
    assert "FRONT" in md and "33% bandwidth overhead" in md
    row = next(line for line in md.splitlines()
               if line.startswith("| frontier | rate_x_normal=0.5 | cover |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    head = frontier.HEAD
    assert cells[head.index("cover (Mbit/s per VM)")] == "1.70"
    assert cells[head.index("bandwidth overhead")] == "52%"
    assert cells[head.index("time / direct's")] == "50.00"
    assert cells[head.index("best detection AUC")] == "0.62 [0.57, 0.67] (global)"
    assert cells[head.index("targets missed")] == "AUC <= 0.6, top-1 <= chance + 0.1"
    auc_row = next(line for line in md.splitlines()
                   if line.startswith("| frontier | rate_x_normal=1.0 | cover |") and
                   line.count("|") == len(ATTACKERS) + 4)
    assert "0.55 | 0.59 | 0.52" in auc_row  # every attacker's AUC
    js = json.loads((sweep / "frontier.json").read_text())
    assert len(js["points"]) == 6 and js["references"] == frontier.REFERENCES


def test_the_command_draws_several_runs_into_one(sweep, tmp_path, capsys):
    other = tmp_path / "heavy"
    done = {"rate_x_normal=1.0": _write_point(other / "rate_x_normal=1.0",
                                              "heavy-rate_x_normal=1.0",
                                              *POINTS["rate_x_normal=1.0"])}
    (other / "sweep.json").write_text(json.dumps(done))
    out = tmp_path / "both"
    assert frontier.main([str(sweep), str(other), "--out", str(out)]) == 0
    assert "| heavy | rate_x_normal=1.0 | cover |" in (out / "frontier.md").read_text()
    assert (out / "frontier.png").is_file() and "frontier.md" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert frontier.main([str(tmp_path / "empty")]) == 2
    assert "no analysed run" in capsys.readouterr().err
    with pytest.raises(FrontierError, match="no analysed run"):
        points_of(tmp_path / "empty")


def test_a_single_run_and_a_run_without_stealth(tmp_path):
    run = tmp_path / "one"
    _write_point(run, "quick", *POINTS["rate_x_normal=1.0"])
    assert [p.arm for p in points_of(run)] == ["direct", "cover"]
    assert points_of(run)[0].label == ""
    direct_only = tmp_path / "d"
    direct_only.mkdir()
    (direct_only / "metrics.json").write_text(json.dumps(
        {"scenario": "d", "modes": {"direct": _mode([0.9] * 3, 1.0, 1.0, 0.8, 0.1)}}))
    assert frontier.plot(points_of(direct_only), tmp_path / "x.png") is False


def test_write_sweep_adds_the_frontier(sweep):
    done = list(json.loads((sweep / "sweep.json").read_text()).items())
    for f in ("sweep.json", "frontier.md"):
        (sweep / f).unlink(missing_ok=True)
    write_sweep(sweep, done)
    md = (sweep / "sweep.md").read_text()
    assert "[frontier.png](frontier.png)" in md and (sweep / "frontier.md").is_file()
    row = next(line for line in md.splitlines()
               if line.startswith("| rate_x_normal=0.5 | cover | global |"))
    assert "0.52" in row and "50" in row  # bandwidth overhead, time over direct's


@pytest.mark.slow  # the runner's analysis of four synthetic trials
def test_a_cover_sweep_run_writes_its_frontier(tmp_path, monkeypatch):
    """``stealth-mtd run`` of a cover-rate sweep (its trials synthetic): the rate-0 point runs
    the profile arm, each point gets arms.json, the sweep folder the frontier."""
    from experiments import runner
    from tests.unit.test_merge import fake_trial

    ran: list[tuple[str, str]] = []

    def trial(sc, mode, *a, **kw):
        ran.append((sc.name, mode))
        return fake_trial(sc, mode if mode == "direct" else "stealth", *a, **kw) | {"mode": mode}

    monkeypatch.setattr(runner, "run_trial", trial)
    base = (Path(runner.__file__).parent / "scenarios" / "quick.toml").read_text()
    base = base.replace('vantage = ["switch:l1", "switch:s1", "global"]', 'vantage = ["global"]')
    base = base.replace('modes = ["direct", "profile", "cover"]', 'modes = ["direct", "cover"]')
    f = tmp_path / "fr.toml"
    f.write_text(base.replace('name = "quick"', 'name = "fr"')
                 + '[sweep]\n"cover.rate_x_normal" = [0.0, 1.0]\n')
    out = tmp_path / "run"
    assert runner.main([str(f), "--trials", "1", "--out", str(out)]) == 0
    assert ran == [("fr-rate_x_normal=0.0", "direct"), ("fr-rate_x_normal=0.0", "profile"),
                   ("fr-rate_x_normal=1.0", "direct"), ("fr-rate_x_normal=1.0", "cover")]
    arms = json.loads((out / "rate_x_normal=1.0" / "arms.json").read_text())["arms"]
    assert arms["cover"]["cover_rate_bytes_per_s"] > 0
    assert arms["cover"]["time_vs_direct"] == 1.5  # the fake trials: 3 s over 2 s
    pts = {(p.label, p.arm) for p in points_of(out)}
    assert ("rate_x_normal=0.0", "profile") in pts and ("rate_x_normal=1.0", "cover") in pts
    for name in frontier.FILES:
        assert (out / name).is_file()
    assert "frontier.png" in (out / "sweep.md").read_text()
