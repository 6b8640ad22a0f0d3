"""``stealth-mtd run`` stopped by SIGTERM (a CI job's timeout, ``kill``, a batch scheduler): it says
so in one line instead of a traceback, exits 143, and leaves no bridge, process or lock behind;
and a testbed that stops leaves no shell of its own behind in the process that ran it.

Its own module: the run is a child process that takes the testbed lock itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

# one small trial whose warm-up outlasts the test: the signal comes while the network is up
SCENARIO = """
name = "sigterm"
trials = 1
modes = ["direct"]
[topology]
kind = "leafspine"
args = [2, 1, 2]
[vm]
mib = 1
[background]
warmup_s = 240
start_jitter_s = 0
"""


def _bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_sigterm_tears_the_testbed_down_and_says_so(open_run_dir, tmp_path):
    from experiments.clean import project_processes
    from experiments.testbed import PROJECT_ROOT

    scenario = tmp_path / "sigterm.toml"
    scenario.write_text(SCENARIO)
    before = _bridges()
    already = set(project_processes(include_runs=True))  # earlier tests' (not this run's)
    out = open_run_dir
    run = subprocess.Popen([sys.executable, "-m", "experiments.cli", "run", str(scenario),
                            "--out", str(out)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180  # it may wait for the testbed lock first
        while not any(p.stat().st_size for p in (out / "pcaps").glob("*.pcap")):
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "the trial's captures never started"
            time.sleep(1)
        assert _bridges() - before, "the network is not up while its captures run"
        run.send_signal(signal.SIGTERM)
        said, _ = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert run.returncode == 143, said
    assert "terminated" in said and "torn down" in said, said
    assert "Traceback" not in said, said
    assert _bridges() == before
    assert set(project_processes(include_runs=True)) - already == set()


def _shells() -> set[int]:
    """This process's children that are Mininet node shells."""
    me = str(os.getpid())
    out = subprocess.run(["pgrep", "-P", me, "-f", "mininet:"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_a_stopped_testbed_leaves_no_node_shell():
    """Mininet's RemoteController.stop() does nothing: the controller node's shell stayed, one
    per testbed, until the process exited (topologies.net.TestbedController)."""
    from experiments.testbed import Testbed
    from topologies.leafspine import LeafSpineTopo

    before = _shells()
    with Testbed(LeafSpineTopo(2, 1, 2), seed=1):
        assert _shells() - before, "no node shell while the testbed is up"
    assert _shells() - before == set()
