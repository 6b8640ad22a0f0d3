"""Scenario files: one TOML describes a run (topology, roles, VM, modes, policy, background
traffic, attackers, seed, trials). Parsed into plain dataclasses with clear errors; used by the
runner and the demo.

    name = "quick"
    seed = 1
    trials = 3
    modes = ["direct", "stealth"]
    [topology]  kind = "fattree"  args = [4]  attackers = ["e1", "c1"]
    [vm]        host = "h1"  mib = 16  dirty_pages_per_s = 200
    [stealth]   n = 3  k = 2  hide_destination = true  policy = "profile"  rate_budget_mbit = 40
    [background] cdf = "websearch"  flows_per_s = 2.0  cap_bytes = 2000000  bulk_per_min = 1
                 warmup_s = 15  cooldown_s = 10
    [attackers] vantage = ["switch:e1", "switch:c1", "global"]  window_s = 1.0
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """The scenario file is wrong; the message names the field."""


@dataclass
class TopologySpec:
    kind: str = "fattree"
    args: list[Any] = field(default_factory=lambda: [4])
    attackers: list[str] = field(default_factory=list)
    bw_mbit: float | None = None


@dataclass
class VMSettings:
    host: str = "h1"
    name: str = "vm1"
    mib: int = 16
    dirty_pages_per_s: float = 200.0


@dataclass
class StealthSettings:
    n: int = 3
    k: int = 2
    hide_destination: bool = True
    policy: str = "profile"  # 'profile' (measured normal traffic) or 'fixed'
    fixed_chunk: int = 65536
    rate_budget_mbit: float = 0.0  # 0: unshaped
    sniff_s: float = 3.0


@dataclass
class BackgroundSettings:
    cdf: str = "websearch"
    flows_per_s: float = 2.0
    cap_bytes: int = 2_000_000
    bulk_per_min: float = 1.0
    bulk_max_bytes: int = 8_000_000
    warmup_s: float = 15.0
    cooldown_s: float = 10.0


@dataclass
class AttackerSettings:
    vantage: list[str] = field(default_factory=lambda: ["global"])
    window_s: float = 1.0


@dataclass
class Scenario:
    name: str
    seed: int = 1
    trials: int = 3
    modes: list[str] = field(default_factory=lambda: ["direct", "stealth"])
    topology: TopologySpec = field(default_factory=TopologySpec)
    vm: VMSettings = field(default_factory=VMSettings)
    stealth: StealthSettings = field(default_factory=StealthSettings)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    attackers: AttackerSettings = field(default_factory=AttackerSettings)
    timeout_s: float = 600.0
    # how the migration starts: "controller" (the runner reports the anomaly, standing in for
    # Alg 1) or "monitor:<kind>" (a monitor in the VM's host trains on its normal behaviour, the
    # anomaly <kind> — scan, exfil, miner, beacon — runs in the VM's host, the monitor reports it)
    trigger: str = "controller"
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)  # read by experiments.monitor_eval
    source_file: str = ""

    def chunk_policy(self, mode: str = "stealth") -> dict[str, Any]:
        """The chunk policy of ``mode``: direct is today's live migration, one unshaped stream."""
        s = self.stealth
        if mode == "direct":
            return {"kind": "fixed", "size": 65536}
        if s.policy == "fixed":
            return {"kind": "fixed", "size": s.fixed_chunk}
        return {"kind": "profile", "sniff_s": s.sniff_s,
                "rate_budget_bps": s.rate_budget_mbit * 1e6 / 8}  # the policy counts bytes/s

    def build_topology(self) -> Any:
        from topologies import registry

        cls = registry()[self.topology.kind]
        kw: dict[str, Any] = {"attackers": "+".join(self.topology.attackers)}
        if self.topology.bw_mbit:
            kw["bw"] = self.topology.bw_mbit
        return cls(*self.topology.args, **kw)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"[{where}]: unknown field(s) {sorted(unknown)}; known: "
                            f"{sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ScenarioError(f"[{where}]: {exc}") from None


