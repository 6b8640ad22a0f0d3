"""Mininet topologies (fat-tree, leaf-spine, linear) and the glue that starts them."""

from __future__ import annotations


def registry() -> dict[str, type]:
    """All topology classes by the name used in scenarios and on the ``mn`` command line."""
    from topologies.fattree import topos as fattree
    from topologies.leafspine import topos as leafspine
    from topologies.linear import topos as linear

    return {**fattree, **leafspine, **linear}
