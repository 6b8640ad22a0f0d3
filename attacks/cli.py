"""``stealth-mtd attack analyze``: score the passive attackers of a run from its pcaps.

    stealth-mtd attack analyze --run RUN --out RUN/attack_metrics.json
    stealth-mtd attack analyze --pcap-dir RUN/pcaps --ground-truth RUN/ground_truth.json \\
        --out RUN/attack_metrics.json [--details RUN/attack_details.json] [--window 1.0]

With ``--run``, the ground truth is ``RUN/ground_truth.json`` and each trial's pcaps are the ones
its ``"pcaps"`` field names (``{"switch-e1": "pcaps/switch-e1-direct-0.pcap", "global": ...}``,
paths relative to RUN; ``switch-e1`` becomes the attacker ``switch:e1``). Otherwise pcaps are
named ``trial<N>-<vantage>.pcap`` (or ``.pcapng``), e.g. ``trial3-s1.pcap``: vantage
``s1`` becomes the attacker ``switch:s1``; a vantage named ``global``/``all`` is the global
passive adversary, and a trial with several switch pcaps also gets a ``global`` attacker made of
their union. With a single trial in the ground truth the ``trial<N>`` prefix may be left out.
``--hosts-only`` restricts the rankings to the ground truth's host list (the attacker is then
granted the tenant's address list, e.g. from an ARP sweep).

``main(argv)`` returns 0 on success, 2 on bad arguments or inputs. The output is the metrics JSON
of ``attacks.pipeline.analyze_run``; ``--details`` writes what each attacker concluded (window
scores, rankings, relay graphs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from attacks.capture import Capture, ip_to_int, read_pcap
from attacks.truth import TruthError, Vantage, load_truth

_TRIAL = re.compile(r"trial[-_]?(\d+)[-_.]?", re.IGNORECASE)


def parse_pcap_name(path: Path) -> tuple[int | None, Vantage]:
    """``trial3-s1.pcap`` → ``(3, switch:s1)``; ``s1.pcap`` → ``(None, switch:s1)``;
    ``trial3-all.pcap`` or ``trial3.pcap`` → ``(3, global)``."""
    stem = path.name.split(".")[0]
    m = _TRIAL.search(stem)
    if not m:
        return None, Vantage.from_stem(stem)
    vantage = (stem[: m.start()] + stem[m.end() :]).strip("-_.") or "global"
    return int(m.group(1)), Vantage.from_stem(vantage)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stealth-mtd attack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("analyze", help="score passive attackers on a run's pcaps")
    a.add_argument("--pcap", action="append", default=[], type=Path, help="a pcap (repeatable)")
    a.add_argument("--pcap-dir", type=Path, help="a folder of trial<N>-<vantage>.pcap files")
    a.add_argument("--run", type=Path, help="a run folder (ground_truth.json naming its pcaps)")
    a.add_argument("--ground-truth", type=Path, help="default: RUN/ground_truth.json")
    a.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    a.add_argument("--details", type=Path, help="per-attacker conclusions JSON to write")
    a.add_argument("--window", type=float, default=1.0, help="window length, seconds")
    a.add_argument(
        "--hosts-only",
        action="store_true",
        help="rank only the ground truth's hosts (grants the attacker the host list)",
    )
    a.add_argument("--seed", type=int, default=0)
    return p


def analyze_command(args: argparse.Namespace) -> int:
    from attacks.pipeline import analyze_run

    gt_path = args.ground_truth or (args.run / "ground_truth.json" if args.run else None)
    if gt_path is None:
        print("error: give --run or --ground-truth", file=sys.stderr)
        return 2
    try:
        truths = load_truth(gt_path).by_trial()
    except (OSError, TruthError) as exc:
        print(f"error: cannot read ground truth {gt_path}: {exc}", file=sys.stderr)
        return 2
    failed = [i for i, t in truths.items() if t.status != "done"]
    for i in failed:  # a failed migration has no migration to find; the runner reports it
        print(f"note: trial {i} skipped (status {truths.pop(i).status})", file=sys.stderr)
    named: list[tuple[int, Vantage, Path]] = []
    if args.run and not args.pcap and not args.pcap_dir:
        for trial, t in truths.items():
            for vantage, rel in t.vantage_pcaps().items():
                named.append((trial, vantage, args.run / rel))
        if not named:
            args.pcap_dir = args.run / "pcaps"
    paths = list(args.pcap)
    if args.pcap_dir:
        paths += sorted(
            p for p in args.pcap_dir.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap")
        )
    if not paths and not named:
        print("error: no pcap given (--run, --pcap or --pcap-dir)", file=sys.stderr)
        return 2
    for path in paths:
        trial, vantage = parse_pcap_name(path)
        if trial in failed:
            continue
        if trial is None:
            if len(truths) != 1:
                print(
                    f"error: {path.name}: name it trial<N>-<vantage>.pcap "
                    f"(ground truth has {len(truths)} trials)",
                    file=sys.stderr,
                )
                return 2
            trial = next(iter(truths))
        named.append((trial, vantage, path))
    captures: dict[int, dict[Vantage, Capture]] = {}
    for trial, vantage, path in named:
        try:
            captures.setdefault(trial, {})[vantage] = read_pcap(path, vantage=str(vantage))
        except Exception as exc:  # scapy raises its own exception types for bad files
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    candidates = None
    if args.hosts_only:
        candidates = {ip_to_int(h.ip) for t in truths.values() for h in t.hosts}
    results, records, metrics = analyze_run(
        captures, truths, window_s=args.window, candidates=candidates, seed=args.seed
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(metrics, indent=1))
    if args.details:
        args.details.write_text(json.dumps([r.to_json() for r in results], indent=1))
    for mode, attackers in metrics["modes"].items():
        for name, m in attackers.items():
            auc = m["detection_auc"]
            top1 = m["destination_top1"]
            print(
                f"{mode:8s} {name:16s} auc={auc if auc is None else round(auc, 3)} "
                f"dest_top1={top1 if top1 is None else round(top1, 3)} "
                f"trials={m['n_trials']}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` may start with ``analyze`` (or ``attack analyze``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["attack"]:
        argv = argv[1:]
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.cmd == "analyze":
        return analyze_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
