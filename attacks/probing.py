"""The active probers' recorded observations and the curious intermediate, scored per arm.

The probers (``experiments.probers``) run in an attacker host during a trial and append what they
saw to ``logs/<mode>-<trial>/probers/<name>.jsonl`` in the run folder, one JSON line per round:

- ``service-scan``: ``{"time", "probes": [ServiceProbe fields]}`` — a connect to the VM's port on
  every address it scans. Scored (``scan_figures``): did a round before the migration find the VM
  (an open port whose banner names a VM), at which address after it (``attacks.active.
  locate_service`` on the last round before and the first round after), and whether that address
  is the destination host's ("found the VM's new host"). The VM keeps its own address wherever it
  runs, so a scan finds the VM, not where it now runs.
- ``latency``: ``{"time", "ip", "rtt_s"}`` — one TCP connect time (None: no answer). Scored
  (``latency_scores``, ``latency_figures``): per window the largest ratio of a target's median
  RTT in the window to its median over the whole series (no label used), the windows labelled
  by the migration's span; the AUC of that score, and an alarm threshold chosen on the trials of
  the *other* workload seeds (Youden's J), its detection and false-alarm rate on the scored trial.

The curious intermediate (``curious_figures``): no vantage of a normal run holds an
intermediate's share and the records it relayed (the agent keeps them in memory; the hook that
writes them out is a test hook). So it is scored as what the design grants it: one share of a
k-of-n split and the chunk frames it relays, *re-enacted* with the run's k, n and migration label
(a fresh random key split with the attacker's own GF(2^8) code, chunks sealed in the published
format) and attacked with ``attacks.intermediate.curious_intermediate``. Its figures are the
analytic bound, demonstrated: ``consistent_values_per_key_byte`` (256 with fewer than k shares)
and whether the attack opened a chunk or named the destination; ``view`` says so.

Both feed ``metrics.json["active"]`` through ``analyze_probes`` (called by
``attacks.pipeline.analyze_folder``, so the runner and ``attack analyze --run`` agree).
"""

from __future__ import annotations

import json
import random
import statistics
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attacks.active import ServiceProbe, locate_service, parse_banner
from attacks.detection import label_windows
from attacks.intermediate import AD_PREFIX, consistent_secret_bytes, curious_intermediate, gf_mul
from attacks.stats import interval
from attacks.truth import TrialTruth

PROBES_DIR = "probers"
PROBERS = ("service-scan", "latency")
CURIOUS = "curious-intermediate"
ACTIVE_SCHEMA = "stealth-mtd/active/1"
PROPORTIONS = {"found_vm", "same_address", "found_new_host", "alarm_detected", "key_recovered",
               "destination_recovered"}


