"""One trial's bring-up, shared by the runner, the demo and monitor-eval; the trial seed; the
run folder's ``ground_truth.json``.

``with Trial(sc, trial, logs, ...) as t:`` brings up, in this order, the testbed (controller +
Mininet) with the scenario's topology, a role agent in every tenant host with the scenario's VM
on its host, the normal-traffic workload, all seeded with ``trial_seed(sc, trial)``, and the
captures at the given vantage points; with ``cover`` (a trial of the cover arm) the cover schedule
on every tenant agent (``Testbed.start_cover``) before the workload, so it is fixed before any
warm-up or migration. On leaving the block — normally, on an error, on Ctrl-C
or SIGTERM, also when the bring-up itself fails half-way — the captures stop (their tcpdump
counts land in ``t.capture_stats``) and then the testbed with every process it started.
With ``shared`` (an ``experiments.reuse.SharedTestbed``: the scenario's ``reuse_testbed``) the
testbed and its agents come from it, reset and checked reset when kept from the last trial, and
on leaving the block only the captures, the trial's processes and the cover stop (a trial that
failed takes the shared testbed down). ``t.reused`` says which it was.
What a trial does once the network is up (warm-up, migrations, anomalies) stays with its caller.

``write_ground_truth`` / ``read_ground_truth`` are the one writer and reader of the file for both
the runner's and monitor-eval's run folders, through the one schema, ``attacks.truth``
(``{"schema", "scenario", "seed", "meta", "trials": [one record per trial, ...]}``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from attacks.truth import RunTruth, load_truth, write_truth
from experiments import vantage
from experiments.fleet import VMSpec, start_agents, start_workload
from experiments.scenario import Scenario
from hosts.protocol.cover import CoverSettings


class Hooks:
    """What a caller (the runner's progress bar, the demo's live view) sees of a trial."""

    def phase(self, text: str) -> None:
        """A short line saying what happens now."""

    def up(self, tb: Any) -> None:
        """The network, agents, workload and captures run; migration not yet triggered."""

    def migrating(self, tb: Any, rec: dict[str, Any]) -> None:
        """Called about four times a second while the migration runs."""

    def observed(self, tb: Any) -> None:
        """The cool-down is over: what an observer sees of the trial ends here, before anything
        (VMs, agents, captures) is stopped."""

    def down(self) -> None:
        """The trial is over (also on errors)."""


def trial_seed(sc: Scenario, trial: int) -> int:
    """Trial ``t`` of every mode shares a seed: the same destination, comparable paths."""
    return sc.seed * 1000 + trial


def warmup_s(sc: Scenario, trial: int) -> float:
    """How long trial ``trial`` runs normal traffic before the anomaly: the scenario's warm-up
    plus a seeded uniform draw from [0, start_jitter_s) (the same for every arm of the trial)."""
    bg = sc.background
    return bg.warmup_s + random.Random(trial_seed(sc, trial) ^ 0x5717).uniform(0, bg.start_jitter_s)


def lock_wait(tb: Any, entered_s: float) -> float:
    """How much of the ``entered_s`` seconds a testbed took to enter was the wait for the lock
    (its ``ready_s`` starts once it holds the lock: the rest of its start waited)."""
    ready = getattr(tb, "timings", {}).get("ready_s")
    return max(0.0, entered_s - ready) if ready is not None else 0.0


def settle(seconds: float) -> None:
    """The wait between starting the traffic and starting the captures."""
    time.sleep(seconds)


def quiet(text: str) -> None:
    pass


def vm_spec(sc: Scenario, seed: int) -> VMSpec:
    """The VM a trial of ``sc`` with ``seed`` starts at its source."""
    return VMSpec(sc.vm.host, sc.vm.name, sc.vm.mib, sc.vm.dirty_pages_per_s, seed=seed,
                  kind=sc.vm.kind)


def bring_up(stack: ExitStack, sc: Scenario, logs: Path, seed: int,
             say: Callable[[str], None] = quiet) -> tuple[Any, float]:
    """A fresh testbed for ``sc`` (closed by ``stack``) with its agents and the VM running;
    returns it and how long it waited for the testbed lock."""
    from experiments.testbed import Testbed  # needs Mininet (root); imported on use

    t0 = time.monotonic()
    say("bringing up the network")
    tb = stack.enter_context(Testbed(sc.build_topology(), run_dir=logs, seed=seed))
    waited = lock_wait(tb, time.monotonic() - t0)
    say("starting agents and the VM")
    start_agents(tb, vm_spec(sc, seed))
    return tb, waited


class Trial:
    """The running testbed of trial ``trial`` of scenario ``sc``, its logs in ``logs``.

    ``captures`` are vantage specs (``"global"``, ``"switch:e1"``); their pcaps go to
    ``pcaps`` (required when there are captures) named with ``tag``. ``say`` gets a short line
    for each bring-up step. Inside the block: ``t.tb`` (the ``Testbed``), ``t.seed``,
    ``t.captures`` (the started ``vantage.Vantage`` points); after it: ``t.capture_stats``.
    ``t.timings`` holds the seconds (``time.monotonic``) the bring-up took (``bringup_s``), the
    wait for the machine's testbed lock before it (``lock_wait_s``, not part of ``bringup_s``),
    the traffic's settling before the captures (``settle_s``, ``background.settle_s``, apart too)
    and, after the block, the teardown (``teardown_s``). ``cover``: the cover settings to start
    on every tenant agent (None: no cover traffic).
    """

    def __init__(self, sc: Scenario, trial: int, logs: Path, captures: Sequence[str] = (),
                 pcaps: Path | None = None, tag: str = "",
                 say: Callable[[str], None] = quiet,
                 cover: CoverSettings | None = None, shared: Any = None) -> None:
        if captures and pcaps is None:
            raise ValueError("captures need a pcaps folder")
        self.cover = cover
        self.shared = shared
        self.reused = False
        self._failed = False
        self.sc, self.trial, self.logs = sc, trial, logs
        self.seed = trial_seed(sc, trial)
        self.specs, self.pcaps, self.tag, self.say = list(captures), pcaps, tag, say
        self.tb: Any = None
        self.captures: list[vantage.Vantage] = []
        self.capture_stats: dict[str, dict[str, int]] = {}
        self.timings: dict[str, float] = {}
        self._stack = ExitStack()

    def __enter__(self) -> Trial:
        sc, seed = self.sc, self.seed
        t0 = time.monotonic()
        try:
            if self.shared is not None:
                self._stack.callback(lambda: self.shared.end_trial(self._failed))
                self.tb, self.reused = self.shared.get(sc, self.logs, seed, self.say)
                if self.pcaps is not None:
                    self.shared.extra = [self.pcaps]
                self.timings["lock_wait_s"] = self.shared.lock_wait_s
            else:
                self.tb, self.timings["lock_wait_s"] = bring_up(self._stack, sc, self.logs, seed,
                                                                self.say)
            if self.cover is not None:
                self.say(f"starting cover traffic ({self.cover.rate_bytes_per_s * 8 / 1e6:.2f} "
                         "Mbit/s per VM)")
                start_cover = getattr(self.tb, "start_cover", None)
                if start_cover is None:
                    raise RuntimeError("this testbed has no cover transport "
                                       "(Testbed.start_cover): the cover arm cannot run here")
                start_cover(self.cover)
            bg = sc.background
            start_workload(self.tb, seed, bg.flows_per_s, bg.cdf, bg.cap_bytes, bg.bulk_per_min,
                           bulk_max_bytes=bg.bulk_max_bytes)
            t_settle = time.monotonic()
            if bg.settle_s > 0:  # captures begin in the traffic's steady state
                self.say(f"workload{' and cover' if self.cover else ''} settling "
                         f"({bg.settle_s:.0f} s, not captured)")
                settle(bg.settle_s)
            self.timings["settle_s"] = time.monotonic() - t_settle
            self._stack.callback(self._stop_captures)  # runs before the testbed stops
            for spec in self.specs:
                assert self.pcaps is not None
                self.captures.append(vantage.start(self.tb, spec, self.pcaps, tag=self.tag))
        except BaseException:
            self._failed = True
            self._stack.close()
            raise
        self.timings["bringup_s"] = (time.monotonic() - t0 - self.timings["lock_wait_s"]
                                     - self.timings["settle_s"])
        return self

    def __exit__(self, *exc: object) -> None:
        t0 = time.monotonic()
        self._failed = exc[0] is not None
        try:
            self._stack.close()
        finally:
            self.timings["teardown_s"] = time.monotonic() - t0

    def _stop_captures(self) -> None:
        self.capture_stats = {v.name: vantage.stop(v) for v in self.captures}


def write_ground_truth(path: Path, trials: list[dict[str, Any]],
                       meta: dict[str, Any] | None = None) -> None:
    """Write a run folder's ground truth (checked against ``attacks.truth``), rewritten after
    every trial so an interrupted run keeps the trials it finished. ``meta``: what the run was
    (the runner's ``arms``: each arm's protocol mode, chunk policy and cover settings)."""
    write_truth(path, RunTruth.from_dict({"trials": trials, "meta": meta or {}}))


def arms_meta(sc: Scenario) -> dict[str, Any]:
    """The ground truth's record of the arms (``meta["arms"]``): per arm (a trial's ``mode``)
    the controller's mode, the chunk policy and the cover settings (None: no cover)."""
    return {"arms": {m: {"protocol_mode": sc.protocol_mode(m),
                         "chunk_policy": sc.chunk_policy(m),
                         "cover": _cover_dict(sc) if sc.uses_cover(m) else None}
                     for m in sc.modes}}


def _cover_dict(sc: Scenario) -> dict[str, Any]:
    d = sc.cover_settings().to_dict()
    d.pop("seed")  # each trial's cover is seeded with the trial's seed (trial_seed)
    return d


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The trial records of a run folder's ``ground_truth.json``, as plain dicts."""
    return [t.to_dict() for t in load_truth(path).trials]
