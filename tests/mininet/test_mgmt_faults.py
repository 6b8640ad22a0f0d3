"""Fault injection on the real testbed goes only through the test-only path: a testbed built
with ``test_faults`` (the controller and the agents started with ``STEALTH_MTD_TEST_FAULTS=1``)
admits the ``test`` identity, and only it may send ``migrate`` with faults. Its own module: the
testbed of ``test_mgmt_security`` holds the machine-wide lock for its whole module."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(400)]


def test_faults_work_only_through_the_test_switch_and_identity(tmp_path):
    """The test-only path end to end: a testbed built with ``test_faults`` admits the ``test``
    identity, whose ``migrate`` with ``record_key`` makes the source write the key (that is what
    the wire tests look for); the runner's identity on the same testbed is still refused."""
    from experiments.fleet import VMSpec, start_agents, wait_migration
    from experiments.testbed import Testbed
    from hosts.protocol.mgmt import MgmtError
    from topologies.linear import LinearTopo

    keyfile = tmp_path / "key.json"
    with Testbed(LinearTopo(2, 3), seed=5, test_faults=True) as tb:
        start_agents(tb, VMSpec("h1", mib=2, dirty_pages_per_s=20))
        # record_key is a stealth fault: only a stealth source splits a migration key
        req = {"op": "migrate", "source": "h1", "mode": "stealth", "n": 2, "k": 2, "seed": 1,
               "faults": {"h1": {"record_key": str(keyfile)}}}
        with pytest.raises(MgmtError, match="test-only"):
            tb.mgmt(req)
        r = tb.mgmt(req, as_test=True)
        rec = wait_migration(tb, r["migration"], timeout=120)
        assert rec["state"] == "done", rec["result"]["reason"]
        assert keyfile.exists()
        text = (tb.run_dir / "controller.log").read_text()
        assert "test_faults=True" in text and "Traceback" not in text
