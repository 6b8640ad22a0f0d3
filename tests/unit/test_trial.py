"""The one trial bring-up (experiments.trial.Trial) with a fake testbed: the order things start
and stop in, teardown when the bring-up itself fails; and the one ground_truth.json shape.
No root."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import experiments.testbed
import experiments.trial as trial_mod
from attacks.truth import SCHEMA, Vantage
from experiments.scenario import load
from experiments.trial import Trial, read_ground_truth, trial_seed, write_ground_truth


class FakeTestbed:
    def __init__(self, events: list[str], topo: Any, run_dir: Path, seed: int) -> None:
        self.events, self.run_dir, self.seed = events, run_dir, seed

    def __enter__(self) -> FakeTestbed:
        self.events.append(f"testbed up seed={self.seed}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.append("testbed down")

    def start_cover(self, settings: Any) -> None:
        self.events.append(f"cover seed={settings.seed} rate={settings.rate_bytes_per_s:.0f}")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    ev: list[str] = []
    monkeypatch.setattr(experiments.testbed, "Testbed",
                        lambda topo, run_dir, seed: FakeTestbed(ev, topo, run_dir, seed))
    monkeypatch.setattr(trial_mod, "start_agents",
                        lambda tb, vm: ev.append(f"agents vm={vm.name}@{vm.host} seed={vm.seed}"))
    monkeypatch.setattr(trial_mod, "start_workload",
                        lambda tb, seed, *a, **kw: ev.append(f"workload seed={seed}"))

    def start(tb: Any, spec: str, out: Path, tag: str = "") -> Any:
        ev.append(f"capture {spec}{tag}")
        return trial_mod.vantage.VantageCapture(vantage=Vantage.parse(spec))

    def stop(v: Any) -> dict[str, int]:
        ev.append(f"capture {v.name} stopped")
        return {"captured": 1}

    monkeypatch.setattr(trial_mod, "settle", lambda s: ev.append(f"settle {s:g} s"))
    monkeypatch.setattr(trial_mod.vantage, "start", start)
    monkeypatch.setattr(trial_mod.vantage, "stop", stop)
    return ev


def test_bring_up_in_order_and_tear_down_captures_before_the_testbed(events, tmp_path):
    sc = load("quick")
    seed = trial_seed(sc, 2)
    said: list[str] = []
    with Trial(sc, 2, tmp_path / "logs", ["global"], tmp_path / "pcaps", tag="-x",
               say=said.append) as t:
        assert t.seed == seed and t.tb.run_dir == tmp_path / "logs"
        events.append("trial body")
    assert events == [f"testbed up seed={seed}", f"agents vm={sc.vm.name}@{sc.vm.host} "
                      f"seed={seed}", f"workload seed={seed}",
                      f"settle {sc.background.settle_s:g} s",  # captured only once it settled
                      "capture global-x", "trial body", "capture global stopped", "testbed down"]
    assert t.capture_stats == {"global": {"captured": 1}}
    assert said == ["bringing up the network", "starting agents and the VM",
                    "workload settling (10 s, not captured)"]


def test_a_cover_trial_starts_cover_before_the_workload(events, tmp_path):
    sc = load("quick")
    cover = sc.cover_settings(trial_seed(sc, 1))
    with Trial(sc, 1, tmp_path / "logs", cover=cover):
        events.append("trial body")
    seed = trial_seed(sc, 1)
    assert events[1:4] == [f"agents vm={sc.vm.name}@{sc.vm.host} seed={seed}",
                           f"cover seed={seed} rate={sc.cover_rate_bytes_per_s():.0f}",
                           f"workload seed={seed}"]
    events.clear()
    with Trial(sc, 1, tmp_path / "logs"):  # the other arms: no cover
        pass
    assert not any(e.startswith("cover") for e in events)


def test_a_testbed_without_cover_is_a_clear_error(events, tmp_path, monkeypatch):
    class Bare:
        def __init__(self, *a: Any) -> None:
            pass

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            events.append("testbed down")

    monkeypatch.setattr(experiments.testbed, "Testbed", lambda topo, run_dir, seed: Bare())
    sc = load("quick")
    with pytest.raises(RuntimeError, match="no cover transport"):
        with Trial(sc, 0, tmp_path, cover=sc.cover_settings()):
            pass
    assert events[-1] == "testbed down"


def test_a_failed_bring_up_tears_down_what_it_started(events, tmp_path, monkeypatch):
    def interrupted(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trial_mod, "start_workload", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with Trial(load("quick"), 0, tmp_path, ["global"], tmp_path / "pcaps"):
            events.append("trial body")
    assert events[-1] == "testbed down" and "trial body" not in events
    assert not any(e.startswith("capture") for e in events)


def test_an_error_in_the_body_stops_captures_and_testbed(events, tmp_path):
    with pytest.raises(RuntimeError):
        with Trial(load("quick"), 0, tmp_path, ["global"], tmp_path / "pcaps"):
            raise RuntimeError("migration failed")
    assert events[-2:] == ["capture global stopped", "testbed down"]


class SlowTestbed(FakeTestbed):
    """Waits 0.3 s for the lock, then is ready 0.1 s later; stops in 0.2 s."""

    def __enter__(self) -> SlowTestbed:
        time.sleep(0.4)
        self.timings = {"ready_s": 0.1}
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        super().__exit__()


def test_bring_up_and_teardown_are_timed_apart_from_the_lock_wait(events, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(experiments.testbed, "Testbed",
                        lambda topo, run_dir, seed: SlowTestbed(events, topo, run_dir, seed))
    with Trial(load("quick"), 0, tmp_path / "logs") as t:
        assert 0.28 <= t.timings["lock_wait_s"] < 0.4
        assert 0.1 <= t.timings["bringup_s"] < 0.3
        assert "teardown_s" not in t.timings
    assert 0.2 <= t.timings["teardown_s"] < 0.4


def test_captures_need_a_pcap_folder(tmp_path):
    with pytest.raises(ValueError):
        Trial(load("quick"), 0, tmp_path, ["global"])


def test_ground_truth_is_an_object_with_trials(tmp_path):
    path = tmp_path / "ground_truth.json"
    recs = [{"trial": 0, "seed": 1000}, {"trial": 1, "seed": 1001}]
    write_ground_truth(path, recs)
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and [(t["trial"], t["seed"]) for t in data["trials"]] == [
        (0, 1000), (1, 1001)]
    back = read_ground_truth(path)
    assert [{k: t[k] for k in ("trial", "seed")} for t in back] == recs
    path.write_text(json.dumps(recs))  # an old monitor-eval folder (a bare list) still reads
    assert [t["seed"] for t in read_ground_truth(path)] == [1000, 1001]
    path.write_text(json.dumps({"runs": recs}))  # anything else is a clear error
    with pytest.raises(ValueError, match="trials"):
        read_ground_truth(path)
    with pytest.raises(ValueError, match="unknown"):  # a field the schema does not know
        write_ground_truth(path, [{"trial": 0, "colour": "red"}])
    write_ground_truth(path, recs, {"arms": {"cover": {"protocol_mode": "stealth"}}})
    assert json.loads(path.read_text())["meta"]["arms"]["cover"]["protocol_mode"] == "stealth"