def from_dict(data: dict[str, Any], source: str = "") -> Scenario:
    data = dict(data)
    parts = {"topology": TopologySpec, "vm": VMSettings, "stealth": StealthSettings,
             "background": BackgroundSettings, "attackers": AttackerSettings}
    kw: dict[str, Any] = {}
    for key, cls in parts.items():
        section = data.pop(key, {})
        if not isinstance(section, dict):
            raise ScenarioError(f"[{key}] must be a table")
        kw[key] = _build(cls, section, key)
    if "name" not in data:
        data["name"] = Path(source).stem if source else "scenario"
    sc = _build(Scenario, {**data, **kw, "source_file": source}, "top level")
    validate(sc)
    _check_sweep(sc)
    for _, variant in expand(sc):
        validate(variant)
    return sc


def validate(sc: Scenario) -> None:
    from topologies import registry

    if sc.topology.kind not in registry():
        raise ScenarioError(f"topology.kind {sc.topology.kind!r}: choose from {sorted(registry())}")
    bad = [m for m in sc.modes if m not in ("direct", "stealth")]
    if bad or not sc.modes:
        raise ScenarioError(f"modes {sc.modes}: each must be 'direct' or 'stealth'")
    if sc.trials < 1:
        raise ScenarioError("trials must be >= 1")
    if not 2 <= sc.stealth.k <= sc.stealth.n:
        raise ScenarioError(f"stealth: need 2 <= k <= n, got k={sc.stealth.k} n={sc.stealth.n}")
    if sc.stealth.policy not in ("profile", "fixed"):
        raise ScenarioError("stealth.policy must be 'profile' or 'fixed'")
    kind = sc.trigger.partition(":")[2]
    if sc.trigger != "controller" and not (sc.trigger.startswith("monitor:") and kind in (
            "scan", "exfil", "miner", "beacon")):
        raise ScenarioError(f"trigger {sc.trigger!r}: 'controller' or 'monitor:<kind>' with "
                            "kind scan, exfil, miner or beacon")
    if sc.trigger != "controller" and sc.background.warmup_s < 15:
        raise ScenarioError("trigger 'monitor:...' needs background.warmup_s >= 15: the "
                            "monitor trains on the VM's normal behaviour during the warm-up")
    if sc.vm.mib < 1:
        raise ScenarioError("vm.mib must be >= 1")
    for v in sc.attackers.vantage:
        if v != "global":
            if not v.startswith("switch:"):
                raise ScenarioError(f"attackers.vantage {v!r}: 'global' or 'switch:<name>'")
            if v[7:] not in sc.topology.attackers:
                raise ScenarioError(f"attackers.vantage {v!r} needs an attacker host on that "
                                    f"switch: add {v[7:]!r} to topology.attackers")


def expand(sc: Scenario) -> list[tuple[str, Scenario]]:
    """A sweep's variants: the Cartesian product of ``[sweep]`` (keys like
    ``"stealth.n"`` or ``"background.flows_per_s"``), each a complete scenario with a label.
    Without a sweep: the scenario itself, labelled ''."""
    import copy
    import itertools

    if not sc.sweep:
        return [("", sc)]
    keys = sorted(sc.sweep)
    out = []
    for values in itertools.product(*(sc.sweep[k] for k in keys)):
        v = copy.deepcopy(sc)
        v.sweep = {}
        for key, value in zip(keys, values, strict=True):
            section, _, name = key.partition(".")
            setattr(getattr(v, section), name, value)
        validate(v)
        label = "_".join(f"{k.split('.')[-1]}={val}" for k, val in zip(keys, values, strict=True))
        v.name = f"{sc.name}-{label}"
        out.append((label, v))
    return out


def _check_sweep(sc: Scenario) -> None:
    for key, values in sc.sweep.items():
        section, _, name = key.partition(".")
        part = getattr(sc, section, None)
        if part is None or not name or not hasattr(part, name) or section in (
                "name", "seed", "trials"):
            raise ScenarioError(f"sweep key {key!r}: use '<section>.<field>', e.g. 'stealth.n'")
        if not isinstance(values, list) or not values:
            raise ScenarioError(f"sweep {key!r}: a non-empty list of values")


def load(path: str | Path) -> Scenario:
    p = Path(path)
    for cand in (SCENARIO_DIR / p, SCENARIO_DIR / f"{p}.toml"):
        if not p.exists() and cand.exists():
            p = cand
    if not p.exists():
        raise ScenarioError(f"no scenario file {path}; shipped ones: "
                            f"{sorted(x.name for x in SCENARIO_DIR.glob('*.toml'))}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    return from_dict(data, str(p))
