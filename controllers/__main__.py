"""Start the controller: ``python -m controllers --topology FILE --mgmt SOCK --secret-file F
[--port 6653]``.

``--secret-file`` is the run secret (a 0600 file in the run's private folder) that keys the
management plane; ``STEALTH_MTD_TEST_FAULTS=1`` in the environment is the test-only switch that
admits the ``test`` identity and fault injection (the runner never sets it).

os-ken 4 ships no ``osken-manager``; this is the launch recipe from DESIGN.md: configure
``os_ken.cfg.CONF``, then ``AppManager.run_apps`` with our app and os-ken's OpenFlow handler.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hosts.protocol.auth import TEST_FAULTS_ENV, AuthError, new_secret, private_dir, write_private


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m controllers", description=__doc__)
    ap.add_argument("--topology", required=True, help="JSON from topologies.base.describe")
    ap.add_argument("--mgmt", required=True, help="management socket (in a private folder)")
    ap.add_argument("--secret-file", help="the run secret (0600; default: `secret` beside the "
                    "socket, made if missing; the socket's folder must then be 0700 and ours)")
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

    if args.secret_file is None:
        try:
            folder = private_dir(os.path.dirname(os.path.abspath(args.mgmt)))
        except AuthError as exc:
            print(f"controller: {exc}", file=sys.stderr)
            return 2
        args.secret_file = str(folder / "secret")
        if not os.path.exists(args.secret_file):
            write_private(args.secret_file, new_secret())

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from controllers import app

    app.SETTINGS.topology = args.topology
    app.SETTINGS.mgmt = args.mgmt
    app.SETTINGS.secret_file = args.secret_file
    app.SETTINGS.test_faults = os.environ.get(TEST_FAULTS_ENV) == "1"
    app.SETTINGS.seed = args.seed
    cfg.CONF(args=["--ofp-tcp-listen-port", str(args.port)], project="os_ken")
    AppManager.run_apps(["controllers.app", "os_ken.controller.ofp_handler"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
