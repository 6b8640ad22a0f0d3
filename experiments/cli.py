"""The ``stealth-mtd`` command: run, merge, frontier, compare, demo, monitor-eval, attack, bench,
clean.

Each subcommand is a thin shell over the module that does the work; root is checked here, once,
with a message that says what to do (``clean`` checks it itself, ``experiments.clean.main``).
"""

from __future__ import annotations

import argparse
import os
import sys


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        print(f"stealth-mtd {what} runs Mininet and needs root: sudo stealth-mtd {what}",
              file=sys.stderr)
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    from experiments.testbed import Terminated

    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except Terminated:  # `run` and `demo` say so themselves, with their partial results
        print("terminated (SIGTERM): testbed torn down", file=sys.stderr)
        return 143


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stealth-mtd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("clean", add_help=False,
                   help="remove what a killed run left behind (needs root; clean --force)")
    sub.add_parser("demo", help="attacker versus defender: a migration in each arm (direct, "
                                         "profile, cover), live")
    sub.add_parser("monitor-eval", add_help=False,
                   help="the monitor (Alg 1): detection delay, TPR/FPR, false alarms in migrations")
    sub.add_parser("attack", add_help=False,
                   help="re-run the attackers on a run folder: attack analyze --run DIR --out F")
    sub.add_parser("run", help="run a scenario: trials x modes, attackers, results folder",
                   add_help=False)
    sub.add_parser("merge", add_help=False,
                   help="combine the shard folders of `run --shard I/N` into one analysed run "
                        "folder: merge DIR... --out DIR")
    sub.add_parser("frontier", add_help=False,
                   help="the trade-off frontier (AUC and top-1 against time and bandwidth "
                        "overhead) of sweep run folders: frontier RUN... [--out DIR]")
    sub.add_parser("compare", add_help=False,
                   help="two run folders side by side (timings, roles, every figure's "
                        "interval and whether they overlap): compare A B [--check]")
    b = sub.add_parser("bench", help="benchmarks: figures next to their reference")
    b.add_argument("what", choices=["net", "protocol", "attack", "vm"])
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "clean":
        from experiments.clean import main as clean_main

        return clean_main(rest)
    if args.cmd == "run":
        _need_root("run")
        from experiments.runner import main as run_main

        return run_main(rest)
    if args.cmd == "merge":
        from experiments.merge import main as merge_main

        return merge_main(rest)
    if args.cmd == "frontier":
        from experiments.frontier import main as frontier_main

        return frontier_main(rest)
    if args.cmd == "compare":
        from experiments.compare import main as compare_main

        return compare_main(rest)
    if args.cmd == "attack":
        from attacks.cli import main as attack_main

        return attack_main(rest)
    if args.cmd == "monitor-eval":
        _need_root("monitor-eval")
        from experiments.monitor_eval import main as monitor_main

        return monitor_main(rest)
    if args.cmd == "demo":
        _need_root("demo")
        from experiments.demo import main as demo_main

        return demo_main(rest)
    if args.cmd == "bench":
        if args.what == "net":
            _need_root("bench net")
            from experiments.bench_net import main as bench_main
        elif args.what == "vm":
            _need_root("bench vm")
            from experiments.bench_vm import main as bench_main
        elif args.what == "attack":
            from experiments.bench_attack import main as bench_main
        else:
            from experiments.bench_protocol import main as bench_main
        return bench_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
