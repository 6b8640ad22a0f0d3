"""Path computation over the topology description: ECMP next hops and equal-cost paths.

Pure functions on a networkx graph built from ``topologies.base.describe()`` output (switches,
links with port numbers, hosts). Used by ``controllers.rules`` for the proactive forwarding rules
(every next hop lies on a shortest path, so forwarding is loop-free by construction) and for the
relay (one of the equal-cost switch paths, picked at random per migration).
"""

from __future__ import annotations

import random
from typing import Any

import networkx as nx

Topology = dict[str, Any]


class UnknownHost(KeyError):
    """A request named a host that is not in the topology."""

    def __str__(self) -> str:
        return f"unknown host {self.args[0]!r}"


def build_graph(topo: Topology) -> nx.Graph:
    """Switch-level graph; each edge carries the output port on each side (``port[a]``)."""
    g = nx.Graph()
    for name, info in topo["switches"].items():
        g.add_node(name, dpid=info["dpid"], layer=info.get("layer", "switch"))
    for link in topo["links"]:
        a, b = link["a"], link["b"]
        g.add_edge(a, b, port={a: link["a_port"], b: link["b_port"]})
    return g


def host(topo: Topology, name: str) -> dict[str, Any]:
    for h in topo["hosts"]:
        if h["name"] == name:
            return h
    raise UnknownHost(name)


def ecmp_next_hops(g: nx.Graph, dst_switch: str) -> dict[str, list[int]]:
    """For every switch, the ports that lead one step closer to ``dst_switch``.

    The destination's own switch maps to ``[]`` (the caller outputs to the host port).
    """
    dist = nx.single_source_shortest_path_length(g, dst_switch)
    hops: dict[str, list[int]] = {}
    for sw in g.nodes:
        if sw == dst_switch:
            hops[sw] = []
            continue
        if sw not in dist:
            continue
        hops[sw] = sorted(g.edges[sw, nb]["port"][sw] for nb in g.neighbors(sw)
                          if dist.get(nb, 1 << 30) == dist[sw] - 1)
    return hops


def equal_cost_paths(g: nx.Graph, topo: Topology, src: str, dst: str) -> list[list[str]]:
    """All shortest switch paths from host ``src`` to host ``dst``, in a stable order."""
    a, b = host(topo, src)["switch"], host(topo, dst)["switch"]
    return sorted(nx.all_shortest_paths(g, a, b))


def pick_path(rng: random.Random, paths: list[list[str]]) -> list[str]:
    """The moving target: one of the equal-cost paths, chosen by ``rng``."""
    if not paths:
        raise ValueError("no path")
    return paths[rng.randrange(len(paths))]


def path_ports(g: nx.Graph, topo: Topology, path: list[str], dst: str) -> list[tuple[str, int]]:
    """(switch, output port) for each switch of ``path`` towards host ``dst``."""
    out = []
    for i, sw in enumerate(path):
        if i + 1 < len(path):
            out.append((sw, g.edges[sw, path[i + 1]]["port"][sw]))
        else:
            out.append((sw, host(topo, dst)["port"]))
    return out


def in_ports(g: nx.Graph, topo: Topology, path: list[str], src: str) -> list[int]:
    """The input port at each switch of ``path`` for traffic coming from host ``src``."""
    ports = []
    for i, sw in enumerate(path):
        if i == 0:
            ports.append(host(topo, src)["port"])
        else:
            ports.append(g.edges[sw, path[i - 1]]["port"][sw])
    return ports
