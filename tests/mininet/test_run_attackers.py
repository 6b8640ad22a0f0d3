"""A short run with every attacker: the active probers run as ``nobody`` in an attacker host during
the trials, their packets are in the captures, and metrics.json has a row for each of them and for
the curious intermediate, per arm.

Its own module: ``experiments.runner.run`` takes the testbed lock itself (one trial at a time).
"""

from __future__ import annotations

import json
import pwd

import numpy as np
import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]


def test_a_short_run_has_every_attackers_row(open_run_dir):
    from attacks.capture import ip_to_int, read_pcap
    from attacks.probing import probe_log
    from attacks.truth import load_truth
    from experiments import runner
    from experiments.scenario import load
    from experiments.testbed import UNPRIVILEGED

    sc = load("quick")
    sc.trials, sc.modes = 1, ["direct", "profile"]
    # no settling before the captures: this test reads rows and packets, not the traffic's
    # steady state (10 s a trial otherwise); one vantage, the one it reads
    sc.background.start_jitter_s, sc.background.settle_s = 0.0, 0.0
    sc.attackers.vantage = ["global"]
    assert sc.attackers.active == ["service-scan", "latency"] and sc.attackers.curious_intermediate
    out = open_run_dir  # the probers run as nobody
    m = runner.run(sc, out)
    assert m is not None
    on_disk = json.loads((out / "metrics.json").read_text())
    act = on_disk["active"]["modes"]
    assert set(act["direct"]) == {"service-scan", "latency"}  # direct has no intermediate
    assert set(act["profile"]) == {"service-scan", "latency", "curious-intermediate"}
    for mode in sc.modes:
        scan = act[mode]["service-scan"]
        # the VM answers at its own address before and after: found, not its new host
        assert scan["found_vm"]["k"] == 1 and scan["same_address"]["k"] == 1, scan
        assert scan["found_new_host"]["k"] == 0, scan
        assert act[mode]["latency"]["detection_auc"]["n"] == 1, act[mode]["latency"]
    ci = act["profile"]["curious-intermediate"]
    assert ci["key_recovered"]["k"] == 0 and ci["destination_recovered"]["k"] == 0
    nobody = pwd.getpwnam(UNPRIVILEGED).pw_uid
    run = load_truth(out / "ground_truth.json")
    for t in run.trials:
        xs = [ip_to_int(a.ip) for a in t.attackers]  # the probers' host is one of them
        for name in sc.attackers.active:
            log = probe_log(out, t, name)
            assert log.stat().st_uid == nobody, log  # written by the prober, as nobody
        pk = read_pcap(out / t.pcaps["global"]).packets
        assert (np.isin(pk["src"], xs) & (pk["dport"] == 7000)).sum() > 50  # captured too
    md = (out / "report.md").read_text()
    assert "| profile | curious-intermediate |" in md
