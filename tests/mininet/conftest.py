"""Root fixtures: one real fat-tree k=4 testbed (controller process + Mininet + OVS) per module."""

from __future__ import annotations

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