def probe_log(run_dir: Path, truth: TrialTruth, name: str) -> Path:
    """Where prober ``name`` of ``truth``'s trial writes its observations."""
    return Path(run_dir) / "logs" / f"{truth.mode}-{truth.trial_in_mode}" / PROBES_DIR / (
        f"{name}.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path``; a last line cut short by the prober's end is dropped."""
    out = []
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
    return out


# ---------------------------------------------------------------- service scan


def _probes(rnd: dict[str, Any]) -> list[ServiceProbe]:
    return [ServiceProbe(**p) for p in rnd["probes"]]


def scan_figures(rounds: Sequence[dict[str, Any]], truth: TrialTruth) -> dict[str, Any]:
    """One trial's scan rounds scored against its migration (see the module docstring)."""
    start, end = truth.migration_start, truth.migration_end
    if start is None or end is None:
        return {"rounds": len(rounds), "found_vm": None, "vm_address": None,
                "same_address": None, "found_new_host": None, "note": "no migration span"}
    before = [r for r in rounds if r["time"] < start]
    after = [r for r in rounds if r["time"] > end]
    rec: dict[str, Any] = {"rounds": len(rounds), "rounds_before": len(before),
                           "rounds_after": len(after)}
    if not before or not after:
        return {**rec, "found_vm": None, "vm_address": None, "same_address": None,
                "found_new_host": None, "note": "no scan round before and after the migration"}
    # the attacker compares its first scan with its last: it does not know when the VM moved
    # (the migration's span above only says whether the figure means anything)
    pre, post = _probes(rounds[0]), _probes(rounds[-1])
    loc = locate_service(pre, post)
    found = any(p.open and parse_banner(p.banner)[0] for p in pre)
    dest = truth.destination.ip if truth.destination else None
    claimed = next((parse_banner(p.banner)[2] for p in post if p.ip == loc.best), None)
    new_host = loc.best is not None and (loc.best == dest or (
        claimed is not None and truth.destination is not None
        and claimed in (truth.destination.host, dest)))
    return {**rec, "found_vm": found, "identity": loc.identity, "vm_address": loc.best,
            "same_address": loc.same_address, "found_new_host": bool(new_host)}


# ---------------------------------------------------------------- latency


def latency_scores(samples: Sequence[dict[str, Any]], window_s: float,
                   timeout_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(window_starts, scores)``: per window the largest ratio, over the probed targets, of the
    target's median RTT in the window to its median over the series (no answer counts as
    ``timeout_s``). Windows without a sample are left out."""
    if window_s <= 0:
        raise ValueError(f"window_s {window_s}: must be > 0")
    if not samples:
        return np.zeros(0), np.zeros(0)
    rtt = {}
    for s in samples:
        rtt.setdefault(s["ip"], []).append(
            (float(s["time"]), timeout_s if s["rtt_s"] is None else float(s["rtt_s"])))
    base = {ip: statistics.median(r for _, r in xs) for ip, xs in rtt.items()}
    t0 = min(float(s["time"]) for s in samples)
    per: dict[int, float] = {}
    for ip, xs in rtt.items():
        by_w: dict[int, list[float]] = {}
        for t, r in xs:
            by_w.setdefault(int((t - t0) // window_s), []).append(r)
        for w, rs in by_w.items():
            ratio = statistics.median(rs) / base[ip] if base[ip] > 0 else 1.0
            per[w] = max(per.get(w, 0.0), ratio)
    ws = sorted(per)
    return t0 + np.array(ws, dtype=float) * window_s, np.array([per[w] for w in ws])


def _auc(scores: np.ndarray, y: np.ndarray) -> float | None:
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def _youden(scores: np.ndarray, y: np.ndarray) -> float | None:
    """The threshold (alarm when score >= it) that maximises TPR - FPR on these windows."""
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, th = roc_curve(y, scores, drop_intermediate=False)
    j = tpr - fpr
    return float(th[np.flatnonzero(j == j.max())[-1]])  # the lowest threshold with the best J


def latency_figures(trials: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray, str]]
                    ) -> dict[int, dict[str, Any]]:
    """Per trial ``(window_starts, scores, labels, seed group)`` → its AUC, and the alarm of a
    threshold chosen on the trials of the other groups: detected (an alarm in the span), its
    window detection rate and false-alarm rate."""
    out = {}
    for trial, (_, s, y, group) in trials.items():
        rest = [(s2, y2) for t2, (_, s2, y2, g2) in trials.items() if g2 != group and t2 != trial]
        th = (_youden(np.concatenate([a for a, _ in rest]), np.concatenate([b for _, b in rest]))
              if rest else None)
        rec: dict[str, Any] = {"windows": len(s), "positive_windows": int(y.sum()),
                               "detection_auc": _auc(s, y), "threshold": th}
        if th is None or not y.any() or y.all():
            rec.update(alarm_detected=None, alarm_tpr=None, alarm_fpr=None)
        else:
            alarm = s >= th
            rec.update(alarm_detected=bool(alarm[y].any()), alarm_tpr=float(alarm[y].mean()),
                       alarm_fpr=float(alarm[~y].mean()))
        out[trial] = rec
    return out


# ---------------------------------------------------------------- curious intermediate


def split_secret(secret: bytes, k: int, n: int, rng: random.Random, poly: int = 0x11B
                 ) -> list[bytes]:
    """Shamir over GF(2^8), the attacker's own: n shares ``y bytes ‖ x`` (x = 1..n)."""
    if not 2 <= k <= n <= 255:
        raise ValueError(f"k={k}, n={n}: need 2 <= k <= n <= 255")
    coefs = [[b, *(rng.randrange(256) for _ in range(k - 1))] for b in secret]
    shares = []
    for x in range(1, n + 1):
        ys = bytearray()
        for c in coefs:
            acc = 0
            for a in reversed(c):  # Horner
                acc = gf_mul(acc, x, poly) ^ a
            ys.append(acc)
        shares.append(bytes(ys) + bytes([x]))
    return shares


def curious_figures(truth: TrialTruth, k: int, seed: int, chunks: int = 4,
                    shares_held: int = 1) -> dict[str, Any]:
    """One intermediate of ``truth``'s migration, re-enacted: ``shares_held`` (one, as an
    intermediate holds) shares of a k-of-n split of a fresh 256-bit key, ``chunks`` frames
    sealed under it (a manifest naming the destination first), attacked with the migration's
    label. See the module docstring."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    n = len(truth.intermediates)
    if not truth.intermediates:
        return {"intermediates": 0, "key_recovered": None, "destination_recovered": None,
                "view": "no intermediate in this arm"}
    rng = random.Random(seed * 1_000_003 + truth.trial)
    key = bytes(rng.randrange(256) for _ in range(32))
    shares = split_secret(key, k, max(n, k), rng)
    label = truth.migration or f"trial-{truth.trial}"
    dest = truth.destination.ip if truth.destination else "0.0.0.0"
    prefix = bytes(rng.randrange(256) for _ in range(7))
    bodies = []
    pts = [json.dumps({"vm": "vm", "dest_address": dest}).encode()] + [
        bytes(rng.randrange(256) for _ in range(512)) for _ in range(chunks - 1)]
    for i, pt in enumerate(pts):
        last = i == len(pts) - 1
        nonce = prefix + struct.pack(">IB", i, int(last))
        ad = AD_PREFIX + label.encode() + b"|" + struct.pack(">I", i)
        bodies.append(struct.pack(">IB7s", i, int(last), prefix)
                      + AESGCM(key).encrypt(nonce, pt, ad))
    peers = [h.ip for h in (truth.source, truth.leader) if h is not None]
    known = [h.ip for h in truth.hosts]
    held = shares[:shares_held]
    res = curious_intermediate(held, bodies, [label], known, peers)
    return {"intermediates": len(truth.intermediates), "k": k, "shares_held": len(held),
            "consistent_values_per_key_byte": consistent_secret_bytes(held, k),
            "key_recovered": res.key is not None, "keys_tried": res.keys_tried,
            "chunks_opened": res.chunks_opened,
            "destination_recovered": res.destination == dest,
            "view": "re-enacted: one share and the relayed frames as the design grants them "
                    "(no vantage of a run holds an intermediate's share)"}


# ---------------------------------------------------------------- the run


def _aggregate(records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields = sorted({f for r in records for f, v in r.items()
                     if isinstance(v, bool | int | float) and f not in ("trial",)})
    for f in fields:
        vals = [r.get(f) for r in records]
        vals = [float(v) if isinstance(v, bool) else v for v in vals]
        out[f] = interval(vals, seed, proportion=f in PROPORTIONS)
    return out


def analyze_probes(run_dir: Path, trials: Sequence[TrialTruth], window_s: float,
                   span: str = "migration", seed: int = 0) -> dict[str, Any] | None:
    """``metrics.json["active"]``: every prober log of the finished ``trials`` and, if the run's
    ``scenario.json`` enables it, the curious intermediate; records and per-arm means with their
    intervals. None when the run had neither."""
    sc = _scenario(run_dir)
    att = sc.get("attackers", {})
    curious = bool(att.get("curious_intermediate"))
    k = int(sc.get("stealth", {}).get("k", 2))
    records: list[dict[str, Any]] = []
    lat: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, str]] = {}
    by_id = {t.trial: t for t in trials}
    enabled = set(att.get("active") or [])
    for t in trials:
        base = {"trial": t.trial, "mode": t.mode}
        for name in PROBERS:
            log = probe_log(run_dir, t, name)
            if not log.exists():
                if name in enabled:  # enabled but silent: the row says so, it is not dropped
                    records.append({**base, "attacker": name,
                                    "note": "the prober recorded nothing"})
            elif name == "service-scan":
                records.append({**base, "attacker": name, **scan_figures(read_jsonl(log), t)})
            else:
                starts, scores = latency_scores(read_jsonl(log), window_s)
                y = label_windows(starts, window_s, *t.span(span))
                lat[t.trial] = (starts, scores, y, f"seed:{t.seed}" if t.seed is not None
                                else f"trial:{t.trial}")
        if curious and t.intermediates:  # an arm without intermediates has none to be curious
            records.append({**base, "attacker": CURIOUS, **curious_figures(t, k, seed)})
    for trial, rec in latency_figures(lat).items():
        records.append({"trial": trial, "mode": by_id[trial].mode, "attacker": "latency",
                        "label_span": span, **rec})
    if not records:
        return None
    records.sort(key=lambda r: (r["trial"], r["attacker"]))
    modes: dict[str, dict[str, Any]] = {}
    for mode in dict.fromkeys(t.mode for t in trials):
        for name in (*PROBERS, CURIOUS):
            mine = [r for r in records if r["mode"] == mode and r["attacker"] == name]
            if mine:
                modes.setdefault(mode, {})[name] = _aggregate(mine, seed)
    return {"schema": ACTIVE_SCHEMA, "records": records, "modes": modes}


def _scenario(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / "scenario.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
