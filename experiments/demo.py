"""``sudo stealth-mtd demo``: attacker versus defender, live, in a few minutes.

Runs the demo scenario (``experiments/scenarios/demo.toml``): with background traffic on a
leaf-spine, one migration of the same VM in each of its arms, side by side: direct (today's live
migration), the poster's stealth protocol with its profile policy (chunks shaped like normal
traffic) and the cover policy (the relay's records take the place of cover records on a schedule
fixed before the migration; the cover runs through the whole trial). While each runs, the
screen shows which step of Algorithms 1-6 is running, the chunks each role has handled, and the
live attacker's current guess (scapy on the compromised edge switch's mirror port). At the end:
the attackers' scores side by side, the costs, what each arm cost on the wire (bandwidth
overhead, time against direct's, the floor), and the paths of the report and plots. Everything
is torn down afterwards, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from experiments.runner import record_trial, run_trial
from experiments.scenario import Scenario, ScenarioError, load
from experiments.testbed import UNPRIVILEGED, Terminated, require_enterable
from experiments.trial import Hooks, arms_meta
from hosts.protocol.mgmt import MgmtError

console = Console()

STEPS = [("1", "Monitor", "detects the anomalous VM, reports it to the controller"),
         ("2", "Controller", "picks intermediates, leader, destination; installs relay rules"),
         ("3", "VM_anomalous", "encrypts data + destination, splits the key, sends chunks"),
         ("4", "VM_available", "marks each chunk as a data segment, forwards it to the leader"),
         ("5", "VM_leader", "rebuilds the key from k shares, decrypts, sends to destination"),
         ("6", "VM_destination", "installs, checks the hash, runs the VM, tells the controller")]


class LiveView(Hooks):
    """The runner's ``Hooks`` as a live panel: the migration record the runner polls, each
    role agent's status (asked here) and the live attacker's latest guess (read from its file)."""

    def __init__(self, live: Live, mode: str, sc: Scenario, run_dir: Path) -> None:
        self.live, self.mode, self.sc = live, mode, sc
        self.text = "starting"
        self.rec: dict[str, Any] = {}
        self.roles: dict[str, dict[str, Any]] = {}
        self.guess: dict[str, Any] = {}
        self.peak: dict[str, Any] = {}
        self.guess_file = run_dir / f"live-attacker-{mode}.jsonl"
        self.names: dict[str, str] = {}
        self.last = 0.0

    def phase(self, text: str) -> None:
        self.text = text
        self._read_guess()
        self.refresh()

    def up(self, tb: Any) -> None:
        self.names = {h["ip"]: h["name"] for h in tb.description["hosts"]}
        x = next(h["name"] for h in tb.description["hosts"] if h["attacker"])
        require_enterable(self.guess_file.parent, "the live attacker")
        self.guess_file.unlink(missing_ok=True)
        self.guess_file.touch(0o644)  # the attacker runs unprivileged: it may write only here
        pw = pwd.getpwnam(UNPRIVILEGED)
        os.chown(self.guess_file, pw.pw_uid, pw.pw_gid)
        # at the lowest priority: scapy's per-packet work took a core from the agents (the
        # cover arm aborted under it); a real attacker's sniffing costs the tenants no CPU
        tb.popen(x, ["nice", "-n", "19", sys.executable, "-m", "experiments.live_attacker",
                     "--iface", f"{x}-eth0", "--out", str(self.guess_file)],
                 log_name=f"live-attacker-{self.mode}.log", unprivileged=True, raw_sockets=True)

    def migrating(self, tb: Any, rec: dict[str, Any]) -> None:
        self.rec = rec
        if time.monotonic() - self.last < 0.5:
            return
        self.last = time.monotonic()
        roles = rec.get("roles") or {}
        hosts = {"source": self.sc.vm.host, "destination": roles.get("destination"),
                 "leader": roles.get("leader")}
        for i, h in enumerate(roles.get("intermediates") or []):
            hosts[f"intermediate {i + 1}"] = h
        for role, h in hosts.items():
            if not h:
                continue
            try:
                st = tb.agent_call(h, {"op": "status", "migration": rec["migration"]},
                                   timeout=1.0)
                self.roles[role] = {"host": h, "state": st.get("state"),
                                    "chunks": st.get("stats", {}).get("chunks")}
            except MgmtError:
                self.roles[role] = {"host": h, "state": "unreachable", "chunks": None}
        self._read_guess()
        self.refresh()

    def _read_guess(self) -> None:
        try:
            lines = self.guess_file.read_text().splitlines()
        except FileNotFoundError:
            return
        guesses = []
        for line in lines:
            try:
                guesses.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                pass
        if guesses:
            self.guess = guesses[-1]
            self.peak = max(guesses, key=lambda g: g.get("score") or 0.0)

    def step_rows(self) -> list[tuple[str, str, str, str]]:
        st = self.rec.get("state")
        r = self.roles
        src, dst = r.get("source", {}), r.get("destination", {})
        inter = [v for k, v in r.items() if k.startswith("intermediate")]
        lead = r.get("leader", {})
        direct = self.mode == "direct"

        def mark(done: bool, active: bool) -> str:
            return "[green]done[/]" if done else ("[yellow]running[/]" if active else "·")

        rows = [mark(bool(self.rec), False),
                mark(bool(self.rec), False)]
        rows.append(mark(src.get("state") in ("sent", "released"),
                         src.get("state") == "sending"))
        rows.append("n/a (direct)" if direct else mark(
            bool(inter) and all(i.get("state") in ("closed", "done") for i in inter),
            any(i.get("state") == "relaying" for i in inter)))
        rows.append("n/a (direct)" if direct else mark(lead.get("state") in ("done", "closed"),
                                                       bool(lead.get("state") == "prepared"
                                                            and src.get("chunks"))))
        rows.append(mark(st == "done", dst.get("state") == "receiving"))
        detail = [f"anomaly on {self.sc.vm.host}" if self.rec else "",
                  self._relay_detail(),
                  f"{src.get('chunks') or 0} chunks from {src.get('host', '?')}",
                  ", ".join(f"{i['host']}: {i.get('chunks') or 0}" for i in inter),
                  f"{lead.get('host', '')} {lead.get('state') or ''}",
                  f"{dst.get('host', '?')} {dst.get('state') or ''}"]
        return [(n, who, rows[i], detail[i]) for i, (n, who, _) in enumerate(STEPS)]

    def _relay_detail(self) -> str:
        """What the controller installed: relay rules under a cookie, or none (the cover arm's
        hops are streams of the agents' cover muxes)."""
        if not self.rec:
            return ""
        hops, cookie = len(self.rec.get("paths") or []), self.rec.get("cookie")
        return f"{hops} hops, cookie {cookie:#x}" if cookie is not None else \
            f"{hops} hops inside the cover traffic, no relay rule"

    def name(self, ip: str | None) -> str:
        return self.names.get(ip or "", ip or "?")

    def suspect(self, g: dict[str, Any]) -> str:
        """The destination the attacker would name now: its guess, else its top byte sink."""
        ip = g.get("destination") or next(iter(g.get("top_destinations") or []), [None])[0]
        return self.name(ip)

    def render(self) -> Panel:
        t = Table(expand=True, show_edge=False)
        for c in ("alg", "who", "status", "progress"):
            t.add_column(c)
        for n, who, status, detail in self.step_rows():
            t.add_row(n, who, status, detail)
        g, p = self.guess, self.peak
        if g:
            alarm = "[red]ALARM[/]" if g.get("alarm") else "[green]quiet[/]"
            guess = (f"live attacker on the source's edge-switch mirror: {alarm}, score "
                     f"{g['score']:.1f}, leading suspect for the destination "
                     f"{self.suspect(g)}  ({g['packets']} packets seen)\n"
                     f"  its most alarmed moment so far: score {p['score']:.1f}, suspect "
                     f"{self.suspect(p)}")
        else:
            guess = "live attacker on the source's edge-switch mirror: warming up"
        truth = ""
        roles = self.rec.get("roles") or {}
        if roles.get("destination"):
            truth = f"[dim]ground truth: destination {roles['destination']}[/]"
        arm = {"direct": "one unshaped stream", "profile": "the poster's shaping policy",
               "fixed": "fixed-size chunks", "cover": "inside the cover schedule"}.get(
                   self.mode, f"chunk policy {self.sc.policy_of(self.mode)}")
        return Panel(Group(f"[bold]{self.mode}[/] migration ({arm}) — {self.text}", t, guess,
                           truth),
                     title="stealth-mtd demo: attacker versus defender")

    def refresh(self) -> None:
        self.live.update(self.render())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stealth-mtd demo", description=__doc__)
    ap.add_argument("--scenario", default="demo", help="scenario (default: the demo's)")
    ap.add_argument("--out", default=None, help="run folder (default results/demo-<time>)")
    args = ap.parse_args(argv)
    try:
        sc = load(args.scenario)
    except ScenarioError as exc:
        console.print(f"[red]scenario error:[/] {exc}")
        return 2
    out = Path(args.out or f"results/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    truths = []
    try:
        for i, mode in enumerate(sc.modes):
            with Live(console=console, refresh_per_second=4) as live:
                view = LiveView(live, mode, sc, out)
                gt = run_trial(sc, mode, 0, i, out, hooks=view)
            console.print(record_trial(out, truths, gt, arms_meta(sc)))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: everything torn down")
        return 130
    except Terminated:
        console.print("[yellow]terminated[/] (SIGTERM): everything torn down")
        return 143
    from experiments import analysis, report, tables

    with console.status("attackers analysing the captures"):
        an = analysis.analyze(out, sc)
        report.write(out, sc, an)
    metrics = an.metrics
    console.print(tables.comparison_table(metrics))
    console.print(tables.cost_table(metrics))
    console.print(tables.arms_table(an.arms))
    console.print(f"report: {out / 'report.md'}")
    for p in sorted((out / "plots").glob("*.png")):
        console.print(f"plot:   {p}")
    return 0
