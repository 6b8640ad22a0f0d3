"""Scenario files: one TOML describes a run (topology, roles, VM, arms, policy, cover, background
traffic, attackers, seed, trials). Parsed into plain dataclasses and checked completely when the
file loads: every wrong type or value is a ``ScenarioError`` naming the key and what is allowed,
never a failure at trial start. Used by the runner, the demo and the monitor evaluation.
A little over 400 lines: the schema and its checks are one contract and are read together.

    name = "quick"
    seed = 1
    trials = 3
    modes = ["direct", "profile", "cover"]   # the arms (MODES); "stealth" = [stealth].policy
    [topology]  kind = "fattree"  args = [4]  attackers = ["e1", "c1"]  ports = "netdev"
    [vm]        host = "h1"  mib = 16  dirty_pages_per_s = 200  kind = "model"  (or "qemu")
    [stealth]   n = 3  k = 2  hide_destination = true  policy = "profile"  rate_budget_mbit = 40
    [cover]     rate_x_normal = 1.0 (or rate_mbit = 20)  record_min = 1024  record_max = 16384
                copies = true
    [background] cdf = "websearch"  flows_per_s = 2.0  cap_bytes = 2000000  bulk_per_min = 1
                 settle_s = 10  warmup_s = 15  start_jitter_s = 10  cooldown_s = 10
    [attackers] vantage = ["switch:e1", "switch:c1", "global"]  window_s = 1.0
                active = ["service-scan", "latency"]  curious_intermediate = true

The arms (``modes``): ``direct`` (one unshaped stream, today's live migration), ``profile`` (the
poster's stealth protocol, chunks shaped like the source's measured traffic), ``fixed`` (the
stealth protocol with fixed-size chunks, the baseline), ``cover`` (the stealth protocol inside
the cover schedule, ``hosts.protocol.cover``) and the legacy ``stealth`` (the stealth protocol
with ``[stealth].policy``). ``[cover]`` gives the cover rate per VM, absolute (``rate_mbit``) or
relative to the normal traffic a host originates on average (``rate_x_normal``, computed from
``[background]`` alone: ``normal_bytes_per_s``). In a sweep, a point whose cover rate is 0 runs
the ``profile`` arm in the ``cover`` arm's place: the frontier's zero point is the poster's policy.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from attacks.probing import PROBERS as ACTIVE_PROBERS
from hosts.anomalies import KINDS
from hosts.chunk_policy import POLICIES as CHUNK_POLICIES
from hosts.protocol.cover import COVER_PORT, CoverError, CoverSettings
from hosts.protocol.plan import DEFAULTS
from hosts.qemu import MAX_MIB as QEMU_MAX_MIB
from hosts.qemu import MIN_MIB as QEMU_MIN_MIB
from hosts.traffic import MAX_CHUNK, MIN_CHUNK
from hosts.workload import CDFS, MSS
from topologies.ovs import DEFAULT_PORTS, GLOBAL_CAPTURE_PORTS, PORT_KINDS

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """The scenario file is wrong; the message names the field."""


@dataclass
class TopologySpec:
    kind: str = "fattree"
    args: list[int | float | str] = field(default_factory=lambda: [4])
    attackers: list[str] = field(default_factory=list)
    bw_mbit: float | None = None
    ports: str = DEFAULT_PORTS  # switch ports: topologies.ovs.PORT_KINDS (netdev where no AF_XDP)


@dataclass
class VMSettings:
    host: str = "h1"
    name: str = "vm1"
    mib: int = 16
    dirty_pages_per_s: float = 200.0
    kind: str = "model"  # or "qemu": a real guest (hosts.qemu), 96-1024 MiB, QEMU migrates it


@dataclass
class StealthSettings:
    n: int = 3
    k: int = 2
    hide_destination: bool = True
    policy: str = "profile"  # a kind in hosts.chunk_policy.POLICIES ('profile': measured)
    fixed_chunk: int = DEFAULTS.chunk_size
    rate_budget_mbit: float = 0.0  # 0: unshaped
    sniff_s: float = 3.0


@dataclass
class BackgroundSettings:
    cdf: str = "websearch"
    flows_per_s: float = 2.0
    cap_bytes: int = 2_000_000
    bulk_per_min: float = 1.0
    bulk_max_bytes: int = 8_000_000
    # the workload (and the cover traffic) run this long before the captures start: what an
    # attacker sees begins in their steady state, not at their start (a classifier rehearsed on
    # other trials learns "the traffic has ramped up", which every long migration overlaps)
    settle_s: float = 10.0
    warmup_s: float = 15.0
    # the migration starts warmup_s + U(0, start_jitter_s) into the trial (seeded per trial): a
    # fixed start would let an attacker who rehearsed on other trials learn *when*, not *what*
    start_jitter_s: float = 0.0
    cooldown_s: float = 10.0


@dataclass
class CoverSpec:
    """The ``[cover]`` section: the cover rate per VM (one of the two rates) and the records'
    and cover connections' sizes (``hosts.protocol.cover.CoverSettings``)."""

    rate_mbit: float = 0.0  # per VM, Mbit/s of on-wire record bytes summed over its peers
    rate_x_normal: float = 0.0  # per VM, x the normal bytes/s a host originates (background)
    record_min: int = 1024
    record_max: int = 16384
    flow_cdf: str = "websearch"  # bytes per cover connection, like tenant flows
    flow_cap_bytes: int = 1_000_000
    copies: bool = True  # tail copies in padding room (hosts.cover: fills no record of its own)


