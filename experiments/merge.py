"""``stealth-mtd merge DIR... --out DIR``: shard folders (``stealth-mtd run --shard I/N``) into
one run folder, analysed once over all its trials.

The merged folder is what a single-machine run of the same scenario and seeds writes: per sweep
point (the folder itself without a sweep) ``scenario.json``, ``ground_truth.json`` with every
trial in the single-machine order (through ``attacks.truth``), ``pcaps/``, ``logs/``,
``timings.csv``, then ``experiments.runner.analyse`` — the runner's own analysis, metrics, plots
and report — and for a sweep ``sweep.md``/``sweep.json``; ``merged.json`` says which shard
folders it came from. Pcaps and logs are hard-linked when the file system allows, else copied.

It refuses, saying which: a folder that is not a shard folder (or not a run at all), shards of
different scenarios or seeds (naming the fields), of different splits, a shard given twice,
missing shards, a shard that did not finish its trials (or has trials not its own), a pcap its
ground truth names but that is missing, and an ``--out`` that is not empty.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attacks.truth import RunTruth, TrialTruth, TruthError, load_truth, write_truth
from experiments import timings
from experiments.scenario import Scenario, expand
from experiments.shard import RECORD, ShardError, ShardRecord, read_record

SCHEMA = "stealth-mtd/merged/1"
# what a point folder holds that the merge writes itself (the rest is copied from a shard)
_WRITTEN = {"scenario.json", "ground_truth.json", RECORD, timings.FILE, "timings.json",
            "metrics.json", "metrics.csv", "costs.csv", "report.md", "sweep.md", "sweep.json",
            "merged.json", "arms.json", "arms.csv", "frontier.png", "frontier.md",
            "frontier.json"}
_TREES = ("pcaps", "logs")


class MergeError(ValueError):
    """The shard folders cannot be merged; the message says which and why."""


def _flat(d: Any, key: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{key}.{k}" if key else str(k)))
        return out
    return {key: d}


def check_shards(records: list[ShardRecord]) -> None:
    """The records are all the shards of one split of one scenario, each once."""
    if not records:
        raise MergeError("no shard folders given")
    first = records[0]
    for r in records[1:]:
        if r.data != first.data:
            a, b = _flat(first.data), _flat(r.data)
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            shown = "; ".join(f"{k} = {b.get(k)!r} there, {a.get(k)!r} in {first.folder}"
                              for k in diff[:4])
            raise MergeError(f"{r.folder} is a shard of another run than {first.folder} "
                             f"(different scenario or seeds): {shown}")
        if r.shard.count != first.shard.count:
            raise MergeError(f"shards of different splits: {first.folder} is shard "
                             f"{first.shard}, {r.folder} is shard {r.shard}")
    seen: dict[int, Path] = {}
    for r in records:
        if r.shard.index in seen:
            raise MergeError(f"shard {r.shard} given twice (overlapping): {seen[r.shard.index]} "
                             f"and {r.folder}")
        seen[r.shard.index] = r.folder
    n = first.shard.count
    missing = [f"{i}/{n}" for i in range(n) if i not in seen]
    if missing:
        have = ", ".join(f"{i}/{n}" for i in sorted(seen))
        raise MergeError(f"missing shard(s) {', '.join(missing)} of {n} (given: {have})")


def _point_folder(root: Path, label: str) -> Path:
    return root / label if label else root


def shard_truth(r: ShardRecord, label: str) -> RunTruth | None:
    """The ground truth of shard ``r`` for sweep point ``label``, checked to hold exactly the
    shard's trials of it (None when the shard has none of this point)."""
    mine = {j.trial_id: j for j in r.mine if j.label == label}
    if not mine:
        return None
    path = _point_folder(r.folder, label) / "ground_truth.json"
    where = f"{r.folder} (shard {r.shard})"
    point = f" of point {label!r}" if label else ""
    try:
        truth = load_truth(path)
    except FileNotFoundError:
        raise MergeError(f"{where} has no {path.relative_to(r.folder)}: it ran none of its "
                         f"{len(mine)} trial(s){point} (failed, or still running?)") from None
    except (OSError, TruthError) as exc:
        raise MergeError(f"{where}: {exc}") from None
    have = {t.trial: t for t in truth.trials}
    lacking = [str(mine[i]) for i in sorted(set(mine) - set(have))]
    if lacking:
        raise MergeError(f"{where} did not finish: no {', '.join(lacking)} (re-run it with "
                         f"`stealth-mtd run ... --shard {r.shard}`)")
    foreign = sorted(set(have) - set(mine))
    if foreign:
        raise MergeError(f"{where} holds trial id(s) {foreign}{point} that are not of this "
                         "shard")
    for i, t in have.items():
        if (t.mode, t.trial_in_mode) != (mine[i].mode, mine[i].trial):
            raise MergeError(f"{where}: trial id {i}{point} is {t.mode} trial "
                             f"{t.trial_in_mode}, its shard list says {mine[i]}")
        for rel in t.pcaps.values():
            if not (_point_folder(r.folder, label) / rel).is_file():
                raise MergeError(f"{where}: trial {i}{point} names the pcap {rel}, which is "
                                 "missing")
    return truth


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    """``src`` into ``dst``; a file both shards have is an overlap."""
    if not src.is_dir():
        return
    for f in src.rglob("*"):
        if not f.is_dir() and (dst / f.relative_to(src)).exists():
            raise MergeError(f"{f} is also in another shard: overlapping shard folders")
    shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=_link_or_copy, symlinks=True)


