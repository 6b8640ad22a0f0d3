"""The one entry file for Mininet's command line: every registered topology, by name, and our
switch (OVS whose ports may be AF_XDP ports), as ``--switch smtd``.

    sudo mn --custom topologies/mn.py --topo fattree,4 \\
        --switch smtd,protocols=OpenFlow13,datapath=user,ports=afxdp-nonpmd \\
        --controller remote,port=6653

(``ports``: netdev | afxdp | afxdp-nonpmd, see ``topologies.ovs.PORT_KINDS``; the plain
``--switch ovs,protocols=OpenFlow13,datapath=user`` still gives today's netdev ports.)

``mn --custom FILE`` execs the file with Debian's python, without ``__file__`` and without the
project on ``sys.path``. This file finds its own path (``mn`` compiles it under that name), puts
the project root on ``sys.path`` and hands Mininet ``topos``, the registry of
``topologies/__init__.py``, and ``switches``, so the topology files themselves are plain modules.
``mn`` copies every global of the file into its own namespace, hence the single helper function.
"""


def _registries() -> tuple[dict[str, type], dict[str, type]]:
    import inspect
    import os
    import sys

    here = os.path.abspath(inspect.currentframe().f_code.co_filename)  # type: ignore[union-attr]
    root = os.path.dirname(os.path.dirname(here))
    if root not in sys.path:
        sys.path.insert(0, root)
    from topologies import registry
    from topologies.net import MnSwitch

    return registry(), {"smtd": MnSwitch}


topos, switches = _registries()
