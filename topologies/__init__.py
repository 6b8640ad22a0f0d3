"""Mininet topologies (fat-tree, leaf-spine, linear), the registry of their names, and the glue
that starts them (``net``, ``ovs``).

A new topology is one file (a ``DataCentreTopo`` subclass with ``build_fabric``, see
``linear.py``) and one line in ``TOPOLOGIES``: the scenarios (``topology.kind``) and
``sudo mn --custom topologies/mn.py --topo NAME,ARGS`` then know it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the package (e.g. `python -m topologies.ovs`) needs no Mininet
    from mininet.topo import Topo

# name used in scenarios and on the `mn --topo` command line -> "module:Class"
TOPOLOGIES: dict[str, str] = {
    "fattree": "topologies.fattree:FatTreeTopo",
    "leafspine": "topologies.leafspine:LeafSpineTopo",
    "linear": "topologies.linear:LinearTopo",
}


def registry() -> dict[str, type[Topo]]:
    """All topology classes by name, imported from ``TOPOLOGIES``."""
    from mininet.topo import Topo

    classes: dict[str, type[Topo]] = {}
    for name, target in TOPOLOGIES.items():
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Topo)):
            raise TypeError(f"topology {name!r}: {target} is not a mininet Topo class")
        classes[name] = cls
    return classes
