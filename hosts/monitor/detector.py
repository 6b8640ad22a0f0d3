"""The judge of one host: rules plus an IsolationForest, calibrated on the VM's normal behaviour.

The first intervals of a monitor are the VM's normal behaviour: the ``Detector`` fits an
IsolationForest (scikit-learn) on their feature rows and takes the rules' thresholds from them.
After that every interval gets a model score and the rules it breaks; the ``Judge`` adds
persistence over intervals and gives the ``Verdict``: the first rule that fires (one of
``KINDS``, the monitor's name for each anomaly kind of ``hosts.anomalies``), else ``"model"``
when the score stays above the training range, else no alarm. Pure: tested on made-up rows.
"""

from __future__ import annotations

import collections
import math
import statistics
from dataclasses import dataclass
from typing import Any

from hosts.anomalies import VERDICTS
from hosts.monitor.features import FEATURES

PORT_SCAN = VERDICTS["scan"]
EXFILTRATION = VERDICTS["exfil"]
MINER = VERDICTS["miner"]
BEACONING = VERDICTS["beacon"]
KINDS = tuple(VERDICTS.values())  # what a rule can say; the model alone says "model"


def vector(row: dict[str, float]) -> list[float]:
    """The model's input: log-scaled features in ``FEATURES`` order."""
    return [math.log1p(max(0.0, float(row[k]))) for k in FEATURES]


@dataclass
class Verdict:
    """One interval's judgement."""

    alert: bool
    kind: str | None
    score: float
    rules: list[str]


class Detector:
    """Rules plus an IsolationForest, both calibrated on the VM's normal behaviour.

    Rules (thresholds from the training rows, with floors so a quiet host is not hair-trigger):
    ``port_scan`` — failed connects or distinct remote ports far above normal in one interval;
    ``exfiltration`` — sent bytes above ``3x`` the training maximum (at least 3 MB/s) for 3
    intervals: more than 9 MB, so a tenant's backup burst (up to 4 MB in the shipped
    workloads) is not an exfiltration;
    ``miner`` — CPU half a core above the training maximum for 3 intervals;
    ``beaconing`` — the same (peer, port) never used in training contacted in 3 of the last 8
    intervals. The model: an isolation forest on the log-scaled features, each clipped from
    below at its training median (the monitor looks for more activity than normal, not less);
    its score (higher = more anomalous) plus a term for
    features beyond the training range (an isolation forest's splits lie inside that range, so
    on its own it scores a point far outside no worse than the most extreme training point); an
    alarm when it is above the training maximum plus a margin for 5 intervals in a row.
    """

    def __init__(self, seed: int = 0, margin: float = 0.1, model_run: int = 5) -> None:
        self.seed = seed
        self.margin = margin
        self.model_run = model_run
        self.model: Any = None
        self.range_weight = 0.1
        self.hi: list[float] = []
        self.lo: list[float] = []
        self.span: list[float] = []
        self.threshold = float("inf")
        self.limits: dict[str, float] = {}

    @property
    def trained(self) -> bool:
        return self.model is not None

    def fit(self, rows: list[dict[str, float]]) -> None:
        from sklearn.ensemble import IsolationForest

        if len(rows) < 5:
            raise ValueError(f"need at least 5 training intervals, got {len(rows)}")
        raw = [vector(r) for r in rows]
        # less activity than usual is no threat: below the training median, every feature
        # reads as the median (a quiet second must not look like an outlier)
        self.lo = [statistics.median(c) for c in zip(*raw, strict=True)]
        x = [self._clip(v) for v in raw]
        self.model = IsolationForest(n_estimators=100, random_state=self.seed).fit(x)
        cols = list(zip(*x, strict=True))
        self.hi = [max(c) for c in cols]
        self.span = [max(c) - min(c) + 1.0 for c in cols]
        scores = [-float(s) for s in self.model.score_samples(x)]
        self.threshold = max(scores) + self.margin

        def mx(k: str) -> float:
            return max(r[k] for r in rows)

        self.limits = {
            "fails_ps": max(3 * mx("fails_ps"), 15.0),
            "out_ports": max(2 * mx("out_ports"), mx("out_ports") + 15, 20.0),
            "new_ports": max(2 * mx("new_ports"), 10.0),
            "tx_Bps": max(3 * mx("tx_Bps"), 3e6),
            "cpu": max(mx("cpu") + 0.5, 0.6),
        }

    def _clip(self, v: list[float]) -> list[float]:
        return [max(x, lo) for x, lo in zip(v, self.lo, strict=True)]

    def score(self, row: dict[str, float]) -> float:
        if self.model is None:
            raise RuntimeError("the detector is not trained")
        v = self._clip(vector(row))
        # an isolation forest cannot rank points beyond its training range (its splits lie
        # inside it): add how far, in training spans, each feature lies above that range
        beyond = sum(max(0.0, x - h) / s for x, h, s in zip(v, self.hi, self.span, strict=True))
        return -float(self.model.score_samples([v])[0]) + self.range_weight * beyond

    def rules(self, row: dict[str, float]) -> list[str]:
        """The rules this one interval breaks (persistence is the ``Judge``'s business)."""
        lim = self.limits
        hit = []
        if (row["fails_ps"] > lim["fails_ps"] or row["out_ports"] > lim["out_ports"]
                or row["new_ports"] > lim["new_ports"]):
            hit.append(PORT_SCAN)
        if row["tx_Bps"] > lim["tx_Bps"]:
            hit.append(EXFILTRATION)
        if row["cpu"] > lim["cpu"]:
            hit.append(MINER)
        return hit


class Judge:
    """Persistence over intervals: turns per-interval rule hits and scores into alarms."""

    RUNS = {PORT_SCAN: 1, EXFILTRATION: 3, MINER: 3}
    BEACON_HITS, BEACON_WINDOW = 3, 8

    def __init__(self, det: Detector) -> None:
        self.det = det
        self.runs: collections.Counter[str] = collections.Counter()
        self.model_run = 0
        self.rare: collections.deque[set[tuple[str, int]]] = collections.deque(
            maxlen=self.BEACON_WINDOW)

    def judge(self, row: dict[str, float], notes: dict[str, Any]) -> Verdict:
        score = self.det.score(row)
        hits = self.det.rules(row)
        for k in self.RUNS:
            self.runs[k] = self.runs[k] + 1 if k in hits else 0
        fired = [k for k, n in self.RUNS.items() if self.runs[k] >= n]
        self.rare.append({tuple(t) for t in notes.get("rare", [])})
        counts = collections.Counter(t for s in self.rare for t in s)
        if counts and max(counts.values()) >= self.BEACON_HITS and PORT_SCAN not in hits:
            fired.append(BEACONING)
            hits.append(BEACONING)
        self.model_run = self.model_run + 1 if score > self.det.threshold else 0
        kind = fired[0] if fired else ("model" if self.model_run >= self.det.model_run else None)
        return Verdict(kind is not None, kind, score, hits)
