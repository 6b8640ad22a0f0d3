"""A k-ary fat-tree (Al-Fares et al., SIGCOMM 2008): the classic data-centre fabric.

For even k: (k/2)^2 core switches, k pods of k/2 aggregation and k/2 edge switches, k/2 hosts per
edge switch. k=4 gives 20 switches and 16 hosts; k=6 gives 45 switches and 54 hosts. Between hosts
in different pods there are (k/2)^2 equal-cost paths, which the relay picks among.

    k=4:          c1    c2    c3    c4
                  | \\  /  \\  /  \\  / |      (each core links to one agg per pod)
    pod 1:      a1  a2   pod 2: a3  a4  ...   (4 pods)
                | \\/ |          | \\/ |
                e1  e2          e3  e4
               / \\ / \\        / \\ / \\
              h1 h2 h3 h4    h5 h6 h7 h8

Usable from the Mininet command line:
    sudo mn --custom topologies/mn.py --topo fattree,4 \\
        --switch ovs,protocols=OpenFlow13,datapath=user --controller remote,port=6653
"""

from __future__ import annotations

from topologies.base import DataCentreTopo


class FatTreeTopo(DataCentreTopo):
    """k-ary fat-tree; switches c* (core), a* (aggregation), e* (edge); hosts h*."""

    def build_fabric(self, k: int = 4) -> None:  # type: ignore[override]
        k = int(k)
        if k < 2 or k % 2:
            raise ValueError(f"fat-tree k must be even and >= 2, got {k}")
        half = k // 2
        cores = [self.add_layer_switch(f"c{i + 1}", "core") for i in range(half * half)]
        for pod in range(k):
            aggs = [self.add_layer_switch(f"a{pod * half + i + 1}", "agg") for i in range(half)]
            edges = [self.add_layer_switch(f"e{pod * half + i + 1}", "edge") for i in range(half)]
            for e in edges:
                for a in aggs:
                    self.add_fabric_link(e, a)
            for i, a in enumerate(aggs):
                for j in range(half):
                    self.add_fabric_link(a, cores[i * half + j])
            for e in edges:
                for _ in range(half):
                    self.add_tenant(e)

