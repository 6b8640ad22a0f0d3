"""``stealth-mtd clean`` on the real machine: it refuses while the testbed lock is held or a run
lives, and removes a killed testbed's namespaces, links and bridges but not other people's
``/tmp/*.log`` and ``/tmp/*.out`` (Mininet's ``mn -c`` deletes those), not a bridge or a loopback
agent that is not a testbed's, and not what a symlink in the run folder points to.

Other testbeds may run on this machine: every test here first takes the testbed lock itself
(waiting for them), so ``clean`` runs only while no testbed is up, and in-process with
``lock_held=True``; it never runs as ``stealth-mtd clean`` on its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLEEPER = "import time; time.sleep(120)"


@pytest.fixture
def testbed_lock():
    """The machine-wide testbed lock, held by this test (waits for other runs), at a moment when
    no run is in progress either: a run between two testbeds waits for the lock, so the lock is
    let go and taken again until none is."""
    from experiments.clean import live_runs
    from experiments.testbed import acquire_lock

    deadline = time.monotonic() + 3000
    while True:
        fd = acquire_lock(timeout=3000)
        runs = live_runs()
        if not runs:
            break
        os.close(fd)
        if time.monotonic() > deadline:
            pytest.fail(f"runs in progress for 50 minutes: {runs}")
        time.sleep(10)
    yield fd
    os.close(fd)


@pytest.fixture
def started():
    """Processes this test starts; each is killed by its own pid afterwards."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def _sleeper(*marker: str) -> list[str]:
    """A harmless process whose command line carries ``marker`` (what clean matches on)."""
    return [sys.executable, "-c", SLEEPER, *marker]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: its parent (this test, for its own children) has not reaped it
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_node_names_cover_every_topology():
    """clean finds a testbed's bridges, links and shells by name: every topology's names fit."""
    from experiments.clean import LINK_NAME, NODE_NAME
    from topologies import registry

    for kind, cls in registry().items():
        bare = cls()
        topo = cls(attackers="+".join(bare.switches()))
        names = [*topo.switches(), *topo.hosts(), "c0"]
        assert all(NODE_NAME.fullmatch(n) for n in names), (kind, names)
        for a, b in topo.links():
            pa, pb = topo.port(a, b)
            assert LINK_NAME.fullmatch(f"{a}-eth{pa}") and LINK_NAME.fullmatch(f"{b}-eth{pb}")
    for other in ("br0", "eth0", "ovs-netdev", "docker0", "keep1a2b", "s1x", "veth1-eth0"):
        assert not NODE_NAME.fullmatch(other) and not LINK_NAME.fullmatch(other)


