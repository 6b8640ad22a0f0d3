"""Alg 1, the monitor of one host: watch it from inside its namespace and report anomalies.

One process per host, started in the Mininet host next to its agent::

    python -m hosts.monitor --host h1 --ip 10.0.0.1 --mgmt CONTROLLER_SOCK --keys KEYFILE \\
        [--interval 1.0] [--train-s 30] [--report aware|unaware|none] [--log-json FILE]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from hosts.monitor.daemon import Monitor, run
from hosts.protocol.auth import KeyRing

log = logging.getLogger("stealth_mtd.monitor")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hosts.monitor", description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--mgmt", help="the controller's management socket")
    p.add_argument("--keys", help="this monitor's key file (0600; needed with --mgmt)")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--train-s", type=float, default=30.0)
    p.add_argument("--grace-s", type=float, default=10.0)
    p.add_argument("--report", choices=["aware", "unaware", "none"], default="aware")
    p.add_argument("--rearm-s", type=float, default=None,
                   help="report again this long after a report (default: report once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--log-json", help="append one JSON line per interval here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if a.log_json:
        Path(a.log_json).parent.mkdir(parents=True, exist_ok=True)
    cred = KeyRing.load(a.keys).credential() if a.keys else None
    if a.mgmt and (cred is None or cred.identity != f"monitor:{a.host}"):
        print(f"monitor: --mgmt needs --keys with the keys of monitor:{a.host}", file=sys.stderr)
        return 2
    mon = Monitor(a.host, a.ip, a.mgmt, a.train_s, a.report, a.seed, a.grace_s, a.log_json,
                  rearm_s=a.rearm_s, cred=cred)
    log.info("event=monitoring host=%s ip=%s interval=%.2f train_s=%.0f report=%s", a.host, a.ip,
             a.interval, a.train_s, a.report)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(mon, a.interval, a.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
