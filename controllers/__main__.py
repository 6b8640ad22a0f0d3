"""Start the controller: ``python -m controllers --topology FILE [--mgmt SOCK] [--port 6653]``.

os-ken 4 ships no ``osken-manager``; this is the launch recipe from DESIGN.md: configure
``os_ken.cfg.CONF``, then ``AppManager.run_apps`` with our app and os-ken's OpenFlow handler.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controllers", description=__doc__)
    ap.add_argument("--topology", required=True, help="JSON from topologies.base.describe")
    ap.add_argument("--mgmt", default="/tmp/stealth-mtd/mgmt.sock", help="management socket")
    ap.add_argument("--port", type=int, default=6653, help="OpenFlow TCP port")
    ap.add_argument("--seed", type=int, default=None, help="seed for relay path choices")
    ap.add_argument("--log", default=None, help="log file (default: stderr)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.exists(args.topology):
        print(f"controller: topology file {args.topology} not found", file=sys.stderr)
        return 2
    logging.basicConfig(
        filename=args.log, level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from controllers import app

    app.SETTINGS.topology = args.topology
    app.SETTINGS.mgmt = args.mgmt
    app.SETTINGS.seed = args.seed
    cfg.CONF(args=["--ofp-tcp-listen-port", str(args.port)], project="os_ken")
    AppManager.run_apps(["controllers.app", "os_ken.controller.ofp_handler"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
