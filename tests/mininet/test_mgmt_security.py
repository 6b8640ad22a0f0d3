"""The management plane on the real testbed lets no one in: from an attacker host (as the
attacker programs run, and as root without the run secret) and from a tenant workload's
identity, every controller op and every agent op is refused — hidden, denied or refused and
logged — while a migration in the same testbed completes and the controller logs no traceback.
Signed requests of the wrong identity (a forged alarm for another host, a second key for a
registered host, faults from the runner) are refused too.

What this does *not* show, because it is not so: a root process in an attacker host can read
``/proc/<pid>/root/run/stealth-mtd/<run>/secret`` (all Mininet hosts share one PID namespace
and root may cross mount namespaces) and then speak as anyone; see README "Security
properties"."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(400)]

PROBE = Path(__file__).with_name("mgmt_probe.py")


@pytest.fixture(scope="module")
def bed():
    from experiments.fleet import VMSpec, start_agents, start_workload
    from experiments.testbed import Testbed
    from topologies.leafspine import LeafSpineTopo

    with Testbed(LeafSpineTopo(2, 2, 3, attackers="l1"), seed=13) as tb:
        start_agents(tb, VMSpec("h1", mib=2, dirty_pages_per_s=5))
        start_workload(tb, seed=13, flows_per_s=1.0, cap_bytes=200_000, bulk_per_min=0.0)
        yield tb
        text = (tb.run_dir / "controller.log").read_text()
        err = (tb.run_dir / "controller.err").read_text()
        assert "Traceback" not in text + err, (text + err)[-3000:]


def probe(tb, host: str, unprivileged: bool) -> dict:
    from experiments.testbed import unprivileged_cmd

    cmd = [sys.executable, str(PROBE), tb.mgmt_path, tb.agent_sock("h2"), "h2",
           str(tb.controller.pid)]
    if unprivileged:
        cmd = unprivileged_cmd(cmd, raw_sockets=True)  # as the live attacker runs
    out = tb.host(host).cmd(" ".join(shlex.quote(c) for c in cmd))
    return json.loads(out.strip().splitlines()[-1])


def _summary(res: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in res["tries"]:
        key = t["got"].split(":")[0].split(" ")[0]
        out[key] = out.get(key, 0) + 1
    return out


def _log_count(tb, name: str, needle: str) -> int:
    return (tb.run_dir / name).read_text().count(needle)


def test_attacker_programs_cannot_reach_the_management_plane(bed):
    tb = bed
    res = probe(tb, "x1", unprivileged=True)
    print("attacker, unprivileged:", res["uid"], res["listing"], _summary(res))
    assert res["uid"] != 0
    assert res["listing"] == []  # the private folder is an empty tmpfs in x1
    for t in res["tries"]:
        assert t["got"] == ("hidden" if t["via"] == "path" else "denied"), t


def test_tenant_workload_identity_cannot_reach_it(bed):
    from experiments.testbed import code_needs_read_search

    res = probe(bed, "h3", unprivileged=True)
    print("tenant workload:", res["uid"], res["listing"], _summary(res))
    if code_needs_read_search():
        # the checkout is where nobody may read it (e.g. root's home): the unprivileged programs
        # get CAP_DAC_READ_SEARCH to load their code, so they may list the folder, still not use it
        assert isinstance(res["listing"], list)
    else:
        assert res["listing"] == "PermissionError"  # sees the folder, may not enter it
    assert {t["got"] for t in res["tries"]} == {"denied"}


def test_root_in_an_attacker_host_without_the_secret_is_refused_and_logged(bed):
    tb = bed
    before_ctl = _log_count(tb, "controller.log", "event=mgmt_refused")
    before_agent = _log_count(tb, "agent-h2.log", "event=mgmt_refused")
    res = probe(tb, "x1", unprivileged=False)
    print("attacker, root:", res["listing"], _summary(res))
    via_proc = [t for t in res["tries"] if t["via"] != "path"]
    assert all(t["got"] == "hidden" for t in res["tries"] if t["via"] == "path")
    for t in via_proc:  # peer uid 0 passes; the MAC does not
        assert t["got"].startswith("refused: "), t
        assert "unauthenticated" in t["got"] or "bad MAC" in t["got"], t
    n_ctl = sum(t["server"] == "controller" for t in via_proc)
    n_agent = len(via_proc) - n_ctl
    assert _log_count(tb, "controller.log", "event=mgmt_refused") - before_ctl == n_ctl
    assert _log_count(tb, "agent-h2.log", "event=mgmt_refused") - before_agent == n_agent
    st = tb.mgmt({"op": "status"})
    assert st["vms"] == {"vm1": "h1"} and "x1" not in st["agents"]


def test_signed_requests_beyond_the_callers_rights_are_refused(bed):
    from hosts.protocol import auth
    from hosts.protocol.mgmt import MgmtError, call

    tb = bed
    secret = tb._secret
    h2 = auth.KeyRing.for_agent(secret, "h2").credential()
    mon = auth.KeyRing.for_monitor(secret, "h3").credential()
    x1 = auth.Credential.from_secret(secret, "agent:x1")
    pub = tb.agent_call("h2", {"op": "status"})["pubkey"]
    bad = [
        (x1, {"op": "register", "host": "x1", "ip": "10.0.1.1", "agent": "/tmp/x",
              "pubkey": "ab" * 32}, "unknown identity"),
        (h2, {"op": "register", "host": "h2", "ip": tb.ip("h2"), "agent": tb.agent_sock("h2"),
              "pubkey": "cd" * 32}, "another pubkey"),
        (h2, {"op": "register", "host": "h1", "ip": tb.ip("h1"), "agent": "/tmp/x",
              "pubkey": "cd" * 32}, "own host"),
        (mon, {"op": "anomaly", "host": "h1", "kind": "forged"}, "own host"),
        (mon, {"op": "status"}, "may not call"),
        (mon, {"op": "defaults", "n": 1}, "may not call"),
        (tb.cred, {"op": "migrate", "source": "h1", "faults": {"h1": {"record_key": "/tmp/k"}}},
         "test-only"),
        (tb.test_cred, {"op": "migrate", "source": "h1", "faults": {}}, "unknown identity"),
        (tb.cred, {"op": "defaults", "faults": {"h1": {"die_on_share": 1}}}, "unknown keys"),
    ]
    for cred, msg, why in bad:
        with pytest.raises(MgmtError, match=why):
            call(tb.mgmt_path, msg, cred)
    # the monitor of h3 may ask about its own host, and hears of nothing else
    assert call(tb.mgmt_path, {"op": "migrations_active"}, mon)["migrations"] == []
    with pytest.raises(MgmtError, match="may not call"):  # the runner may not drive a role
        tb.agent_call("h2", {"op": "prepare", "view": {}})
    assert tb.agent_call("h2", {"op": "status"})["pubkey"] == pub  # h2's key unchanged


def test_a_migration_in_the_same_testbed_completes(bed):
    from experiments.fleet import wait_migration

    tb = bed
    r = tb.mgmt({"op": "migrate", "source": "h1", "mode": "stealth", "n": 2, "k": 2,
                 "seed": 3})
    rec = wait_migration(tb, r["migration"], timeout=200)
    assert rec["state"] == "done", rec["result"]["reason"]
    assert tb.mgmt({"op": "status"})["vms"] == {"vm1": r["roles"]["destination"]}

