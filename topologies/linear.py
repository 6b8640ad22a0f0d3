"""A chain of switches with hosts on each: the smallest topology, one path between any two hosts.

    s1 --- s2 --- s3 --- ...
    |      |      |
    h1     h2     h3

    sudo mn --custom topologies/mn.py --topo linear,4,1 \\
        --switch ovs,protocols=OpenFlow13,datapath=user --controller remote,port=6653
(arguments: switches, hosts per switch)
"""

from __future__ import annotations

from topologies.base import DataCentreTopo


class LinearTopo(DataCentreTopo):
    """``switches`` switches in a row, ``hosts_per_switch`` hosts on each."""

    def build_fabric(self, switches: int = 4, hosts_per_switch: int = 1) -> None:  # type: ignore[override]
        switches, hosts_per_switch = int(switches), int(hosts_per_switch)
        if switches < 1 or hosts_per_switch < 1:
            raise ValueError("linear needs at least one switch and one host per switch")
        prev = None
        for i in range(switches):
            sw = self.add_layer_switch(f"s{i + 1}", "switch")
            if prev:
                self.add_fabric_link(prev, sw)
            prev = sw
            for _ in range(hosts_per_switch):
                self.add_tenant(sw)