@pytest.mark.root
@pytest.mark.timeout(3300)
def test_clean_refuses_while_the_lock_is_held(testbed_lock, started, capsys):
    from experiments import clean
    from experiments.testbed import LOCK_PATH

    controller = subprocess.Popen(_sleeper("-m", "controllers"))  # what clean would kill
    started.append(controller)
    time.sleep(0.2)
    assert clean.main([]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "holds the testbed lock" in err and LOCK_PATH in err, err
    assert str(os.getpid()) in err and "--force" in err  # who holds it, and the way out
    with pytest.raises(clean.CleanRefused):
        clean.clean()
    assert controller.poll() is None, "clean killed a process although it refused"


@pytest.mark.root
@pytest.mark.timeout(3300)
def test_clean_refuses_while_a_run_is_between_testbeds(testbed_lock, started):
    from experiments import clean

    run = subprocess.Popen(_sleeper("stealth-mtd run quick"))
    controller = subprocess.Popen(_sleeper("-m", "controllers"))
    started += [run, controller]
    time.sleep(0.2)
    with pytest.raises(clean.CleanRefused, match=f"in progress.*pid {run.pid}"):
        clean.clean(lock_held=True)
    assert run.poll() is None and controller.poll() is None


# A testbed that is killed mid-run: its Mininet network is never stopped.
KILLED_TESTBED = """
import json, sys, time
from experiments.testbed import free_port
from topologies.linear import LinearTopo
from topologies.net import start_network

net = start_network(LinearTopo(2, 1), controller_port=free_port(6900), wait_connected=0)
agent = net.get("h1").popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "-m", "hosts.agent"])
print(json.dumps({"shells": [n.pid for n in net.hosts + net.switches], "agent": agent.pid}),
      flush=True)
time.sleep(120)
"""


def _remove_own_network(pids: dict) -> None:
    """The killed testbed's processes (by the pids it printed), bridges and links (LinearTopo(2, 1)
    makes s1, s2, s1-eth1, s1-eth2): this test's own, removed while it holds the lock."""
    for pid in [*pids["shells"], pids["agent"]]:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for bridge in ("s1", "s2"):
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", bridge])
    for link in ("s1-eth1", "s1-eth2", "s2-eth1"):
        subprocess.run(["ip", "link", "del", link], capture_output=True)


@pytest.mark.root
@pytest.mark.timeout(3300)
def test_clean_removes_a_killed_testbed_and_nothing_else(testbed_lock, started, tmp_path):
    from experiments import clean
    from experiments.testbed import RUN_ROOT

    tag = secrets.token_hex(4)
    others = [Path(f"/tmp/stealth-mtd-test-{tag}.log"), Path(f"/tmp/stealth-mtd-test-{tag}.out")]
    for f in others:
        f.write_text("someone else's file\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("not the project's\n")
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    leftover = RUN_ROOT / f"run-test-{tag}"
    leftover.mkdir()
    (leftover / "controller.log").write_text("a killed run's log\n")
    link = RUN_ROOT / f"link-test-{tag}"
    link.symlink_to(victim)
    foreign_bridge = f"keep{tag}"
    pids: dict[str, list[int] | int] = {"shells": [], "agent": 0}
    subprocess.run(["ovs-vsctl", "--timeout=10", "add-br", foreign_bridge, "--", "set",
                    "bridge", foreign_bridge, "datapath_type=netdev"], check=True)
    try:
        loopback_agent = subprocess.Popen(_sleeper("-m", "hosts.agent"))  # root namespace
        started.append(loopback_agent)
        bed = subprocess.Popen([sys.executable, "-c", KILLED_TESTBED], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "bed.err", "w"),
                               text=True, start_new_session=True)
        started.append(bed)
        line = bed.stdout.readline()
        assert line, (tmp_path / "bed.err").read_text()
        pids.update(json.loads(line))
        os.kill(bed.pid, signal.SIGKILL)  # the run dies; its network stays
        bed.wait(5)
        assert _alive(pids["agent"])
        assert {"s1", "s2"} <= set(clean.bridges())
        assert "s1-eth1" in clean.links()

        removed = clean.clean(lock_held=True)

        assert not [p for p in pids["shells"] + [pids["agent"]] if _alive(p)], removed
        assert not {"s1", "s2"} & set(clean.bridges()), removed
        assert not [n for n in clean.links() if clean.LINK_NAME.fullmatch(n)], removed
        assert {"s1", "s2"} <= set(removed["bridges"])
        assert not leftover.exists() and not link.exists()
        assert (victim / "keep.txt").exists(), "clean followed a symlink out of the run folder"
        for f in others:
            assert f.exists(), f"clean deleted {f}, which the project did not make"
        assert foreign_bridge in clean.bridges(), "clean deleted a bridge that is not ours"
        assert loopback_agent.poll() is None, "clean killed a loopback agent (no testbed's)"
        assert not removed["warnings"], removed["warnings"]
    finally:
        _remove_own_network(pids)  # if clean failed, what this test made must not stay
        subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", foreign_bridge])
        for f in others:
            f.unlink(missing_ok=True)
        shutil.rmtree(leftover, ignore_errors=True)
        if link.is_symlink():
            link.unlink()


@pytest.mark.root
@pytest.mark.timeout(3300)
def test_force_cleans_although_the_lock_is_held_and_stops_runs(testbed_lock, started,
                                                              monkeypatch):
    """--force: the lock is held (by this test) and a run lives, clean goes ahead and stops it.
    Only this test's own stand-in run may match: RUNS is narrowed to its unique marker."""
    from experiments import clean

    marker = f"stealth-mtd-test-run-{secrets.token_hex(4)}"
    monkeypatch.setattr(clean, "RUNS", (marker,))
    run = subprocess.Popen(_sleeper(marker))
    started.append(run)
    time.sleep(0.2)
    with pytest.raises(clean.CleanRefused):
        clean.clean(lock_held=True)
    assert run.poll() is None
    removed = clean.clean(force=True)
    assert run.wait(5) is not None
    assert any(f"forced while pid {os.getpid()}" in w for w in removed["warnings"]), removed
    assert any(str(run.pid) in p for p in removed["processes"]), removed
