"""Shared pieces of the data-centre topologies: addressing, the ``DataCentreTopo`` base class,
and ``describe`` (the network as the controller is given it).

Every topology subclasses ``DataCentreTopo`` and implements ``build_fabric()``, which adds
switches with explicit dpids (names such as ``c1``/``a1``/``e1`` would otherwise collide on
Mininet's name-derived dpids) and tenant hosts ``h1..hN`` with addresses 10.0.x.y; ``build()``
then attaches the optional attacker hosts ``x1..`` to named switches.

The address plan, all in the tenants' 10.0.0.0/8: hosts 10.0.0.1-10.0.199.250 (``host_ip``),
VMs with addresses of their own 10.0.200.1-10.0.249.250 (``vm_ip``: a VM keeps it wherever it
runs), attackers 10.0.250.0/24 (``attacker_ip``); MACs follow the IP (``mac_for``).
Pure bookkeeping, no root needed; ``topologies.net`` turns a Topo into a running network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mininet.topo import Topo


def host_ip(index: int) -> str:
    """Tenant host ``h<index>`` (1-based) gets 10.0.<(index-1) // 250>.<(index-1) % 250 + 1>."""
    if not 1 <= index <= 250 * 200:
        raise ValueError(f"host index {index} out of range")
    return f"10.0.{(index - 1) // 250}.{(index - 1) % 250 + 1}"


def vm_ip(index: int) -> str:
    """VM ``index`` (1-based) answers at 10.0.<200 + (index-1) // 250>.<(index-1) % 250 + 1>,
    its own address in the tenant plan, next to the hosts' and never one of theirs."""
    if not 1 <= index <= 250 * 50:
        raise ValueError(f"VM index {index} out of range 1..{250 * 50}")
    return f"10.0.{200 + (index - 1) // 250}.{(index - 1) % 250 + 1}"


def attacker_ip(index: int) -> str:
    """Attacker host ``x<index>`` lives in 10.0.250.0/24, away from the tenants."""
    if not 1 <= index <= 250:
        raise ValueError(f"attacker index {index} out of range")
    return f"10.0.250.{index}"


def mac_for(ip: str) -> str:
    """A locally administered MAC derived from the IP, so tables stay readable."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"


def parse_names(value: str | Iterable[str] | None) -> list[str]:
    """Accept ``'e1+e3'`` (usable on the ``mn --topo`` command line) or a list of names."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", "+").split("+") if v]
    return list(value)


class DataCentreTopo(Topo):
    """Base class: helpers to add layered switches, tenant hosts and attacker hosts.

    Subclasses implement ``build_fabric(*args)`` (the positional ``--topo NAME,ARGS`` of ``mn``
    arrive there); ``build()`` then attaches the attackers and takes ``bw`` (Mbit/s on every
    link a helper adds between switches or to a tenant). ``self.layers`` maps switch name to its
    layer (core/agg/edge/spine/leaf/switch), which ``describe`` reports.
    """

    def build(self, *args: object, attackers: str | Iterable[str] | None = None,
              bw: float | None = None, **kwargs: object) -> None:
        self.layers: dict[str, str] = {}
        self.link_bw = float(bw) if bw else None
        self._n_hosts = 0
        self._n_attackers = 0
        self._next_dpid = 1
        self.build_fabric(*args, **kwargs)
        for sw in parse_names(attackers):
            self.add_attacker(sw)

    def build_fabric(self, *args: object, **kwargs: object) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def _link_opts(self) -> dict[str, object]:
        return {"bw": self.link_bw} if self.link_bw else {}

    def add_layer_switch(self, name: str, layer: str) -> str:
        """Add switch ``name`` with the next free dpid, in ``layer``."""
        dpid = f"{self._next_dpid:016x}"
        self._next_dpid += 1
        self.addSwitch(name, dpid=dpid)
        self.layers[name] = layer
        return name

    def add_tenant(self, switch: str) -> str:
        """Attach the next tenant host ``h<i>`` (address ``host_ip(i)``) to ``switch``."""
        self._n_hosts += 1
        i = self._n_hosts
        ip = host_ip(i)
        name = self.addHost(f"h{i}", ip=f"{ip}/8", mac=mac_for(ip))
        self.addLink(name, switch, **self._link_opts())
        return name

    def add_attacker(self, switch: str) -> str:
        """Attach an attacker host ``x<j>`` to the named switch."""
        if switch not in self.layers:
            raise ValueError(f"no switch named {switch!r}; switches: {', '.join(self.layers)}")
        self._n_attackers += 1
        ip = attacker_ip(self._n_attackers)
        name = self.addHost(f"x{self._n_attackers}", ip=f"{ip}/8", mac=mac_for(ip),
                            attacker=True)
        self.addLink(name, switch)
        return name

    def add_fabric_link(self, a: str, b: str) -> None:
        """Link two switches (with the topology's ``bw``, if any)."""
        self.addLink(a, b, **self._link_opts())

    def tenant_hosts(self) -> list[str]:
        return [h for h in self.hosts() if h.startswith("h")]


def describe(topo: Topo) -> dict[str, Any]:
    """The network as the controller needs it: switch dpids and layers, links with port
    numbers, hosts with IP, MAC and attachment point. Pure: Mininet numbers OVS ports exactly as
    the Topo does (``ofport_request``), so no running network is needed."""
    layers = getattr(topo, "layers", {})
    switches = {s: {"dpid": int(topo.nodeInfo(s)["dpid"], 16), "layer": layers.get(s, "switch")}
                for s in topo.switches()}
    links, hosts = [], []
    for a, b in topo.links():
        pa, pb = topo.port(a, b)
        if a in switches and b in switches:
            links.append({"a": a, "a_port": pa, "b": b, "b_port": pb})
            continue
        h, sw, sport = (a, b, pb) if b in switches else (b, a, pa)
        info = topo.nodeInfo(h)
        hosts.append({"name": h, "ip": info["ip"].split("/")[0], "mac": info["mac"],
                      "switch": sw, "port": sport, "attacker": bool(info.get("attacker"))})
    hosts.sort(key=lambda x: (x["attacker"], int(x["name"][1:])))
    return {"switches": switches, "links": links, "hosts": hosts}