def merge_point(records: list[ShardRecord], label: str, sc: Scenario,
                dst: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Sweep point ``label`` of every shard into ``dst``, then its analysis; returns the
    metrics (None when the point has no trials) and its timing rows."""
    from experiments.runner import analyse

    parts = [(r, t) for r in records if (t := shard_truth(r, label)) is not None]
    if not parts:
        return None, []
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "scenario.json").write_text(json.dumps(asdict(sc), indent=1))
    src0 = _point_folder(parts[0][0].folder, label)
    for f in sorted(src0.iterdir()):  # anything else the runner keeps in a point folder
        if f.is_file() and f.name not in _WRITTEN:
            shutil.copy2(f, dst / f.name)
    trials: list[TrialTruth] = []
    rows: list[dict[str, Any]] = []
    for r, truth in parts:
        src = _point_folder(r.folder, label)
        for tree in _TREES:
            _copy_tree(src / tree, dst / tree)
        trials += truth.trials
        rows += [dict(x, analysis_s=0.0) for x in timings.read_csv(src)]
    trials.sort(key=lambda t: t.trial)
    rows.sort(key=lambda x: x["trial"])
    first = parts[0][1]
    write_truth(dst / "ground_truth.json", RunTruth(trials, first.scenario, first.seed,
                                                    dict(first.meta)))
    timings.write_csv(dst, rows)
    return analyse(dst, sc, rows), rows


def merge(folders: list[Path], out: Path) -> list[tuple[str, dict[str, Any]]]:
    """Merge the shard ``folders`` into the run folder ``out``; returns each sweep point's
    (label, metrics), like the runner's."""
    try:
        records = [read_record(Path(f)) for f in folders]
    except ShardError as exc:
        raise MergeError(str(exc)) from None
    check_shards(records)
    inputs = {r.folder.resolve() for r in records}
    o = out.resolve()
    if o in inputs or any(p in o.parents for p in inputs):
        raise MergeError(f"--out {out} is (inside) one of the shard folders: choose a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"--out {out} exists and is not an empty folder: choose a new one")
    variants = expand(records[0].scenario)
    done: list[tuple[str, dict[str, Any]]] = []
    all_rows: list[dict[str, Any]] = []
    for label, sc in variants:
        metrics, rows = merge_point(records, label, sc, _point_folder(out, label))
        all_rows += rows
        if metrics is not None:
            done.append((label, metrics))
    out.mkdir(parents=True, exist_ok=True)
    if len(variants) > 1:
        from experiments.tables import write_sweep

        write_sweep(out, done)
    timings.write_csv(out, all_rows)
    machine_s = sum(r["total_s"] for r in all_rows)
    (out / "merged.json").write_text(json.dumps({
        "schema": SCHEMA, "of": records[0].shard.count,
        "shards": {str(r.shard): str(r.folder.resolve()) for r in
                   sorted(records, key=lambda r: r.shard.index)},
        "trials": len(all_rows), "machine_s": round(machine_s, 3),
        "trials_per_machine_hour": round(timings.trials_per_hour(len(all_rows), machine_s), 2)},
        indent=1))
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd merge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path, metavar="DIR",
                    help="the shard folders (every shard of one `run --shard I/N`, once each)")
    ap.add_argument("--out", required=True, type=Path, help="the merged run folder (new)")
    args = ap.parse_args(argv)
    from rich.console import Console

    from experiments.tables import arms_table, comparison_table, cost_table, read_arms

    console = Console()
    t0 = time.monotonic()
    try:
        done = merge(args.folders, args.out)
    except MergeError as exc:
        console.print(f"[red]merge refused:[/] {exc}")
        return 2
    for label, metrics in done:
        if label:
            console.rule(label)
        console.print(comparison_table(metrics))
        console.print(cost_table(metrics))
        console.print(arms_table(read_arms(args.out / label if label else args.out)))
    rows = timings.read_csv(args.out)
    console.print(timings.table(rows))
    m = json.loads((args.out / "merged.json").read_text())
    console.print(f"{m['trials']} trials, {m['machine_s']:.0f} s of trial time on the nodes "
                  f"({m['trials_per_machine_hour']:.1f} trials per machine-hour); merged in "
                  f"{time.monotonic() - t0:.0f} s")
    console.print(f"run folder: [bold]{args.out}[/] (report.md, metrics.json, plots/, pcaps/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
