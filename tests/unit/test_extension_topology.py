"""Worked example: a new topology is one file plus one line in ``topologies.TOPOLOGIES``.

The ring below is what such a file holds (in the project it would be ``topologies/ring.py``);
the test registers it the way ``topologies/__init__.py`` lists the shipped ones, then builds it
through the registry (``Topo.build``, no root) and hands it to ``describe``, as the controller
would be given it.
"""

from __future__ import annotations

import pytest

import topologies
from topologies import registry
from topologies.base import DataCentreTopo, describe


class RingTopo(DataCentreTopo):
    """``switches`` switches in a ring (r1 - r2 - ... - rN - r1), ``hosts_per_switch`` on each."""

    def build_fabric(self, switches: int = 4, hosts_per_switch: int = 1) -> None:  # type: ignore[override]
        switches, hosts_per_switch = int(switches), int(hosts_per_switch)
        if switches < 3:
            raise ValueError("a ring needs at least three switches")
        ring = [self.add_layer_switch(f"r{i + 1}", "ring") for i in range(switches)]
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            self.add_fabric_link(a, b)
        for sw in ring:
            for _ in range(hosts_per_switch):
                self.add_tenant(sw)


@pytest.fixture
def with_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    # the one registry line: "ring": "topologies.ring:RingTopo"
    monkeypatch.setitem(topologies.TOPOLOGIES, "ring", f"{__name__}:RingTopo")


def test_a_registered_topology_is_built_and_described(with_ring: None) -> None:
    topo = registry()["ring"](5, 2, attackers="r3")
    assert sorted(topo.switches()) == ["r1", "r2", "r3", "r4", "r5"]
    assert len(topo.tenant_hosts()) == 10 and "x1" in topo.hosts()
    assert len(topo.links()) == 5 + 10 + 1  # ring, tenants, attacker

    d = describe(topo)
    assert {s: v["layer"] for s, v in d["switches"].items()} == dict.fromkeys(topo.switches(),
                                                                              "ring")
    assert sorted(v["dpid"] for v in d["switches"].values()) == [1, 2, 3, 4, 5]
    assert sorted((link["a"], link["b"]) for link in d["links"]) == [
        ("r1", "r2"), ("r2", "r3"), ("r3", "r4"), ("r4", "r5"), ("r5", "r1")]
    tenants = [h for h in d["hosts"] if not h["attacker"]]
    assert [h["name"] for h in tenants] == [f"h{i}" for i in range(1, 11)]
    assert [h["switch"] for h in tenants[:4]] == ["r1", "r1", "r2", "r2"]
    assert [(h["name"], h["switch"], h["ip"]) for h in d["hosts"] if h["attacker"]] == [
        ("x1", "r3", "10.0.250.1")]
    ports = [(link["a"], link["a_port"]) for link in d["links"]]
    ports += [(link["b"], link["b_port"]) for link in d["links"]]
    ports += [(h["switch"], h["port"]) for h in d["hosts"]]
    assert len(ports) == len(set(ports))  # every switch port used once


def test_the_registry_only_knows_what_is_listed(with_ring: None) -> None:
    assert set(registry()) == {"fattree", "leafspine", "linear", "ring"}
    with pytest.raises(ValueError, match="three switches"):
        registry()["ring"](2)


def test_a_registry_line_that_names_no_topo_class_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(topologies.TOPOLOGIES, "broken", f"{__name__}:with_ring")
    with pytest.raises(TypeError, match="broken.*not a mininet Topo"):
        registry()
