"""The VM's own network interface: an address and MAC of its own on the host it runs on.

A VM with a ``VmNic`` answers at ``ip`` (with MAC ``mac``), never at its host's address. On the
host (a Mininet host namespace; the agent runs as root there) the NIC is a macvlan device
``vmnic`` on the interface that holds the host's own address, in bridge mode, carrying
``ip/32`` and the VM's MAC, the way a bridged vNIC of a real VM shows up on the wire:

- ARP: ``arp_ignore=1`` and ``arp_announce=2`` for the whole namespace, so the host interface
  never answers ARP for the VM's address (which Linux would otherwise do, with the host's MAC)
  and the VM NIC never answers for the host's; the VM NIC answers for its own address with the
  VM's MAC. IPv6 is off on it (no link-local chatter naming the MAC).
- Routing: a policy rule sends what leaves from ``ip`` out of ``vmnic`` (table ``TABLE``), so
  the VM's replies carry its own MAC, not the host's.

Where the address is reachable is the controller's business (``controllers.rules.vm_rules``
routes ``ip`` to the host that runs the VM now); adding the NIC sends nothing on the wire (no
gratuitous ARP, no IPv6), so a destination can attach it before the VM runs there.

``up_batch``/``down_batch`` are pure (the ``ip -batch`` lines); ``attach``/``detach`` run them.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

NAME = "vmnic"  # one VM per host: one NIC name
TABLE = 107  # the policy-routing table of the VM's source address
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
SYSCTLS = {"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"}


class NicError(RuntimeError):
    """The VM NIC could not be set up or its address is not acceptable."""


def check_address(ip: object, mac: object, host_ip: str) -> tuple[str, str]:
    """``(ip, mac)`` if they may be a VM's own address on the host ``host_ip``, else
    ``NicError`` saying why (an IPv4 unicast address that is not the host's, a unicast MAC)."""
    try:
        addr = ipaddress.IPv4Address(str(ip))
    except ValueError:
        raise NicError(f"VM address {ip!r} is not an IPv4 address") from None
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_reserved \
            or addr.is_link_local or str(addr) == host_ip:
        raise NicError(f"VM address {ip} may not be a VM's own address on host {host_ip}")
    if not isinstance(mac, str) or not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
        raise NicError(f"VM MAC {mac!r} is not a unicast MAC like 02:00:0a:00:c8:01")
    return str(addr), mac


@dataclass(frozen=True)
class VmNic:
    """The VM's address ``ip``/``mac`` on the host whose own address is ``host_ip``."""

    ip: str
    mac: str
    host_ip: str

    def __post_init__(self) -> None:
        check_address(self.ip, self.mac, self.host_ip)


def parent_of(addr_lines: str, host_ip: str) -> tuple[str, str]:
    """``(interface, network)`` holding ``host_ip`` in ``ip -o -4 addr show`` output."""
    for line in addr_lines.splitlines():
        parts = line.split()
        if "inet" not in parts:
            continue
        cidr = parts[parts.index("inet") + 1]
        if cidr.split("/")[0] == host_ip:
            return parts[1].split("@")[0], str(ipaddress.IPv4Interface(cidr).network)
    raise NicError(f"no interface holds the host address {host_ip}")


def up_batch(nic: VmNic, parent: str, network: str) -> tuple[list[str], list[str]]:
    """The ``ip -batch`` lines that give the VM its NIC (``ip`` absent from the lines), in two
    batches: the link, created down; then, once its IPv6 is off (so bringing it up sends
    nothing), its address, the link up and its routes."""
    create = [f"link add {NAME} link {parent} address {nic.mac} type macvlan mode bridge"]
    configure = [
        f"addr add {nic.ip}/32 dev {NAME}",
        f"link set {NAME} up",
        f"route replace {network} dev {NAME} src {nic.ip} table {TABLE}",
        f"rule add from {nic.ip}/32 lookup {TABLE} priority {TABLE}",
    ]
    return create, configure


def down_batch(nic: VmNic) -> list[str]:
    """The lines that take the NIC away (its routes go with the device)."""
    return [f"rule del from {nic.ip}/32 lookup {TABLE} priority {TABLE}", f"link del {NAME}"]


def _ip_batch(lines: list[str], force: bool = False) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-force"] if force else []), "-batch", "-"]
    return subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=10)


def _write_proc(key: str, value: str) -> None:
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def attach(nic: VmNic) -> None:
    """Create the VM NIC in this network namespace (needs root); ``NicError`` on failure."""
    try:
        _attach(nic)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NicError(f"cannot give the VM its address {nic.ip}: {exc}") from None


def _attach(nic: VmNic) -> None:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         timeout=10)
    parent, network = parent_of(out.stdout, nic.host_ip)
    try:
        for key, value in SYSCTLS.items():
            _write_proc(key, value)
    except OSError as exc:
        raise NicError(f"cannot set the ARP sysctls (root in the host's namespace?): {exc}") \
            from None
    _ip_batch(down_batch(nic), force=True)  # a NIC left over by an earlier run of this host
    create, configure = up_batch(nic, parent, network)
    r = _ip_batch(create)
    if r.returncode != 0:
        raise NicError(f"ip {create[0]}: {r.stderr.strip()}")
    try:
        _write_proc(f"net/ipv6/conf/{NAME}/disable_ipv6", "1")  # before the link is up
    except OSError:
        pass  # no IPv6 in this kernel: nothing to silence
    r = _ip_batch(configure)
    if r.returncode != 0:
        _ip_batch(down_batch(nic), force=True)
        raise NicError(f"setting up {NAME} for {nic.ip}: {r.stderr.strip()}")
    if shutil.which("ethtool"):  # as on the host interfaces: the userspace datapath needs it
        subprocess.run(["ethtool", "-K", NAME, "tx", "off"], capture_output=True, timeout=10)
    log.info("event=vm_nic_up ip=%s mac=%s parent=%s network=%s", nic.ip, nic.mac, parent,
             network)


def detach(nic: VmNic) -> None:
    """Remove the VM NIC (a no-op if it is not there)."""
    _ip_batch(down_batch(nic), force=True)
    log.info("event=vm_nic_down ip=%s", nic.ip)


class OwnAddress:
    """What a VM (the model, ``hosts.vm.VM``, or a QEMU guest, ``hosts.qemu.QemuVM``) does with
    its own address: ``nic`` (None: it answers at its host's) and ``_nic_up`` are set by the
    VM's ``__init__``."""

    nic: VmNic | None
    _nic_up: bool

    def address(self) -> dict[str, str]:
        """The VM's own address (``ip``, ``mac``) if it has one, else ``{}`` (for a manifest)."""
        return {"ip": self.nic.ip, "mac": self.nic.mac} if self.nic is not None else {}

    def attach_nic(self) -> None:
        """Put the VM's own address on this host (idempotent; a no-op without a NIC)."""
        if self.nic is not None and not self._nic_up:
            attach(self.nic)
            self._nic_up = True

    def detach_nic(self) -> None:
        """Take the address off this host again (idempotent): it goes with the service."""
        if self._nic_up and self.nic is not None:
            detach(self.nic)
            self._nic_up = False