@dataclass
class AttackerSettings:
    """The ``[attackers]`` section: passive vantage points, their window, the active probers run
    from an attacker host during each trial (``experiments.probers``: ``ACTIVE_PROBERS``) and the
    curious intermediate (``attacks.probing``); each gets its own figures in metrics.json."""

    vantage: list[str] = field(default_factory=lambda: ["global"])
    window_s: float = 1.0
    active: list[str] = field(default_factory=list)
    curious_intermediate: bool = False




@dataclass
class Scenario:
    name: str
    seed: int = 1
    trials: int = 3
    modes: list[str] = field(default_factory=lambda: ["direct", "stealth"])
    topology: TopologySpec = field(default_factory=TopologySpec)
    vm: VMSettings = field(default_factory=VMSettings)
    stealth: StealthSettings = field(default_factory=StealthSettings)
    cover: CoverSpec = field(default_factory=CoverSpec)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    attackers: AttackerSettings = field(default_factory=AttackerSettings)
    timeout_s: float = 600.0
    # how the migration starts: "controller" (the runner reports the anomaly, standing in for
    # Alg 1) or "monitor:<kind>" (a monitor in the VM's host trains on its normal behaviour, the
    # anomaly <kind> — scan, exfil, miner, beacon — runs in the VM's host, the monitor reports it)
    trigger: str = "controller"
    # one testbed (network, controller, agents) serves the consecutive trials of a point, reset
    # and checked reset between them (experiments.trial.SharedTestbed); off: a fresh one each
    reuse_testbed: bool = False
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    monitor: dict[str, Any] = field(default_factory=dict)  # read by experiments.monitor_eval
    source_file: str = ""

    def policy_of(self, mode: str) -> str | None:
        """The chunk policy an arm runs (None for direct): ``stealth`` → ``[stealth].policy``."""
        if mode == "direct":
            return None
        return self.stealth.policy if mode == "stealth" else mode

    def protocol_mode(self, mode: str) -> str:
        """The controller's mode of an arm: every arm but direct is a stealth migration."""
        return "direct" if mode == "direct" else "stealth"

    def uses_cover(self, mode: str) -> bool:
        """Does the arm run inside the cover schedule (its trials start cover before warm-up)?"""
        return self.policy_of(mode) == "cover"

    def chunk_policy(self, mode: str = "stealth") -> dict[str, Any]:
        """The chunk policy of arm ``mode``: direct is today's live migration, one unshaped
        stream; cover hands the chunks to the cover mux (its settings are the testbed's)."""
        s = self.stealth
        policy = self.policy_of(mode)
        if policy is None:
            return {"kind": "fixed", "size": DEFAULTS.chunk_size}
        if policy == "fixed":
            return {"kind": "fixed", "size": s.fixed_chunk}
        if policy == "cover":
            return {"kind": "cover"}
        shaping = {"kind": policy, "sniff_s": s.sniff_s,
                   "rate_budget_bps": s.rate_budget_mbit * 1e6 / 8}  # the policy counts bytes/s
        if policy != "profile":  # another registered policy may also use the fixed size
            shaping["size"] = s.fixed_chunk
        return shaping

    def cover_rate_bytes_per_s(self) -> float:
        """The cover rate per VM in bytes/s (0: no cover): ``rate_mbit``, or ``rate_x_normal``
        times ``normal_bytes_per_s(background)``."""
        c = self.cover
        if c.rate_mbit > 0:
            return c.rate_mbit * 1e6 / 8
        return c.rate_x_normal * normal_bytes_per_s(self.background)

    def cover_settings(self, seed: int = 0) -> CoverSettings:
        """What ``Testbed.start_cover`` gets for a trial of seed ``seed``."""
        c = self.cover
        return CoverSettings(rate_bytes_per_s=self.cover_rate_bytes_per_s(),
                             record_min=c.record_min, record_max=c.record_max,
                             flow_cdf=c.flow_cdf, flow_cap_bytes=c.flow_cap_bytes,
                             copies=c.copies, port=COVER_PORT, seed=seed)

    def build_topology(self) -> Any:
        from topologies import registry

        cls = registry()[self.topology.kind]
        kw: dict[str, Any] = {"attackers": "+".join(self.topology.attackers)}
        if self.topology.bw_mbit:
            kw["bw"] = self.topology.bw_mbit
        topo = cls(*self.topology.args, **kw)
        topo.switch_ports = self.topology.ports  # read by topologies.net.start_network
        return topo



