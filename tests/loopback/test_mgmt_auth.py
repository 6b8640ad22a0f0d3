"""Real agent processes refuse what the policy forbids: role commands from anyone but the
controller, unsigned or foreign-keyed requests, and — without the test-only switch — any fault
injection, so a normal run cannot make the source write its key anywhere."""

from __future__ import annotations

import os

import pytest

from experiments.loopback import LoopbackBed
from hosts.protocol import auth
from hosts.protocol.mgmt import call

from .conftest import NET


@pytest.fixture()
def plain_bed(tmp_path):
    """Two agents started as a normal run starts them: no test switch."""
    b = LoopbackBed(str(tmp_path / "plain"))
    try:
        b.add_agent("p1", f"{NET}41", vm="vm7", vm_mib=2, wait=False)
        b.add_agent("p2", f"{NET}42", wait=False)
        b.wait_registered(["p1", "p2"])
        yield b
    finally:
        b.close()


def test_fault_injection_needs_the_test_switch(plain_bed, tmp_path):
    keyfile = tmp_path / "key.json"
    plan = plain_bed.plan("m-nofault", "direct", "p1", "p2",
                          faults={"p1": {"record_key": str(keyfile)}})
    res = plain_bed.migrate(plan, timeout_s=30)
    assert res.status == "aborted" and "fault injection is test-only" in res.reason
    assert not keyfile.exists()
    assert plain_bed.status("p1")["vm"]["running"]  # the VM never left
    log = open(os.path.join(plain_bed.root, "p1.log")).read()
    assert "event=command_refused op=prepare" in log and "test-only" in log
    # the same bed without faults migrates
    res = plain_bed.migrate(plain_bed.plan("m-ok", "direct", "p1", "p2"), timeout_s=60)
    assert res.ok, res.reason


def test_agents_accept_role_commands_only_from_the_controller(plain_bed):
    b = plain_bed
    sock = b.registered["p2"]["agent"]
    monitor = auth.Credential.from_secret(b.secret, "monitor:p2")
    other_agent = auth.Credential.from_secret(b.secret, "agent:p1")
    stranger = auth.Credential.from_secret(auth.new_secret(), auth.CONTROLLER)
    for op in ("prepare", "start", "release", "abort", "forget", "reset_peak", "shutdown"):
        msg = {"op": op, "migration": "x", "view": {}}
        for cred in (b.runner if op in ("prepare", "start", "release", "abort", "forget")
                     else b.cred, monitor, other_agent, stranger, None):
            r = call(sock, msg, cred, server="agent:p2", check=False)
            assert r["ok"] is False and r["error"].startswith("refused:"), (op, cred, r)
    assert call(sock, {"op": "status"}, b.runner, server="agent:p2")["host"] == "p2"
    log = open(os.path.join(b.root, "p2.log")).read()
    assert log.count("event=mgmt_refused") >= 7 * 5
    assert "Traceback" not in log
