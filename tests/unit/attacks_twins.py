"""A synthetic run folder laid out as the runner lays it out, with twins: trial t of every mode
shares one workload seed, which draws the same background traffic (``attacks_synth.make_trial``
draws the background first), as ``experiments.trial.trial_seed`` does in a real run.

Each trial's ground truth names its pcap (``pcaps/global-<mode>-<t>.pcap``), records its seed,
the controller's result (with the source's role stats) and both spans: the whole migration
starts ``SETUP_S`` before the first migration packet (the source's sniff), the transfer phase
runs from the first to the last one. Used by the leakage, span and re-analysis tests.
"""

from __future__ import annotations

from pathlib import Path

from attacks.capture import Capture
from attacks.truth import GLOBAL, RunTruth, TrialTruth, write_truth
from tests.unit.attacks_synth import make_trial, write_pcap

SETUP_S = 3.0


def twin_trials(n_seeds: int, modes: tuple[str, ...] = ("direct", "stealth"),
                base_seed: int = 5000, duration: float = 30.0) -> list[tuple[TrialTruth, object]]:
    """(truth, packet table) per trial, in the runner's order: every trial of the first mode,
    then of the next; trial t of each mode has the seed ``base_seed + t``."""
    out = []
    for mode in modes:
        for t in range(n_seeds):
            seed = base_seed + t
            st = make_trial(len(out), mode, seed, duration=duration)
            truth = st.truth
            truth.seed, truth.trial_in_mode = seed, t
            truth.transfer_start, truth.transfer_end = truth.migration_start, truth.migration_end
            truth.migration_start -= SETUP_S
            truth.result = {
                "start_time": truth.migration_start, "end_time": truth.migration_end,
                "migration_time_s": truth.migration_end - truth.migration_start - 0.2,
                "downtime_s": 0.1 + 0.01 * t, "vm_bytes": 16_000_000,
                "role_stats": {f"source:{truth.source.host}": {
                    "transfer_started_at": truth.transfer_start, "sent_at": truth.transfer_end}},
            }
            out.append((truth, st.table))
    return out


def twin_captures(n_seeds: int, **kw) -> tuple[dict, dict]:
    """In memory: ``(captures[trial][GLOBAL], truths[trial])`` for ``analyze_run``."""
    trials = twin_trials(n_seeds, **kw)
    return ({t.trial: {GLOBAL: Capture(table, ["global"])} for t, table in trials},
            {t.trial: t for t, _ in trials})


def twin_run(folder: Path, n_seeds: int, **kw) -> Path:
    """The run folder: ``pcaps/`` and ``ground_truth.json`` (no analysis yet)."""
    (folder / "pcaps").mkdir(parents=True, exist_ok=True)
    truths = []
    for truth, table in twin_trials(n_seeds, **kw):
        rel = f"pcaps/global-{truth.mode}-{truth.trial_in_mode}.pcap"
        write_pcap(folder / rel, table)
        truth.pcaps = {"global": rel}
        truth.capture_stats = {"global": {"captured": len(table), "dropped_by_kernel": 0}}
        truths.append(truth)
    write_truth(folder / "ground_truth.json", RunTruth(truths, scenario="synthetic"))
    return folder
