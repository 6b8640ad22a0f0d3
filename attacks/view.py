"""What one attacker holds for one trial, and what it concludes: the types every attacker shares.

``build_view`` turns a vantage point's capture(s) of one trial into an ``AttackerView``: virtual
addresses resolved where the vantage point allows it (``attacks.aliases``), copies of a packet
seen at several switches counted once, features per window, relay evidence
(``attacks.evidence``). An attacker (a function registered in ``attacks.pipeline.ATTACKERS``)
takes the views of one vantage point across the trials and an ``AttackContext`` and returns one
``AttackResult`` per view; no ground truth is inside a view or a result.

Callers: ``attacks.pipeline``, the attackers (``attacks.passive``), the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.aliases import apply_aliases, resolve_aliases
from attacks.capture import Capture, dedupe_packets, merge_captures
from attacks.detection import Detection, WindowFeatures, trial_features
from attacks.evidence import RelayEvidence, relay_activity, trace_relays
from attacks.identify import HostRanking
from attacks.relaygraph import RelayGraph
from attacks.truth import Vantage


@dataclass
class AttackerView:
    """One attacker's holdings for one trial."""

    vantage: Vantage
    trial: int
    packets: np.ndarray
    aliases: dict[int, int]
    features: WindowFeatures
    evidence: list[RelayEvidence] = field(default_factory=list)


@dataclass
class AttackResult:
    """What one attacker concluded about one trial (no ground truth inside)."""

    attacker: str
    trial: int
    detection: Detection
    detections: dict[str, Detection]
    ranking: HostRanking
    graph: RelayGraph
    aliases: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "attacker": self.attacker,
            "trial": self.trial,
            "detector": self.detection.detector,
            "detections": {k: d.to_json() for k, d in self.detections.items()},
            "ranking": self.ranking.to_json(),
            "relay_graph": self.graph.to_json(),
            "aliases": self.aliases,
        }


@dataclass
class AttackContext:
    """What an attacker is given besides its views.

    ``name`` is the attacker's name in the results. ``labels[i]`` are the window labels of
    ``views[i]`` (migration windows True; all False for a trial without ground truth) when any
    trial's ground truth is known, every entry None when none is: an attacker that rehearsed on
    its own runs trains on them, and the result for ``views[i]`` must never depend on
    ``labels[i]``. ``candidates`` restricts the rankings to these addresses
    (None: every address seen). ``groups[i]`` names the workload seed of ``views[i]``: trials
    of one group are twins (trial t of every mode shares its seed, so its background traffic), and
    the result for ``views[i]`` must not depend on the labels of any view of its group (leave one
    seed out); None: every view its own group.
    """

    name: str
    labels: list[np.ndarray | None]
    seed: int = 0
    candidates: set[int] | None = None
    groups: list[str] | None = None


def build_view(
    vantage: Vantage,
    trial: int,
    captures: list[Capture],
    window_s: float = 1.0,
    drop_loopback: bool = True,
) -> AttackerView:
    """Merge, de-alias and de-duplicate an attacker's captures of one trial; cut into windows.

    With ``drop_loopback``, packets from or to 127.0.0.0/8 are dropped: they never cross a wire
    (a ``tcpdump -i any`` in the root namespace also records the machine's own ``lo``).
    """
    if len(captures) == 1:
        packets = captures[0].packets
        aliases = resolve_aliases(packets, distinct_vp=False)
    else:
        packets = merge_captures(captures, dedupe=False).packets
        aliases = resolve_aliases(packets)
    if aliases:
        packets = apply_aliases(packets, aliases)
    if drop_loopback and len(packets):
        lo_net = np.uint32(127 << 24)
        keep = ((packets["src"] & np.uint32(0xFF000000)) != lo_net) & (
            (packets["dst"] & np.uint32(0xFF000000)) != lo_net
        )
        packets = packets[keep]
    packets = dedupe_packets(packets)
    features = trial_features(packets, window_s)
    evidence = trace_relays(packets)
    features.extra = relay_activity(evidence, features.window_starts, window_s)[:, None]
    return AttackerView(vantage, trial, packets, aliases, features, evidence)
