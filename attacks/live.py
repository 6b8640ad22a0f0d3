"""Live mode: the attacker's guess as it forms, for the demo.

``LiveDetector`` takes packets one at a time (table rows or scapy packets) and, each time a window
closes, recomputes that window's features over a rolling history, scores it against the history
before it (robust z, the change statistic of ``attacks.detection``), runs the CUSUM, and ranks
hosts by excess net bytes over the alarmed windows (or the most recent ones). ``live_capture``
wraps scapy's ``AsyncSniffer`` (``started_callback`` avoids the race between starting the sniffer
and the traffic) and hands every packet to a detector, optionally saving a pcap as it goes;
``AsyncSniffer(offline=...)`` replays a pcap through the same path without root.

Callers: the demo (``experiments``), the tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.capture import packet_record, records_to_array
from attacks.detection import CUSUM_DRIFT, CUSUM_THRESHOLD, change_statistic
from attacks.features import make_windows, robust_z, window_features
from attacks.identify import rank_hosts


@dataclass
class LiveGuess:
    """The attacker's state after one closed window."""

    window_end: float
    score: float
    cusum: float
    alarm: bool
    alarm_since: float | None
    source: str | None
    destination: str | None
    top_sources: list[tuple[str, float]] = field(default_factory=list)
    top_destinations: list[tuple[str, float]] = field(default_factory=list)
    windows_seen: int = 0

    def line(self) -> str:
        """One line for a terminal."""
        state = "ALARM" if self.alarm else "quiet"
        return (
            f"{state} score={self.score:.1f} cusum={self.cusum:.1f} "
            f"source={self.source or '?'} destination={self.destination or '?'}"
        )


class LiveDetector:
    """Incremental change detection and host ranking over fixed windows."""

    def __init__(
        self,
        window_s: float = 1.0,
        history_s: float = 60.0,
        warmup_windows: int = 8,
        drift: float = CUSUM_DRIFT,
        threshold: float = CUSUM_THRESHOLD,
        recent_windows: int = 3,
    ) -> None:
        self.window_s = window_s
        self.history_s = history_s
        self.warmup = warmup_windows
        self.drift, self.threshold = drift, threshold
        self.recent = recent_windows
        self.rows: deque[tuple] = deque()
        self.window_end: float | None = None
        self.cusum = 0.0
        self.alarm_since: float | None = None
        self.flags: deque[tuple[float, bool]] = deque()  # (window start, alarmed)
        self.closed = 0
        self.guess: LiveGuess | None = None
        self.packets_seen = 0

    def feed(self, row: tuple) -> LiveGuess | None:
        """One table row (see ``attacks.capture``); returns a guess when windows closed."""
        if not row or row[0] == "arp":
            return None
        ts = float(row[0])
        self.packets_seen += 1
        out = None
        if self.window_end is None:
            self.window_end = ts + self.window_s
        while ts >= self.window_end:
            out = self._close()
        self.rows.append(row)
        return out

    def feed_packet(self, pkt: Any) -> LiveGuess | None:
        """A scapy packet as ``sniff`` hands it out."""
        rec = packet_record(pkt)
        return self.feed(rec) if rec is not None else None

    def flush(self) -> LiveGuess | None:
        """Close the current window (at the end of a capture)."""
        return self._close() if self.window_end is not None and self.rows else None

    def _close(self) -> LiveGuess:
        assert self.window_end is not None
        end = self.window_end
        self.window_end = end + self.window_s
        start_hist = end - self.history_s
        while self.rows and float(self.rows[0][0]) < start_hist:
            self.rows.popleft()
        while self.flags and self.flags[0][0] < start_hist:
            self.flags.popleft()
        self.closed += 1
        packets = records_to_array(list(self.rows))
        n_windows = max(1, int(round((end - max(start_hist, self._first_ts(end))) / self.window_s)))
        t0 = end - n_windows * self.window_s
        packets = packets[packets["ts"] >= t0]
        if not len(packets):
            self.flags.append((end - self.window_s, False))
            self.guess = LiveGuess(
                end, 0.0, self.cusum, False, self.alarm_since, None, None, windows_seen=self.closed
            )
            return self.guess
        w = make_windows(packets, self.window_s, t0=t0, t1=end - 0.5 * self.window_s)
        X = window_features(packets, w)
        score = 0.0
        if len(X) > self.warmup:
            Z = robust_z(X, reference=X[:-1])
            score = float(change_statistic(Z[-1:])[0])
            self.cusum = max(0.0, self.cusum + score - self.drift)
        alarm = self.cusum > self.threshold
        if alarm and self.alarm_since is None:
            self.alarm_since = end
        if not alarm:
            self.alarm_since = None
        self.flags.append((end - self.window_s, alarm))
        starts = w.starts
        flagged = {s for s, a in self.flags if a}
        suspect = np.array([any(abs(s - f) < 1e-6 for f in flagged) for s in starts])
        if not suspect.any():
            suspect = np.zeros(len(starts), dtype=bool)
            suspect[-self.recent :] = True
        ranking = rank_hosts(packets, w, suspect)
        self.guess = LiveGuess(
            window_end=end,
            score=score,
            cusum=self.cusum,
            alarm=alarm,
            alarm_since=self.alarm_since,
            source=ranking.source[0][0] if alarm and ranking.source else None,
            destination=ranking.destination[0][0] if alarm and ranking.destination else None,
            top_sources=ranking.source[:3],
            top_destinations=ranking.destination[:3],
            windows_seen=self.closed,
        )
        return self.guess

    def _first_ts(self, end: float) -> float:
        return float(self.rows[0][0]) if self.rows else end - self.window_s


def live_capture(
    detector: LiveDetector,
    iface: str | None = None,
    on_guess: Callable[[LiveGuess], None] | None = None,
    bpf: str | None = None,
    pcap_out: str | None = None,
    started_callback: Callable[[], None] | None = None,
    **sniffer_kwargs: Any,
):
    """Start an ``AsyncSniffer`` feeding ``detector``; returns the started sniffer.

    ``on_guess`` is called each time a window closes. Stop with ``sniffer.stop()``, then call
    ``detector.flush()``. ``sniffer_kwargs`` go to ``AsyncSniffer`` (e.g. ``offline=PCAP``).
    """
    from scapy.sendrecv import AsyncSniffer
    from scapy.utils import PcapWriter

    writer = PcapWriter(pcap_out, sync=False) if pcap_out else None

    def prn(pkt: Any) -> None:
        if writer is not None:
            writer.write(pkt)
        g = detector.feed_packet(pkt)
        if g is not None and on_guess is not None:
            on_guess(g)

    kwargs = dict(prn=prn, store=False, filter=bpf, started_callback=started_callback)
    if iface is not None:
        kwargs["iface"] = iface
    kwargs.update(sniffer_kwargs)
    sniffer = AsyncSniffer(**kwargs)
    sniffer.start()
    if writer is not None:
        sniffer.pcap_writer = writer  # the caller closes it after stop()
    return sniffer
