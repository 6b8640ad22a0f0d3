"""The one entry file for Mininet's command line: every registered topology, by name.

    sudo mn --custom topologies/mn.py --topo fattree,4 \\
        --switch ovs,protocols=OpenFlow13,datapath=user --controller remote,port=6653

``mn --custom FILE`` execs the file with Debian's python, without ``__file__`` and without the
project on ``sys.path``. This file finds its own path (``mn`` compiles it under that name), puts
the project root on ``sys.path`` and hands Mininet ``topos``, the registry of
``topologies/__init__.py``, so the topology files themselves are plain modules. ``mn`` copies
every global of the file into its own namespace, hence the single helper function.
"""


def _registry() -> dict[str, type]:
    import inspect
    import os
    import sys

    here = os.path.abspath(inspect.currentframe().f_code.co_filename)  # type: ignore[union-attr]
    root = os.path.dirname(os.path.dirname(here))
    if root not in sys.path:
        sys.path.insert(0, root)
    from topologies import registry

    return registry()


topos = _registry()
