"""Root fixtures: one real fat-tree k=4 testbed (controller process + Mininet + OVS) per module."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def fattree_bed():
    from experiments.testbed import Testbed
    from topologies.fattree import FatTreeTopo

    with Testbed(FatTreeTopo(4), seed=7) as tb:
        yield tb
        err = (tb.run_dir / "controller.err").read_text()
        log = (tb.run_dir / "controller.log").read_text()
        assert "Traceback" not in err + log, f"controller raised:\n{err}\n{log[-3000:]}"


@pytest.fixture
def open_run_dir(request):
    """A run folder the probers (run as ``nobody``) may enter, unlike pytest's ``tmp_path`` under
    a 0700 folder: under ``results/``, as a user's runs are. Kept when the test fails."""
    from experiments.testbed import PROJECT_ROOT

    (PROJECT_ROOT / "results").mkdir(exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"test-{request.node.name[:40]}-",
                                dir=PROJECT_ROOT / "results"))
    out.chmod(0o755)
    failed = request.session.testsfailed
    yield out
    if request.session.testsfailed == failed:
        shutil.rmtree(out, ignore_errors=True)


def run_mn(tmp_path, topo, mn_args: list[str], port_from: int) -> str:
    """Run Mininet's own command line (``mn --custom topologies/mn.py ...`` + ``mn_args``)
    against our controller process serving ``topo``, under the testbed lock; returns mn's
    output. A failed mn's leftovers go with the project's clean (never ``mn -c``, which deletes
    ``/tmp/*.log`` and ``*.out``)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from experiments.testbed import acquire_lock, free_port, wait_listening
    from topologies.base import describe

    root = Path(__file__).resolve().parents[2]
    topo_file = tmp_path / "topo.json"
    topo_file.write_text(json.dumps(describe(topo)))
    port = free_port(port_from)
    lock = acquire_lock()
    ctl = subprocess.Popen([sys.executable, "-m", "controllers", "--topology", str(topo_file),
                            "--mgmt", str(tmp_path / "m.sock"), "--port", str(port)],
                           cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = ""
    try:
        wait_listening(port, 20, ctl)
        r = subprocess.run(
            ["mn", "--custom", str(root / "topologies" / "mn.py"), *mn_args,
             "--controller", f"remote,ip=127.0.0.1,port={port}"],
            capture_output=True, text=True, timeout=120, cwd="/")
        out = r.stdout + r.stderr
        return out
    finally:
        ctl.terminate()
        ctl.wait(5)
        if "Results: 0% dropped" not in out:
            from experiments.clean import clean

            clean(lock_held=True)
        os.close(lock)
