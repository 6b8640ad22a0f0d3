"""The demo's live attacker: scapy's AsyncSniffer on a compromised switch's mirror port.

Runs inside the attacker host (``python -m experiments.live_attacker --iface x1-eth0 --out F``)
and appends the attacker's current guess (``attacks.live.LiveGuess``) to ``F`` as one JSON line
per closed window, so the demo can show the guess as it forms. It sees only the mirrored
packets. The scored numbers of a run come from the tcpdump pcaps, not from this process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from attacks.live import LiveDetector, LiveGuess, live_capture


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.live_attacker", description=__doc__)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--window", type=float, default=1.0)
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    out = open(args.out, "a", buffering=1)
    det = LiveDetector(window_s=args.window, warmup_windows=5)

    def on_guess(g: LiveGuess) -> None:
        out.write(json.dumps({
            "time": g.window_end, "alarm": g.alarm, "score": g.score, "cusum": g.cusum,
            "alarm_since": g.alarm_since, "source": g.source, "destination": g.destination,
            "top_destinations": g.top_destinations[:3], "windows": g.windows_seen,
            "packets": det.packets_seen}) + "\n")

    started = threading.Event()
    sniffer = live_capture(det, iface=args.iface, on_guess=on_guess, bpf="ip",
                           started_callback=started.set)
    started.wait(5)
    while not stop.wait(0.5):
        pass
    sniffer.stop()
    time.sleep(0.1)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
