"""The ``stealth-mtd`` command: run, demo, bench, clean.

Each subcommand is a thin shell over a module that does the work.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stealth-mtd", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("clean", help="remove what a killed run left behind (needs root)")
    args = parser.parse_args(argv)
    if args.cmd == "clean":
        from experiments.clean import main as clean_main

        return clean_main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
