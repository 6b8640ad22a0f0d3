"""What really happened in a run (``ground_truth.json``), and the names of vantage points.

The ground truth is written by the experiments (the runner's trials, monitor-eval's trials) and
read by the attackers' scoring and the run's analysis; the attackers themselves never see it
before scoring (``attacks.pipeline``). One shape on disk, a JSON object::

    {"schema": "stealth-mtd/ground-truth/1", "scenario": "...", "seed": 1, "meta": {...},
     "trials": [TrialTruth.to_dict(), ...]}

``load_truth`` also reads the bare list of trials that monitor-eval wrote before (old run folders
still load); ``write_truth`` always writes the object.

A ``Vantage`` names where an attacker listens: ``switch:e1`` (its ``str``: scenario specs, attacker
names in metrics), ``switch-e1`` (its ``file_stem``: pcap names, the keys of a trial's ``pcaps``),
``e1`` (its ``switch``), ``global`` (the global passive adversary, everywhere at once).

Callers: experiments (runner, monitor-eval, analysis, vantage), ``attacks.cli``,
``attacks.pipeline``, ``attacks.scoring``, the tests.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = "stealth-mtd/ground-truth/1"
GLOBAL_NAMES = ("global", "all", "any")
# the two spans of a migration a detection can be labelled with (``TrialTruth.span``)
SPANS = {
    "migration": "the whole migration, from the controller's start (roles prepared, the source's "
    "chunk policy measuring its traffic) to the VM running at the destination",
    "transfer": "the transfer phase, from the source's first to its last migration packet (its "
    "own timestamps: after the set-up, until the last ack)",
}


class TruthError(ValueError):
    """A ground-truth file or record that does not have the expected shape (the message says
    which field)."""


# ----------------------------------------------------------------------------- vantage points
@dataclass(frozen=True)
class Vantage:
    """One attacker vantage point: a compromised switch's mirror port, or ``global``."""

    switch: str | None = None  # None: the global passive adversary

    @classmethod
    def parse(cls, text: str) -> Vantage:
        """``'switch:e1'`` or ``'switch-e1'`` → the switch e1; ``'global'`` (or ``'all'``,
        ``'any'``) → the global adversary. Anything else is a ``ValueError``."""
        if text in GLOBAL_NAMES:
            return cls(None)
        for prefix in ("switch:", "switch-"):
            if text.startswith(prefix) and len(text) > len(prefix):
                return cls(text[len(prefix):])
        raise ValueError(f"vantage point {text!r}: use 'global' or 'switch:<switch name>'")

    @classmethod
    def from_stem(cls, stem: str) -> Vantage:
        """A pcap name's vantage part: ``'switch-e1'``, ``'global'``/``'all'`` or a bare switch
        name ``'e1'`` (``trial3-e1.pcap``)."""
        try:
            return cls.parse(stem)
        except ValueError:
            if not stem:
                raise
            return cls(stem)

    @property
    def is_global(self) -> bool:
        return self.switch is None

    @property
    def file_stem(self) -> str:
        """``'switch-e1'`` / ``'global'``: safe in a file name."""
        return "global" if self.switch is None else f"switch-{self.switch}"

    def __str__(self) -> str:
        return "global" if self.switch is None else f"switch:{self.switch}"


GLOBAL = Vantage(None)


