"""``stealth-mtd attack analyze``: score the attackers of a run from its pcaps.

    stealth-mtd attack analyze --run RUN --out RUN/metrics-again.json
    stealth-mtd attack analyze --pcap-dir RUN/pcaps --ground-truth RUN/ground_truth.json \\
        --out RUN/attack_metrics.json [--details RUN/attack_details.json] [--window 1.0]

With ``--run``, the ground truth is ``RUN/ground_truth.json``, each trial's pcaps are the ones
its ``"pcaps"`` field names (``{"switch-e1": "pcaps/switch-e1-direct-0.pcap", "global": ...}``,
paths relative to RUN; ``switch-e1`` becomes the attacker ``switch:e1``), and the settings are
the ones the run's own analysis used, from ``RUN/analysis.json`` (window, seed, candidate hosts,
vantage points, the detection label's span; ``attacks.pipeline.AnalysisSettings``): the output is
the run's ``metrics.json``, written again, identical. ``--window``, ``--seed``, ``--span`` and
``--hosts-only`` given explicitly override it (and then the output differs, as asked). A run folder
without ``analysis.json`` (an interrupted run) is analysed with the defaults, said on stderr.

Otherwise pcaps are named ``trial<N>-<vantage>.pcap`` (or ``.pcapng``), e.g. ``trial3-s1.pcap``:
vantage ``s1`` becomes the attacker ``switch:s1``; a vantage named ``global``/``all`` is the
global passive adversary, and a trial with several switch pcaps also gets a ``global`` attacker
made of their union. With a single trial in the ground truth the ``trial<N>`` prefix may be left
out; the output is the attackers' metrics of ``attacks.pipeline.analyze_run``.
``--hosts-only`` restricts the rankings to the ground truth's host list (the attacker is then
granted the tenant's address list, e.g. from an ARP sweep).

``main(argv)`` returns 0 on success, 2 on bad arguments or inputs. ``--details`` writes what each
attacker concluded (window scores, rankings, relay graphs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from attacks.capture import Capture, int_to_ip, ip_to_int, read_pcap
from attacks.truth import SPANS, RunTruth, TrialTruth, TruthError, Vantage, load_truth

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
    a.add_argument("--window", type=float, help="window length, seconds (default 1.0, or the "
                   "run's analysis.json)")
    a.add_argument(
        "--hosts-only",
        action="store_true",
        help="rank only the ground truth's hosts (grants the attacker the host list)",
    )
    a.add_argument("--seed", type=int, help="models' and intervals' seed (default 0, or the run's)")
    a.add_argument("--span", choices=list(SPANS), help="the span of the migration that labels "
                   "detection windows (default migration, or the run's)")
    return p


def _candidates(truths: dict[int, TrialTruth]) -> list[str]:
    return [int_to_ip(i) for i in sorted({ip_to_int(h.ip) for t in truths.values()
                                          for h in t.hosts})]


def run_folder_command(args: argparse.Namespace, run: RunTruth) -> int:
    """``--run DIR`` with the pcaps its ground truth names: the run's metrics.json again."""
    from attacks.pipeline import (
        AnalysisSettings,
        analyze_folder,
        load_run_captures,
        metrics_text,
        read_settings,
    )

    try:
        settings = read_settings(args.run)
    except ValueError as exc:
        print(f"error: {args.run}/analysis.json: {exc}", file=sys.stderr)
        return 2
    if settings is None:
        settings = AnalysisSettings(scenario=run.scenario, seed=run.seed or 0)
        print(f"note: {args.run} has no analysis.json: window {settings.window_s} s, seed "
              f"{settings.seed}, every address a candidate, every pcap", file=sys.stderr)
    if args.window is not None:
        settings.window_s = args.window
    if args.seed is not None:
        settings.seed = args.seed
    if args.span is not None:
        settings.span = args.span
    if args.hosts_only:
        settings.candidates = _candidates(run.by_trial())
    for t in run.trials:
        if t.status != "done":  # a failed migration has no migration to find
            print(f"note: trial {t.trial} skipped (status {t.status})", file=sys.stderr)
    try:
        caps = load_run_captures(args.run, [t for t in run.trials if t.status == "done"],
                                 settings.vantage)
    except Exception as exc:  # scapy raises its own exception types for bad files
        print(f"error: cannot read the pcaps of {args.run}: {exc}", file=sys.stderr)
        return 2
    ra = analyze_folder(args.run, run, settings, captures=caps)
    _write(args, ra.metrics, ra.results, metrics_text(ra.metrics))
    return 0


def _write(args: argparse.Namespace, metrics: dict, results: list, text: str) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.details:
        args.details.write_text(json.dumps([r.to_json() for r in results], indent=1))
    for mode, entry in metrics["modes"].items():
        for name, m in entry.get("attackers", entry).items():
            auc = m["detection_auc"]
            top1 = m["destination_top1"]
            print(
                f"{mode:8s} {name:16s} auc={auc if auc is None else round(auc, 3)} "
                f"dest_top1={top1 if top1 is None else round(top1, 3)} "
                f"trials={m['n_trials']}"
            )


def analyze_command(args: argparse.Namespace) -> int:
    from attacks.pipeline import analyze_run

    gt_path = args.ground_truth or (args.run / "ground_truth.json" if args.run else None)
    if gt_path is None:
        print("error: give --run or --ground-truth", file=sys.stderr)
        return 2
    try:
        run = load_truth(gt_path)
    except (OSError, TruthError) as exc:
        print(f"error: cannot read ground truth {gt_path}: {exc}", file=sys.stderr)
        return 2
    if (args.run and not args.pcap and not args.pcap_dir
            and any(t.pcaps for t in run.trials)):
        return run_folder_command(args, run)
    truths = run.by_trial()
    failed = [i for i, t in truths.items() if t.status != "done"]
    for i in failed:  # a failed migration has no migration to find; the runner reports it
        print(f"note: trial {i} skipped (status {truths.pop(i).status})", file=sys.stderr)
    if args.run and not args.pcap and not args.pcap_dir:
        args.pcap_dir = args.run / "pcaps"  # a run folder whose ground truth names no pcap
    paths = list(args.pcap)
    if args.pcap_dir:
        paths += sorted(
            p for p in args.pcap_dir.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap")
        )
    if not paths:
        print("error: no pcap given (--run, --pcap or --pcap-dir)", file=sys.stderr)
        return 2
    named: list[tuple[int, Vantage, Path]] = []
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
        candidates = {ip_to_int(ip) for ip in _candidates(truths)}
    results, records, metrics = analyze_run(
        captures, truths, window_s=1.0 if args.window is None else args.window,
        candidates=candidates, seed=args.seed or 0, span=args.span or "migration",
    )
    _write(args, metrics, results, json.dumps(metrics, indent=1))
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
