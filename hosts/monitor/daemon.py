"""The monitor's loop: sample the host, judge each interval, report an alarm to the controller.

A ``Monitor`` per host, ``tick()`` once per interval (``run``). The first ``train_s`` seconds
train the ``Detector``; after that a ``Verdict`` that is an alarm is reported to the controller
over ``hosts.protocol.mgmt`` (``{"op": ANOMALY, "host", "kind", "score", ...}``; once, or again
``rearm_s`` after a report), and the controller starts the stealth migration with no human
step (Alg 1 → Alg 2 … Alg 6). Both calls are signed with the monitor's own credential
(``monitor:<host>``, ``hosts.protocol.auth``); the policy lets it report only its own host.

Migration awareness: every interval the monitor asks the controller which migrations run
(``{"op": MIGRATIONS_ACTIVE}``; a monitor is told only of its own host's). While this host
plays a role in one (and ``grace_s`` after), the features discount the migration
(``hosts.monitor.features``). Each interval is judged both ways — with and without awareness —
and both verdicts go to the JSON log, so one run measures the false alarms migration-awareness
avoids; ``report`` says which verdict is sent.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from hosts.monitor.detector import Detector, Judge, Verdict
from hosts.monitor.features import FeatureExtractor, MigrationContext
from hosts.monitor.procfs import ProcessFinder, migration_socket_bytes, read_sample
from hosts.protocol import ops
from hosts.protocol.auth import Credential
from hosts.protocol.mgmt import MgmtError, call

log = logging.getLogger("stealth_mtd.monitor")


def active_context(migrations: list[dict[str, Any]], host: str) -> MigrationContext | None:
    """The discount for ``host`` from the controller's ``migrations_active`` reply."""
    ports: set[int] = set()
    peers: set[str] = set()
    for m in migrations:
        if host in m.get("hosts", []):
            ports |= {int(p) for p in m.get("ports", [])}
            peers |= set(m.get("ips", []))
    return MigrationContext(ports, peers) if ports else None


class Monitor:
    """The monitor of one host; ``tick()`` once per interval."""

    def __init__(self, host: str, ip: str, mgmt: str | None, train_s: float = 30.0,
                 report: str = "aware", seed: int = 0, grace_s: float = 10.0,
                 log_json: str | None = None, proc: str = "/proc",
                 rearm_s: float | None = None, cred: Credential | None = None) -> None:
        self.host, self.ip, self.mgmt = host, ip, mgmt
        self.cred = cred
        self.train_s, self.report, self.grace_s = train_s, report, grace_s
        self.proc = proc
        self.finder = ProcessFinder(proc)
        self.fx = {"aware": FeatureExtractor(), "unaware": FeatureExtractor()}
        self.det = Detector(seed)
        self.judges: dict[str, Judge] = {}
        self.train_rows: list[dict[str, float]] = []
        self.prev = read_sample(self.finder, proc)
        for fx in self.fx.values():  # what already exists is not new
            fx.step(self.prev, self.prev)
        self.t0 = self.prev.t
        self.ctx: MigrationContext | None = None
        self.ctx_until = 0.0
        self.reported: dict[str, Any] | None = None
        self.reported_at = 0.0
        self.rearm_s = rearm_s  # report again this long after a report (None: once)
        self.out = open(log_json, "a") if log_json else None

    def _poll_migrations(self) -> None:
        if not self.mgmt:
            return
        try:
            reply = call(self.mgmt, {"op": ops.MIGRATIONS_ACTIVE}, self.cred, timeout=2.0)
        except MgmtError as exc:
            log.debug("migrations_active failed: %s", exc)
            return
        ctx = active_context(reply.get("migrations", []), self.host)
        now = time.monotonic()
        if ctx is not None:
            if self.ctx is not None and now < self.ctx_until:
                ctx.ports |= self.ctx.ports
                ctx.peers |= self.ctx.peers
            self.ctx, self.ctx_until = ctx, now + self.grace_s
        elif self.ctx is not None and now >= self.ctx_until:
            self.ctx = None

    def tick(self) -> dict[str, Any]:
        if (self.reported is not None and self.rearm_s is not None
                and time.monotonic() - self.reported_at > self.rearm_s):
            self.reported = None
        self._poll_migrations()
        cur = read_sample(self.finder, self.proc)
        ctx = self.ctx
        socks = migration_socket_bytes(ctx.ports) if ctx is not None else None
        rows = {"unaware": self.fx["unaware"].step(self.prev, cur),
                "aware": self.fx["aware"].step(self.prev, cur, ctx, socks)}
        self.prev = cur
        rec: dict[str, Any] = {"t": time.time(), "host": self.host, "migrating": ctx is not None,
                               "features": rows["aware"][0]}
        if not self.det.trained:
            self.train_rows.append(rows["aware"][0])
            rec["training"] = True
            if cur.t - self.t0 >= self.train_s and len(self.train_rows) >= 5:
                self.det.fit(self.train_rows)
                for fx in self.fx.values():
                    fx.freeze()
                self.judges = {k: Judge(self.det) for k in self.fx}
                rec["trained"] = {"rows": len(self.train_rows), "threshold": self.det.threshold,
                                  "limits": self.det.limits}
                log.info("event=trained host=%s rows=%d threshold=%.3f limits=%s", self.host,
                         len(self.train_rows), self.det.threshold, self.det.limits)
        else:
            for mode, (row, notes) in rows.items():
                v = self.judges[mode].judge(row, notes)
                rec[mode] = {"alert": v.alert, "kind": v.kind, "score": round(v.score, 4),
                             "rules": v.rules}
                if notes["rare"]:
                    rec[mode]["rare"] = notes["rare"]
                if v.alert and mode == self.report and self.reported is None:
                    rec["reported"] = self._report(v, row)
        if self.out is not None:
            self.out.write(json.dumps(rec) + "\n")
            self.out.flush()
        return rec

    def _report(self, v: Verdict, row: dict[str, float]) -> dict[str, Any]:
        msg = {"op": ops.ANOMALY, "host": self.host, "kind": v.kind, "score": round(v.score, 4),
               "rules": v.rules, "detected_at": time.time()}
        self.reported = msg
        self.reported_at = time.monotonic()
        log.warning("event=anomaly host=%s kind=%s score=%.3f rules=%s features=%s", self.host,
                    v.kind, v.score, v.rules, json.dumps(row))
        out = {k: v for k, v in msg.items() if k != "op"}
        if not self.mgmt:
            return {**out, "sent": False}
        try:
            reply = call(self.mgmt, msg, self.cred, timeout=30.0)
        except MgmtError as exc:
            log.warning("event=report_failed host=%s error=%s", self.host, exc)
            return {**out, "sent": True, "error": str(exc)}
        log.info("event=reported host=%s reply=%s", self.host, json.dumps(reply))
        return {**out, "sent": True, "reply": reply}


def run(mon: Monitor, interval: float, duration: float | None = None) -> None:
    """Tick every ``interval`` seconds (drift-free) until ``duration`` or a signal."""
    t_next = time.monotonic() + interval
    end = None if duration is None else time.monotonic() + duration
    while end is None or time.monotonic() < end:
        time.sleep(max(0.0, t_next - time.monotonic()))
        t_next += interval
        try:
            mon.tick()
        except Exception:  # a bad read (a process vanished mid-read) costs one interval
            log.exception("tick failed")