# ----------------------------------------------------------------------------- trial records
def _check_keys(what: str, d: Any, known: set[str]) -> None:
    if not isinstance(d, dict):
        raise TruthError(f"{what}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - known)
    if unknown:
        raise TruthError(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}")


@dataclass
class HostAddress:
    """A host and its address (``{"host": "h3", "ip": "10.0.0.3"}``)."""

    host: str
    ip: str

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ip": self.ip}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> HostAddress | None:
        if d is None:
            return None
        _check_keys("host", d, {"host", "ip"})
        try:
            return cls(str(d["host"]), str(d["ip"]))
        except KeyError as exc:
            raise TruthError(f"host {d!r}: missing field {exc.args[0]!r}") from None


@dataclass
class HopPath:
    """One TCP hop of a migration: ``src`` → ``to`` on ``port``, over these switches."""

    src: str  # "from" in JSON
    to: str
    port: int | None = None
    switches: list[str] = field(default_factory=list)
    virtual_ip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.to, "port": self.port,
                "switches": list(self.switches), "virtual_ip": self.virtual_ip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HopPath:
        _check_keys("path", d, {"from", "to", "port", "switches", "virtual_ip"})
        try:
            return cls(str(d["from"]), str(d["to"]), d.get("port"), list(d.get("switches", [])),
                       d.get("virtual_ip"))
        except KeyError as exc:
            raise TruthError(f"path {d!r}: missing field {exc.args[0]!r}") from None


@dataclass
class MonitorMigration:
    """A migration in a monitor-eval trial: why it ran and who played a role."""

    migration: str
    why: str  # "scheduled" or the anomaly kind that triggered it
    state: str
    hosts: list[str] = field(default_factory=list)
    source: str | None = None
    roles: dict[str, Any] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MonitorMigration:
        _check_keys("migration", d, _names(cls))
        return _build(cls, "migration", d)


@dataclass
class Anomaly:
    """An anomaly injected into the VM's host in a monitor-eval trial."""

    kind: str
    host: str
    start: float
    end: float | None = None
    c2: str | None = None
    migration: str | None = None  # the migration its report started, if any
    trigger: Any = None
    migration_state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Anomaly:
        _check_keys("anomaly", d, _names(cls))
        return _build(cls, "anomaly", d)


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _build(cls: type, what: str, d: dict[str, Any]) -> Any:
    required = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
    missing = [k for k in required if k not in d]
    if missing:
        raise TruthError(f"{what} {d!r}: missing field(s) {', '.join(map(repr, missing))}")
    return cls(**d)


@dataclass
class TrialTruth:
    """One trial: what migrated where, through whom, when (runner trials) and, for monitor-eval
    trials, the anomalies injected and the migrations they caused.

    ``migration_start``/``migration_end`` are epoch seconds (None: no migration happened), the
    whole migration; ``transfer_start``/``transfer_end`` the transfer phase inside it (None: not
    recorded; see ``SPANS``);
    ``hosts`` are the tenants (the candidates an attacker ranks), ``attackers`` the attacker
    hosts; ``pcaps`` maps a vantage's ``file_stem`` to its pcap, relative to the run folder;
    ``capture_stats`` holds what each capture reported (``dropped_by_kernel`` ...); ``result`` is
    the migration's result as the controller reported it.
    """

    trial: int
    mode: str = ""
    trial_in_mode: int = 0
    seed: int | None = None
    migration: str | None = None  # the migration's id
    status: str = "done"
    reason: str = ""
    migration_start: float | None = None
    migration_end: float | None = None
    transfer_start: float | None = None
    transfer_end: float | None = None
    source: HostAddress | None = None
    intermediates: list[HostAddress] = field(default_factory=list)
    leader: HostAddress | None = None
    destination: HostAddress | None = None
    virtual_ip: str | None = None
    paths: list[HopPath] = field(default_factory=list)
    hosts: list[HostAddress] = field(default_factory=list)
    attackers: list[HostAddress] = field(default_factory=list)
    pcaps: dict[str, str] = field(default_factory=dict)
    capture_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    # monitor-eval trials
    migrations: list[MonitorMigration] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    clean: tuple[float, float] | None = None  # the clean period after training
    end: float | None = None
    ips: dict[str, str] = field(default_factory=dict)  # tenant host → address

    def span(self, which: str = "migration") -> tuple[float | None, float | None]:
        """``(start, end)`` of the whole migration or of its transfer phase (``SPANS``)."""
        if which == "migration":
            return self.migration_start, self.migration_end
        if which == "transfer":
            return self.transfer_start, self.transfer_end
        raise ValueError(f"span {which!r}: use one of {', '.join(SPANS)}")

    def vantage_pcaps(self) -> dict[Vantage, str]:
        """``pcaps`` keyed by vantage point."""
        return {Vantage.parse(k): v for k, v in self.pcaps.items()}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, HostAddress | HopPath | MonitorMigration | Anomaly):
                v = v.to_dict()
            elif isinstance(v, list):
                v = [x.to_dict() if hasattr(x, "to_dict") else x for x in v]
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = dict(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialTruth:
        _check_keys("trial record", d, _names(cls))
        if not isinstance(d.get("trial"), int):
            raise TruthError(f"trial record {str(d)[:80]}: 'trial' must be an integer")
        what = f"trial {d['trial']}"
        kw = dict(d)
        try:
            for k in ("source", "leader", "destination"):
                if k in kw:
                    kw[k] = HostAddress.from_dict(kw[k])
            for k in ("intermediates", "hosts", "attackers"):
                if k in kw:
                    kw[k] = [HostAddress.from_dict(x) for x in kw[k]]
            if "paths" in kw:
                kw["paths"] = [HopPath.from_dict(p) for p in kw["paths"]]
            if "migrations" in kw:
                kw["migrations"] = [MonitorMigration.from_dict(m) for m in kw["migrations"]]
            if "anomalies" in kw:
                kw["anomalies"] = [Anomaly.from_dict(a) for a in kw["anomalies"]]
        except TruthError as exc:
            raise TruthError(f"{what}: {exc}") from None
        except TypeError as exc:
            raise TruthError(f"{what}: {exc}") from None
        if kw.get("clean") is not None:
            kw["clean"] = tuple(kw["clean"])
        kw["result"] = kw.get("result") or {}
        return cls(**kw)


@dataclass
class RunTruth:
    """A run's ``ground_truth.json``: its trials plus what the run was."""

    trials: list[TrialTruth] = field(default_factory=list)
    scenario: str | None = None  # the scenario's name
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping

    def by_trial(self) -> dict[int, TrialTruth]:
        return {t.trial: t for t in self.trials}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "scenario": self.scenario, "seed": self.seed,
                "meta": dict(self.meta), "trials": [t.to_dict() for t in self.trials]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | list[Any]) -> RunTruth:
        """The object with ``"trials"``, or the bare list of trials monitor-eval wrote."""
        if isinstance(d, list):
            d = {"trials": d}
        if not isinstance(d, dict) or not isinstance(d.get("trials"), list):
            raise TruthError("ground truth: expected an object with a 'trials' list")
        unknown = sorted(set(d) - {"schema", "scenario", "seed", "meta", "trials"})
        if unknown:
            raise TruthError(f"ground truth: unknown field(s) {', '.join(map(repr, unknown))}")
        schema = d.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise TruthError(f"ground truth: schema {schema!r}, this code reads {SCHEMA!r}")
        return cls([TrialTruth.from_dict(t) for t in d["trials"]], d.get("scenario"),
                   d.get("seed"), dict(d.get("meta") or {}))


def load_truth(path: str | Path) -> RunTruth:
    """Read a ``ground_truth.json`` (either shape); ``OSError`` if unreadable, ``TruthError``
    (a ``ValueError``) if it is not a ground truth."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TruthError(f"{path}: not JSON ({exc})") from None
    try:
        return RunTruth.from_dict(data)
    except TruthError as exc:
        raise TruthError(f"{path}: {exc}") from None


def write_truth(path: str | Path, run: RunTruth) -> None:
    """Write ``run`` as ``ground_truth.json`` (the object shape), replacing the file whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(run.to_dict(), indent=1))
    tmp.replace(path)
