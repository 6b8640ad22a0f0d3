"""A two-tier leaf-spine (Clos) fabric: every leaf links to every spine.

    spines:     s1      s2
                | \\   / |
                |   X   |
                | /   \\ |
    leaves:     l1      l2   ...
               / | \\   / | \\
              h1 h2 .. h4 h5 ..

Hosts on different leaves have one equal-cost path per spine.

    sudo mn --custom topologies/mn.py --topo leafspine,4,2,4 \\
        --switch ovs,protocols=OpenFlow13,datapath=user --controller remote,port=6653
(arguments: leaves, spines, hosts per leaf)
"""

from __future__ import annotations

from topologies.base import DataCentreTopo


class LeafSpineTopo(DataCentreTopo):
    """Leaf-spine with ``leaves`` leaves, ``spines`` spines and ``hosts_per_leaf`` hosts each."""

    def build_fabric(self, leaves: int = 4, spines: int = 2,  # type: ignore[override]
                     hosts_per_leaf: int = 4) -> None:
        leaves, spines, hosts_per_leaf = int(leaves), int(spines), int(hosts_per_leaf)
        if leaves < 1 or spines < 1 or hosts_per_leaf < 1:
            raise ValueError("leaf-spine needs at least one leaf, spine and host per leaf")
        spine_names = [self.add_layer_switch(f"s{i + 1}", "spine") for i in range(spines)]
        for i in range(leaves):
            leaf = self.add_layer_switch(f"l{i + 1}", "leaf")
            for s in spine_names:
                self.add_fabric_link(leaf, s)
            for _ in range(hosts_per_leaf):
                self.add_tenant(leaf)

