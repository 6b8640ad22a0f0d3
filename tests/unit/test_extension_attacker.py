"""Worked example: a new attacker is one function and one line in ``attacks.pipeline.ATTACKERS``.

The attacker below ("volume") is naive on purpose: it alarms on the busiest windows and names the
hosts that sent and received the most bytes in them. In the project it would live in its own
module (``attacks/volume.py``) and the registry line would read ``"volume": volume.attack,``;
here the test registers it for the duration of the test. The pipeline then runs it on every
vantage point next to the built-in attacker, and scoring gives it its own records and aggregate
(named ``<vantage>/volume``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from attacks import pipeline
from attacks.capture import Capture, int_to_ip
from attacks.detection import Detection
from attacks.identify import HostRanking
from attacks.relaygraph import relay_graph
from attacks.truth import GLOBAL
from attacks.view import AttackContext, AttackerView, AttackResult
from tests.unit.attacks_synth import make_trial


def volume_attack(views: list[AttackerView], ctx: AttackContext) -> list[AttackResult]:
    """Bytes per window; alarm above the 90th percentile; rank hosts by bytes in alarms."""
    out = []
    for v in views:
        f = v.features
        pk = v.packets
        idx = ((pk["ts"] - f.window_starts[0]) // f.window_s).astype(int)
        scores = np.bincount(idx, weights=pk["length"], minlength=len(f.window_starts))
        scores = scores[: len(f.window_starts)]
        threshold = float(np.quantile(scores, 0.9))
        alarms = scores > threshold
        det = Detection("volume", f.window_starts, f.window_s, scores, alarms, threshold)
        sent: dict[str, float] = defaultdict(float)
        got: dict[str, float] = defaultdict(float)
        hot = alarms[np.clip(idx, 0, len(alarms) - 1)]
        for s, d, n in zip(pk["src"][hot], pk["dst"][hot], pk["length"][hot], strict=True):
            sent[int_to_ip(s)] += float(n)
            got[int_to_ip(d)] += float(n)
        ranking = HostRanking(sorted(sent.items(), key=lambda x: -x[1]),
                              sorted(got.items(), key=lambda x: -x[1]))
        src = ranking.source[0][0] if ranking.source else None
        dst = next((h for h, _ in ranking.destination if h != src), None)
        out.append(AttackResult(ctx.name, v.trial, det, {"volume": det}, ranking,
                                relay_graph([], src, dst)))
    return out


def test_a_registered_attacker_gets_its_own_rows_in_the_metrics(monkeypatch):
    monkeypatch.setitem(pipeline.ATTACKERS, "volume", volume_attack)  # the one registry line
    trials = [make_trial(i, mode, 3000 + i)
              for i, mode in enumerate(["direct", "direct", "background"])]
    captures = {st.truth.trial: {GLOBAL: Capture(st.table, ["global"])} for st in trials}
    truths = {st.truth.trial: st.truth for st in trials}
    results, records, metrics = pipeline.analyze_run(captures, truths)
    mine = [r for r in records if r["attacker"] == "global/volume"]
    assert sorted(r["trial"] for r in mine) == [0, 1, 2]
    assert all(r["detector"] == "volume" for r in mine)
    # scored like any attacker: a direct migration's bulk transfer is the busiest traffic
    assert metrics["modes"]["direct"]["global/volume"]["detection_auc"] > 0.5
    assert metrics["modes"]["direct"]["global/volume"]["source_top1"] == 1.0
    # the built-in attacker (and every other registered one) still runs, the built-in one
    # under the vantage point's own name
    names = {pipeline.attacker_name(GLOBAL, a) for a in pipeline.ATTACKERS}
    assert {r["attacker"] for r in records} == names and {"global", "global/volume"} <= names
    assert len(results) == 3 * len(pipeline.ATTACKERS)


def test_without_registration_only_the_registered_attackers_run():
    st = make_trial(0, "direct", 3000)
    _, records, _ = pipeline.analyze_run({0: {GLOBAL: Capture(st.table, ["global"])}},
                                         {0: st.truth})
    assert [r["attacker"] for r in records] == [
        pipeline.attacker_name(GLOBAL, a) for a in pipeline.ATTACKERS
    ]
    assert records[0]["attacker"] == "global" and "global/volume" not in {
        r["attacker"] for r in records
    }
