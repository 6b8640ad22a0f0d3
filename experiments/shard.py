"""Scale-out: the ordered list of trials a run expands to, the slice of it one shard runs
(``stealth-mtd run SCENARIO --shard I/N``), and the record a shard folder keeps (``shard.json``).

A run's list is every sweep point (``experiments.scenario.expand``, in its order), then every
mode, then every trial: ``Job(label, mode, trial, trial_id)`` where ``trial_id`` is the trial's
id in its point's run folder — the same id a single-machine run gives it, so its seed, pcaps and
log folders are the same. Shard ``I/N`` takes the jobs ``I, I+N, I+2N, ...`` (round-robin: the
points and modes spread evenly over the shards); ``N`` may exceed the list (empty shards).

``shard.json`` (at the top of a shard's ``--out``) holds the scenario as loaded (with the
``--trials``/``--seed`` overrides), the whole list and which shard of it this is; the merge
(``experiments.merge``) checks shards against it. Callers: ``experiments.runner``,
``experiments.merge``, the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.scenario import Scenario, expand, from_dict

SCHEMA = "stealth-mtd/shard/1"
RECORD = "shard.json"
_SHARD = re.compile(r"(\d+)/(\d+)")


class ShardError(ValueError):
    """A ``--shard`` argument or a ``shard.json`` that is wrong; the message says how."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (numbered from 0, like ``$SLURM_ARRAY_TASK_ID``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``'I/N'`` with whole numbers, ``N >= 1`` and ``0 <= I < N``."""
        m = _SHARD.fullmatch(text.strip())
        if not m:
            raise ShardError(f"--shard {text!r}: expected I/N with whole numbers, e.g. 0/4 "
                             "(shard I of N, numbered from 0)")
        index, count = int(m[1]), int(m[2])
        if count < 1:
            raise ShardError(f"--shard {text}: N must be >= 1")
        if index >= count:
            raise ShardError(f"--shard {text}: I must be < N (the shards of {count} are "
                             f"0/{count} .. {count - 1}/{count})")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Job:
    """One trial of a run: sweep point ``label`` ('' without a sweep), ``mode``, the trial's
    number in its mode and its id in the point's run folder."""

    label: str
    mode: str
    trial: int
    trial_id: int

    def __str__(self) -> str:
        point = f"point {self.label!r} " if self.label else ""
        return f"{point}{self.mode} trial {self.trial} (id {self.trial_id})"


def jobs(variants: list[tuple[str, Scenario]]) -> list[Job]:
    """The ordered trial list of a run over ``expand``'s variants (the single-machine order)."""
    out = []
    for label, sc in variants:
        point = [(m, t) for m in sc.modes for t in range(sc.trials)]
        out += [Job(label, m, t, i) for i, (m, t) in enumerate(point)]
    return out


def select(all_jobs: list[Job], shard: Shard) -> list[Job]:
    """The jobs of ``shard``: round-robin over the ordered list."""
    return all_jobs[shard.index::shard.count]


def scenario_record(sc: Scenario) -> dict[str, Any]:
    """``sc`` as plain data, without where its file was (shards on other machines may have it
    at another path)."""
    d = asdict(sc)
    d.pop("source_file", None)
    return d


def write_record(out: Path, sc: Scenario, shard: Shard) -> None:
    """``out/shard.json``: the scenario, the whole list and which shard of it ``out`` holds."""
    all_jobs = jobs(expand(sc))
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORD).write_text(json.dumps({
        "schema": SCHEMA, "shard": shard.index, "of": shard.count,
        "scenario": scenario_record(sc), "source_file": sc.source_file,
        "jobs": [[j.label, j.mode, j.trial, j.trial_id] for j in all_jobs],
        "mine": [all_jobs.index(j) for j in select(all_jobs, shard)]}, indent=1))


@dataclass
class ShardRecord:
    """A shard folder's ``shard.json``, read back and checked against its scenario."""

    folder: Path
    shard: Shard
    scenario: Scenario
    data: dict[str, Any]  # the scenario as recorded (compared between shards)
    jobs: list[Job]

    @property
    def mine(self) -> list[Job]:
        return select(self.jobs, self.shard)


def read_record(folder: Path) -> ShardRecord:
    """The record of the shard folder ``folder``; ``ShardError`` says why it is not one."""
    path = folder / RECORD
    if not folder.is_dir():
        raise ShardError(f"{folder}: not a folder")
    if not path.is_file():
        run = (folder / "ground_truth.json").is_file() or any(folder.glob("*/ground_truth.json"))
        what = "a run folder but not a shard of one" if run else "not a run folder"
        raise ShardError(f"{folder}: {what} (no {RECORD}; shard folders come from "
                         "`stealth-mtd run SCENARIO --shard I/N --out DIR`)")
    try:
        d = json.loads(path.read_text())
        if d.get("schema") != SCHEMA:
            raise ShardError(f"{path}: schema {d.get('schema')!r}, this code reads {SCHEMA!r}")
        shard = Shard(int(d["shard"]), int(d["of"]))
        data = dict(d["scenario"])
        sc = from_dict(data, str(d.get("source_file") or ""))
        recorded = [Job(str(a), str(b), int(c), int(e)) for a, b, c, e in d["jobs"]]
    except ShardError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{path}: not a readable shard record ({type(exc).__name__}: "
                         f"{exc})") from None
    all_jobs = jobs(expand(sc))
    if recorded != all_jobs:
        raise ShardError(f"{path}: its trial list does not follow from its scenario (written by "
                         "another version of stealth-mtd?)")
    if not 0 <= shard.index < shard.count:
        raise ShardError(f"{path}: shard {shard} is not one of {shard.count}")
    return ShardRecord(folder, shard, sc, data, all_jobs)