# -- checking ---------------------------------------------------------------------------------
# A scenario name and a VM name become folder and file names: a strict character set, so neither
# can leave the results folder (no '/', no '..').
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE_NAME_RULE = ("letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 "
                  "characters, no '..' (it names a folder)")
MODES = ("direct", "profile", "fixed", "cover", "stealth")  # the arms; stealth: [stealth].policy
POLICIES = tuple(CHUNK_POLICIES)  # one registry: hosts.chunk_policy
MAX_VM_MIB = 16384
_PARTS: dict[str, type] = {"topology": TopologySpec, "vm": VMSettings, "stealth": StealthSettings,
                           "cover": CoverSpec, "background": BackgroundSettings,
                           "attackers": AttackerSettings}
_INTERNAL = {"source_file"}  # set by load(), not by the file


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(key: str, value: Any, allowed: str) -> ScenarioError:
    return ScenarioError(f"{key} = {_show(value)}: {allowed}")


def _fits(value: Any, hint: Any) -> bool:
    """Does a TOML value have the type of a field annotated ``hint``?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if isinstance(hint, type) and is_dataclass(hint):  # a section, already built and checked
        return isinstance(value, hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin in (typing.Union, types.UnionType):  # None only as a default: TOML has no null
        return any(value is None if a is type(None) else _fits(value, a) for a in args)
    raise TypeError(f"no check for fields of type {hint}")  # a new field needs a case above


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        items = typing.get_args(args[0]) or args
        if Any in items:
            return "a list"
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
        return "a list of " + " or ".join(plural[a] for a in items)
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    return {bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string"}.get(hint, str(hint))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_types(obj: Any, where: str = "") -> None:
    """Every field of ``obj`` (and of its sections) has its annotated type."""
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        if is_dataclass(value):
            _check_types(value, f"{name}.")
        elif not _fits(value, hint):
            raise _bad(where + name, value, f"must be {_describe(hint)}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)} - _INTERNAL
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"[{where}]: unknown field(s) {sorted(unknown)}; known: "
                            f"{sorted(known)}")
    hints = _hints(cls)
    for name, value in data.items():
        if not _fits(value, hints[name]):
            key = name if where == "top level" else f"{where}.{name}"
            raise _bad(key, value, f"must be {_describe(hints[name])}")
    return cls(**data)


def from_dict(data: dict[str, Any], source: str = "") -> Scenario:
    """A checked scenario from parsed TOML; ``ScenarioError`` names the first wrong key."""
    data = dict(data)
    kw: dict[str, Any] = {}
    for key, cls in _PARTS.items():
        section = data.pop(key, {})
        if not isinstance(section, dict):
            raise _bad(key, section, f"must be a table ([{key}] with its fields)")
        kw[key] = _build(cls, section, key)
    if "name" not in data:
        data["name"] = Path(source).stem if source else "scenario"
    sc = _build(Scenario, {**data, **kw}, "top level")
    sc.source_file = source
    _check_sweep(sc)
    expand(sc)  # validates the scenario itself, or each variant of its sweep
    return sc


def _check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    if low is not None and (value <= low if low_open else value < low):
        raise _bad(key, value, f"must be {'>' if low_open else '>='} {low}"
                   + (f" and <= {high}" if high is not None else ""))
    if high is not None and value > high:
        raise _bad(key, value, f"must be <= {high}" + (f" and >= {low}" if low is not None else ""))


def validate(sc: Scenario, topology: bool = True) -> None:
    """Every value in range and every name known; ``topology=False`` skips building the
    topology (when a sweep variant changes nothing of it)."""
    _check_types(sc)
    if not SAFE_NAME.fullmatch(sc.name) or ".." in sc.name:
        raise _bad("name", sc.name, SAFE_NAME_RULE)
    _check_range("seed", sc.seed, 0)
    _check_range("trials", sc.trials, 1)
    bad = [m for m in sc.modes if m not in MODES]
    if bad or not sc.modes or len(set(sc.modes)) != len(sc.modes):
        raise _bad("modes", sc.modes, f"a non-empty list of {list(MODES)}, each at most once")
    _check_range("timeout_s", sc.timeout_s, 0, low_open=True)
    if sc.reuse_testbed and sc.vm.kind != "model":
        raise _bad("reuse_testbed", sc.reuse_testbed, f"false with [vm] kind = {sc.vm.kind!r}: "
                   "a reused testbed resets only the model VM between trials")
    kind = sc.trigger.partition(":")[2]
    if sc.trigger != "controller" and not (sc.trigger.startswith("monitor:") and kind in KINDS):
        raise _bad("trigger", sc.trigger, "'controller' or 'monitor:<kind>' with kind one of "
                   f"{', '.join(KINDS)}")
    if sc.trigger != "controller" and sc.background.warmup_s < 15:
        raise ScenarioError("trigger 'monitor:...' needs background.warmup_s >= 15: the "
                            "monitor trains on the VM's normal behaviour during the warm-up")
    _check_stealth(sc.stealth)
    _check_vm(sc.vm)
    _check_background(sc.background)
    _check_cover(sc)
    _check_range("attackers.window_s", sc.attackers.window_s, 0, low_open=True)
    if topology:
        _check_topology(sc)
    bad = [a for a in sc.attackers.active if a not in ACTIVE_PROBERS]
    if bad or len(set(sc.attackers.active)) != len(sc.attackers.active):
        raise _bad("attackers.active", sc.attackers.active,
                   f"a list of {list(ACTIVE_PROBERS)}, each at most once")
    mirrors = [v[7:] for v in sc.attackers.vantage if v.startswith("switch:")]
    if sc.attackers.active and len(sc.topology.attackers) <= len(set(mirrors)):
        raise ScenarioError("attackers.active: the probers run in an attacker host that is no "
                            "switch vantage's mirror port (a mirror's port forwards nothing "
                            "else); add one more switch to topology.attackers")
    for v in sc.attackers.vantage:
        if v != "global":
            if not v.startswith("switch:"):
                raise ScenarioError(f"attackers.vantage {v!r}: 'global' or 'switch:<name>'")
            if v[7:] not in sc.topology.attackers:
                raise ScenarioError(f"attackers.vantage {v!r} needs an attacker host on that "
                                    f"switch: add {v[7:]!r} to topology.attackers")


def _check_stealth(s: StealthSettings) -> None:
    if not 2 <= s.k <= s.n <= 255:
        raise ScenarioError(f"stealth.k, stealth.n: need 2 <= k <= n <= 255, got k={s.k} "
                            f"n={s.n}")
    if s.policy not in POLICIES:
        raise _bad("stealth.policy", s.policy, f"one of {list(POLICIES)}")
    _check_range("stealth.fixed_chunk", s.fixed_chunk, MIN_CHUNK, MAX_CHUNK)
    _check_range("stealth.rate_budget_mbit", s.rate_budget_mbit, 0)
    _check_range("stealth.sniff_s", s.sniff_s, 0, low_open=True)


VM_KINDS = ("model", "qemu")  # hosts.vm's model; hosts.qemu's real guest


def _check_vm(vm: VMSettings) -> None:
    if not SAFE_NAME.fullmatch(vm.name) or ".." in vm.name:
        raise _bad("vm.name", vm.name, SAFE_NAME_RULE)
    if vm.kind not in VM_KINDS:
        raise _bad("vm.kind", vm.kind, f"one of {list(VM_KINDS)}")
    if vm.kind == "qemu":
        _check_range("vm.mib", vm.mib, QEMU_MIN_MIB, QEMU_MAX_MIB)  # Debian's kernel needs 96
    _check_range("vm.mib", vm.mib, 1, MAX_VM_MIB)
    _check_range("vm.dirty_pages_per_s", vm.dirty_pages_per_s, 0)


def _check_background(bg: BackgroundSettings) -> None:
    if bg.cdf not in CDFS:
        raise _bad("background.cdf", bg.cdf, f"one of {sorted(CDFS)}")
    for name in ("flows_per_s", "bulk_per_min", "bulk_max_bytes", "settle_s", "warmup_s",
                 "start_jitter_s", "cooldown_s"):
        _check_range(f"background.{name}", getattr(bg, name), 0)
    _check_range("background.cap_bytes", bg.cap_bytes, 1)


def _check_cover(sc: Scenario) -> None:
    c = sc.cover
    for name in ("rate_mbit", "rate_x_normal"):
        _check_range(f"cover.{name}", getattr(c, name), 0)
    if c.rate_mbit > 0 and c.rate_x_normal > 0:
        raise ScenarioError(f"cover.rate_mbit = {c.rate_mbit} and cover.rate_x_normal = "
                            f"{c.rate_x_normal}: give one cover rate, absolute or relative")
    if not 256 <= c.record_min <= c.record_max <= 65535:
        raise ScenarioError("cover.record_min, cover.record_max: need 256 <= record_min <= "
                            f"record_max <= 65535, got {c.record_min}..{c.record_max}")
    if c.flow_cdf not in CDFS:
        raise _bad("cover.flow_cdf", c.flow_cdf, f"one of {sorted(CDFS)}")
    _check_range("cover.flow_cap_bytes", c.flow_cap_bytes, c.record_max)
    if not any(sc.uses_cover(m) for m in sc.modes):
        return
    rate = sc.cover_rate_bytes_per_s()
    if rate <= 0:
        why = ("the background sends nothing (flows_per_s and bulk_per_min are 0)"
               if c.rate_x_normal > 0 else "neither rate is set")
        raise ScenarioError(f"the cover arm needs a cover rate > 0: set cover.rate_mbit "
                            f"(Mbit/s per VM) or cover.rate_x_normal (x the normal traffic "
                            f"per host); {why}")
    bw = sc.topology.bw_mbit
    if bw is not None and rate * 8 / 1e6 >= bw:
        raise ScenarioError(f"cover rate {rate * 8 / 1e6:.1f} Mbit/s per VM does not fit the "
                            f"hosts' {bw} Mbit/s links (topology.bw_mbit)")
    try:
        sc.cover_settings()
    except CoverError as exc:  # the contract's own checks, in case they are stricter
        raise ScenarioError(f"[cover]: {exc}") from None


def mean_flow_bytes(cdf: str, cap: int) -> float:
    """The mean size of a tenant flow drawn from ``hosts.workload``'s ``cdf`` and capped at
    ``cap`` bytes, exactly (``FlowSizes.sample``: the CDF's piecewise-linear inverse, in MSS
    packets, clipped to [64, cap] bytes)."""
    if cdf not in CDFS:
        raise ScenarioError(f"flow-size distribution {cdf!r}: one of {sorted(CDFS)}")
    lo, hi = 64.0, float(max(cap, 64))
    total = 0.0
    for (x0, p0), (x1, p1) in itertools.pairwise(CDFS[cdf]):
        if p1 > p0:
            total += (p1 - p0) * _mean_clipped(x0 * MSS, x1 * MSS, lo, hi)
    return total


def _mean_clipped(a: float, b: float, lo: float, hi: float) -> float:
    """The mean over t in [0, 1] of clip(a + (b - a) t, lo, hi)."""
    if a == b:
        return min(hi, max(lo, a))
    cuts = sorted({0.0, 1.0} | {t for t in ((lo - a) / (b - a), (hi - a) / (b - a))
                                if 0.0 < t < 1.0})
    out = 0.0
    for t0, t1 in itertools.pairwise(cuts):
        v0, v1 = a + (b - a) * t0, a + (b - a) * t1
        mid = (v0 + v1) / 2
        if mid <= lo:
            out += (t1 - t0) * lo
        elif mid >= hi:
            out += (t1 - t0) * hi
        else:
            out += (t1 - t0) * mid  # linear on the piece: its mean is the midpoint
    return out


def normal_bytes_per_s(bg: BackgroundSettings) -> float:
    """The normal traffic a tenant host originates on average, in payload bytes/s: its flows
    (``flows_per_s`` x the mean capped flow size) plus its bulk transfers (``bulk_per_min`` / 60
    x their mean size; ``hosts.workload`` draws them uniformly from [min(max/4, 4 MiB), max])."""
    lo = min(bg.bulk_max_bytes // 4, 4 << 20)
    bulk = (lo + bg.bulk_max_bytes) / 2
    return bg.flows_per_s * mean_flow_bytes(bg.cdf, bg.cap_bytes) + bg.bulk_per_min / 60 * bulk


def _check_topology(sc: Scenario) -> None:
    """The topology is built here (pure bookkeeping, no root): wrong arguments, unknown attacker
    switches or VM host, and too few hosts for the stealth roles show now, not at trial start."""
    from topologies import registry

    t = sc.topology
    kinds = registry()
    if t.kind not in kinds:
        raise ScenarioError(f"topology.kind {t.kind!r}: choose from {sorted(kinds)}")
    if t.ports not in PORT_KINDS:
        raise _bad("topology.ports", t.ports, f"one of {', '.join(map(repr, PORT_KINDS))}")
    if "global" in sc.attackers.vantage and t.ports not in GLOBAL_CAPTURE_PORTS:
        raise _bad("topology.ports", t.ports, "the 'global' vantage captures in the root "
                   "namespace, which AF_XDP ports bypass: use ports = \"netdev\" or drop "
                   "'global' from attackers.vantage")
    if t.bw_mbit is not None:
        _check_range("topology.bw_mbit", t.bw_mbit, 0, low_open=True)
    cls = kinds[t.kind]
    try:
        bare = cls(*t.args)
    except Exception as exc:  # the topology's own message says what is wrong
        import inspect

        params = list(inspect.signature(cls.build_fabric).parameters)[1:]
        raise _bad("topology.args", t.args, f"{t.kind} takes [{', '.join(params)}]: "
                   f"{exc}") from None
    switches = list(bare.switches())
    bad = [a for a in t.attackers if a not in switches]
    if bad:
        raise _bad("topology.attackers", t.attackers, f"switch names of this {t.kind}: "
                   f"{', '.join(switches)}")
    tenants = bare.tenant_hosts()
    if sc.vm.host not in tenants:
        raise _bad("vm.host", sc.vm.host, f"a tenant host of this {t.kind}: h1..h{len(tenants)}")
    if any(m != "direct" for m in sc.modes) and sc.stealth.n > len(tenants) - 3:
        raise _bad("stealth.n", sc.stealth.n, f"at most {max(len(tenants) - 3, 0)} here: this "
                   f"{t.kind} has {len(tenants)} tenant hosts and the source, destination and "
                   "leader take 3")


def expand(sc: Scenario) -> list[tuple[str, Scenario]]:
    """A sweep's variants: the Cartesian product of ``[sweep]`` (keys like
    ``"stealth.n"`` or ``"background.flows_per_s"``), each a complete, validated scenario with a
    label. A point of a sweep over ``cover.*`` whose cover rate is 0 runs the ``profile`` arm in
    the ``cover`` arm's place. Without a sweep: the scenario itself (validated), labelled ''."""
    if not sc.sweep:
        validate(sc)
        return [("", sc)]
    keys = sorted(sc.sweep)
    topology_swept = any(k.startswith("topology.") for k in keys)
    cover_swept = any(k.startswith("cover.") for k in keys)
    out = []
    for i, values in enumerate(itertools.product(*(sc.sweep[k] for k in keys))):
        v = copy.deepcopy(sc)
        v.sweep = {}
        for key, value in zip(keys, values, strict=True):
            section, _, name = key.partition(".")
            setattr(getattr(v, section), name, value)
        if cover_swept and v.cover_rate_bytes_per_s() == 0:
            # the frontier's zero point: cover at rate 0 is the poster's policy
            v.modes = list(dict.fromkeys("profile" if m == "cover" else m for m in v.modes))
        validate(v, topology=topology_swept or i == 0)  # the name checked is the file's own
        label = "_".join(f"{k.split('.')[-1]}={val}" for k, val in zip(keys, values, strict=True))
        if "/" in label or "\0" in label:
            raise _bad("sweep", sc.sweep, f"variant {label!r} would name a folder with '/'")
        v.name = f"{sc.name}-{label}"
        out.append((label, v))
    return out


