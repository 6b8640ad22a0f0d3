"""Source and destination identification: a ranked list of hosts for each role.

The evidence is conservation of bytes. A migration moves a VM image *out of* its source and *into*
its destination; relays (intermediates, a leader) pass bytes through and stay near zero net. So in
the windows a detector flagged (``suspect_windows``), each host's net payload inflow minus its own
typical net inflow in the other windows is its destination score, and the negative of that is its
source score. Background servers that always send more than they receive are cancelled by the
baseline; a backup that happens to run in the same windows is the honest confounder.

Callers: ``attacks.pipeline``, ``attacks.live`` (current guess), the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.capture import int_to_ip
from attacks.detection import Detection
from attacks.features import Windows, host_window_matrix


@dataclass
class HostRanking:
    """Hosts, best guess first, with their scores (excess bytes)."""

    source: list[tuple[str, float]]
    destination: list[tuple[str, float]]

    def to_json(self) -> dict:
        return {
            "source": [[ip, round(s, 1)] for ip, s in self.source],
            "destination": [[ip, round(s, 1)] for ip, s in self.destination],
        }


def suspect_windows(det: Detection, min_windows: int = 3, max_fraction: float = 0.25) -> np.ndarray:
    """The windows the attacker believes hold the migration: the alarmed ones, or, without any
    alarm or when alarms cover more than ``max_fraction`` of the capture (a detector that alarms
    everywhere says nothing about where), the ``max(min_windows, 5 %)`` highest-scoring ones (an
    attacker must still guess)."""
    n = len(det.scores)
    if det.alarms.any() and det.alarms.mean() <= max_fraction:
        return det.alarms.copy()
    sel = np.zeros(n, dtype=bool)
    sel[np.argsort(-det.scores, kind="stable")[: max(min_windows, int(0.05 * n))]] = True
    return sel


def rank_hosts(
    packets: np.ndarray,
    windows: Windows,
    suspect: np.ndarray,
    candidates: set[int] | None = None,
) -> HostRanking:
    """Rank hosts by excess net inflow (destination) and outflow (source) in ``suspect`` windows.

    ``windows.index`` must index ``packets``. ``candidates`` (integer addresses) restricts the
    ranking to hosts the attacker believes are real (e.g. from an ARP sweep).
    """
    hosts, out, inn = host_window_matrix(packets, windows)
    net = inn - out
    normal = ~suspect
    base = np.median(net[normal], axis=0) if normal.any() else np.zeros(len(hosts))
    excess = (net[suspect] - base).sum(axis=0)
    keep = np.ones(len(hosts), dtype=bool)
    if candidates is not None:
        keep = np.isin(hosts, np.array(sorted(candidates), dtype=np.uint32))
    ips = [int_to_ip(h) for h in hosts[keep]]
    ex = excess[keep]
    dst_order = np.argsort(-ex, kind="stable")
    src_order = np.argsort(ex, kind="stable")
    return HostRanking(
        source=[(ips[i], float(-ex[i])) for i in src_order],
        destination=[(ips[i], float(ex[i])) for i in dst_order],
    )
