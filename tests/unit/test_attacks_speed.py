"""The vectorised attackers give the slow path's figures exactly (tests/unit/attacks_slow.py).

Every comparison here is exact (``==`` / ``np.array_equal``), floats included: the fast path adds
the same numbers in the same order where it sums (bincount and ``np.add.at`` add in table order,
per group, as the per-group loops did), takes the correlations the lag search keeps from
``np.corrcoef`` itself, and orders ties as the sorts it replaced did. Compared: features, relay
evidence, aliases, de-duplicated tables, relay graphs, rankings, and the final metrics of a run,
on the recorded loopback capture and on synthetic global captures (one with a virtual address
seen at two vantage points).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import attacks.capture
import attacks.view
from attacks import aliases, capture, evidence, features
from attacks.capture import PACKET_DTYPE, Capture, read_pcap
from attacks.passive import analyze, detect
from attacks.pipeline import analyze_run
from attacks.truth import GLOBAL, Vantage
from attacks.view import build_view
from tests.unit import attacks_slow as slow
from tests.unit.attacks_synth import make_trial, split_vip_views

FIXTURE = Path(__file__).parent / "attacks_fixtures" / "loopback-stealth.pcap"


def _random_table(rng: np.random.Generator, n: int, values: int, shuffle: bool) -> np.ndarray:
    """Few distinct values per field: many equal keys, copies, rewrites and ties."""
    t = np.zeros(n, dtype=PACKET_DTYPE)
    for f in ("src", "dst", "sport", "dport", "ipid", "seq", "vp"):
        t[f] = rng.integers(0, values, n)
    t["proto"] = rng.choice([6, 17], n)
    t["flags"] = rng.choice([0x02, 0x10, 0x12, 0x18], n)
    t["plen"] = rng.choice([0, 0, 100, 1448, 5000], n)
    t["length"] = t["plen"] + 52
    t["ts"] = np.sort(rng.integers(0, 400, n) * 0.01)  # many equal times
    return t[rng.permutation(n)] if shuffle else t


def _evidence(ev: list) -> list[dict]:
    return [vars(e) for e in ev]


def _view_equal(a, b) -> None:
    assert np.array_equal(a.packets, b.packets)
    assert a.aliases == b.aliases
    for name in ("X", "Z", "extra", "window_starts"):
        assert np.array_equal(getattr(a.features, name), getattr(b.features, name)), name
    assert _evidence(a.evidence) == _evidence(b.evidence)


def _global_trial(trial: int, mode: str, seed: int, **kw) -> tuple[Capture, Capture]:
    """A trial seen at two switches: a core one (every packet) and the destination's edge (its
    packets again, later; with a virtual address rewritten there)."""
    st = make_trial(trial, mode, seed, **kw)
    vip = st.truth.virtual_ip
    real = st.truth.destination.ip if st.truth.destination else "10.0.0.1"
    core, edge = split_vip_views(st.table, vip or real, real)
    return Capture(core, ["core"]), Capture(edge, ["edge"])


@pytest.mark.parametrize("shuffle", [False, True])
def test_window_features_match(shuffle):
    rng = np.random.default_rng(1)
    for values, window in ((3, 0.5), (40, 1.0)):
        t = _random_table(rng, 5000, values, shuffle)
        w = features.make_windows(t, window)
        assert np.array_equal(features.window_features(t, w), slow.window_features(t, w))
    st = make_trial(0, "stealth", 11)
    w = features.make_windows(st.table, 1.0)
    assert np.array_equal(features.window_features(st.table, w), slow.window_features(st.table, w))
    ids, n = features.flow_ids(st.table)
    ids0, n0 = slow.flow_ids(st.table)
    assert n == n0 and np.array_equal(ids, ids0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_dedupe_and_aliases_match(shuffle, monkeypatch):
    rng = np.random.default_rng(2)
    for trial in range(40):
        t = _random_table(rng, 600, 3, shuffle)
        for dv in (True, False):
            for fixed, varying in (("src", "dst"), ("dst", "src")):
                a = aliases._pairs(t, fixed, varying, 0.05, dv)
                b = slow._pairs(t, fixed, varying, 0.05, dv)
                assert list(a.items()) == list(b.items()), (trial, fixed, dv)
            got = aliases.resolve_aliases(t, min_votes=1, distinct_vp=dv)
            assert got == slow.resolve_aliases(t, min_votes=1, distinct_vp=dv)
        if not shuffle:  # dedupe_packets wants a table sorted by time
            assert np.array_equal(capture.dedupe_packets(t), slow.dedupe_packets(t))
    # every key on one hash: the exact lexsort takes over and the answers stay the same
    monkeypatch.setattr(attacks.capture, "_MIX", np.uint64(0))
    t = _random_table(rng, 600, 3, shuffle)
    assert list(aliases._pairs(t, "src", "dst", 0.05, True).items()) == list(
        slow._pairs(t, "src", "dst", 0.05, True).items()
    )
    if not shuffle:
        assert np.array_equal(capture.dedupe_packets(t), slow.dedupe_packets(t))


def test_xcorr_peak_matches():
    rng = np.random.default_rng(3)
    for k in range(2000):
        n = int(rng.integers(1, 90))
        x = (rng.integers(0, 3, n) * rng.integers(0, 100_000, n)).astype(float)
        if k % 5 == 0:
            x[:] = 7.0  # constant input: no correlation at any lag
        y = np.roll(x, int(rng.integers(0, 6))) + rng.integers(0, 2, n) * rng.integers(0, 900, n)
        if k % 7 == 0:
            y = np.full(n, 5.0)
            y[-1] = 6.0  # constant but for its last bin
        max_lag = int(rng.integers(0, n))  # the slow path fails on lags past the series
        with np.errstate(all="ignore"):
            want = slow._xcorr_peak(x, y.astype(float), max_lag)
        assert evidence._xcorr_peak(x, y.astype(float), max_lag) == want, k


@pytest.mark.parametrize(
    "mode,seed,vip", [("stealth", 21, False), ("stealth", 22, True), ("direct", 23, False)]
)
def test_relay_evidence_matches(mode, seed, vip):
    st = make_trial(0, mode, seed, virtual_ip=vip)
    fast = evidence.trace_relays(st.table)
    ref = slow.trace_relays(st.table)
    assert _evidence(fast) == _evidence(ref)
    assert mode == "direct" or fast  # the stealth trials do leave evidence
    starts = st.table["ts"][0] + np.arange(40.0)
    assert np.array_equal(
        evidence.relay_activity(fast, starts, 1.0), slow.relay_activity(ref, starts, 1.0)
    )
    for gap in (None, 0.005):
        assert np.array_equal(
            evidence.transfers(st.table, 3000, gap), slow.transfers(st.table, 3000, gap)
        )


def test_loopback_capture_matches(monkeypatch):
    """The recorded capture of the real protocol: view, detections, ranking and graph."""
    cap = read_pcap(FIXTURE)

    def run():
        view = build_view(Vantage("lo"), 0, [cap], drop_loopback=False)
        return view, analyze(view, detect([view])[0]).to_json()

    fast_view, fast = run()
    with monkeypatch.context() as m:
        slow.slow_path(m)
        assert attacks.view.trace_relays is slow.trace_relays  # the slow path is the one run
        slow_view, ref = run()
    _view_equal(fast_view, slow_view)
    assert fast_view.evidence and fast["relay_graph"]["edges"]
    assert fast == ref


@pytest.mark.slow
def test_global_run_metrics_match(monkeypatch):
    """A synthetic run of global captures (two vantage points each, one trial with a virtual
    address): every view, every result and the final metrics, fast vs slow."""
    plan = [("stealth", 31, True), ("stealth", 32, False), ("direct", 33, False)]
    plan += [("background", 34, False)]
    captures, truths = {}, {}
    for i, (mode, seed, vip) in enumerate(plan):
        core, edge = _global_trial(i, mode, seed, virtual_ip=vip, flows_per_s=12.0)
        captures[i] = {Vantage("core"): core, Vantage("edge"): edge}
        truths[i] = make_trial(i, mode, seed, virtual_ip=vip, flows_per_s=12.0).truth
    assert sum(len(c.packets) for v in captures.values() for c in v.values()) > 300_000

    def run():
        views = [
            build_view(GLOBAL, i, [captures[i][Vantage("core")], captures[i][Vantage("edge")]])
            for i in captures
        ]
        results, records, metrics = analyze_run(captures, truths)
        return views, [r.to_json() for r in results], json.dumps(metrics, sort_keys=True)

    fast_views, fast_results, fast_metrics = run()
    with monkeypatch.context() as m:
        slow.slow_path(m)
        slow_views, slow_results, slow_metrics = run()
    for a, b in zip(fast_views, slow_views, strict=True):
        _view_equal(a, b)
    assert fast_views[0].aliases  # the virtual address was resolved on both paths
    assert fast_results == slow_results
    assert fast_metrics == slow_metrics


def test_bench_attack_prints_its_figures(capsys):
    """``stealth-mtd bench attack`` on a small synthetic capture and a run folder's largest pcap
    (the figures themselves are not asserted)."""
    from experiments.bench_attack import main
    from tests.unit.attacks_synth import synthetic_run

    run = synthetic_run(n_direct=1, n_background=1)
    assert main(["--packets", "40000", "--repeats", "1", "--run", str(run), "--json"]) == 0
    figs = json.loads(capsys.readouterr().out)
    assert [f["capture"] for f in figs][0] == "synthetic global"
    assert figs[1]["capture"].endswith(".pcap") and figs[1]["read_seconds"] > 0
    for f in figs:
        assert f["packets"] > 20_000 and f["attack_pps"] > 0 and f["groupby_pair_pps"] > 0