def _check_sweep(sc: Scenario) -> None:
    for key, values in sc.sweep.items():
        section, _, name = key.partition(".")
        part = _PARTS.get(section)
        if part is None or name not in _hints(part):
            raise ScenarioError(f"sweep key {key!r}: use '<section>.<field>', e.g. 'stealth.n' "
                                f"(sections: {', '.join(_PARTS)})")
        hint = _hints(part)[name]
        if not isinstance(values, list) or not values:
            raise _bad(f"sweep.{key!r}", values, "a non-empty list of values")
        for value in values:
            if not _fits(value, hint):
                raise _bad(f"sweep.{key!r}", value, f"each value must be {_describe(hint)} "
                           f"(the type of {key})")


def load(path: str | Path) -> Scenario:
    """The scenario in file ``path`` (or the shipped one of that name), checked."""
    p = Path(path)
    for cand in (SCENARIO_DIR / p, SCENARIO_DIR / f"{p}.toml"):
        if not p.exists() and cand.is_file():
            p = cand
    if not p.exists():
        raise ScenarioError(f"no scenario file {path}; shipped ones: "
                            f"{sorted(x.name for x in SCENARIO_DIR.glob('*.toml'))}")
    if not p.is_file():
        raise ScenarioError(f"{p} is not a file: give a scenario TOML file")
    try:
        data = tomllib.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") \
            from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    return from_dict(data, str(p))
