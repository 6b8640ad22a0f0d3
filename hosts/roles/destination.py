"""The destination, VM_destination (Alg 6): installs the stream and runs the VM.

It accepts one hop channel, from the one key it was told (the leader's, or the source's in
direct mode), installs the migration stream into a new VM image, checks the image hash of the
trailer, starts the VM and reports ``migration_done`` (sha256, downtime) to the controller; on
any error it discards the image and reports ``migration_failed``.

The manifest is checked before anything is written (``read_manifest``): a VM name that is not a
safe file name, an image larger than the controller vouched (``max_image_bytes``) or a field of
the wrong type is a ``ManifestError``, and the migration fails (the source keeps its VM). So is
a VM address other than the one the controller vouched (``vm_ip``/``vm_mac``): the source, the
VM that was flagged, does not choose which address its NIC takes here.
A VM with an address of its own (manifest ``ip``/``mac``, ``hosts.vnic``) gets its NIC on this
host as soon as the manifest is read, so attaching it costs no downtime; the controller routes
the address here once ``migration_done`` arrives.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from hosts.channel import Channel, ChannelError
from hosts.protocol.plan import DestinationView
from hosts.qemu import MAX_DIRTY_KIB
from hosts.qemu import MAX_MIB as QEMU_MAX_MIB
from hosts.qemu import MIN_MIB as QEMU_MIN_MIB
from hosts.roles import qemu_link
from hosts.roles.base import AgentContext, Role, RoleError
from hosts.vm import MAX_MIB, VM, StreamInstaller, VMError, VMNameError, check_name
from hosts.vnic import NicError, VmNic
from hosts.wire import FrameError, FrameType, ack_body, build_frame, parse_frame, read_data

MIB = 1 << 20


class ManifestError(RoleError):
    """A manifest the destination does not install: the message names the field and why."""


@dataclass(frozen=True)
class Manifest:
    """What the destination installs: the VM's name, size and workload."""

    vm: str
    mib: int
    dirty_pages_per_s: float
    seed: int
    ip: str | None = None  # the VM's own address, if it has one
    mac: str | None = None
    kind: str = "model"  # or "qemu": a real guest, QEMU's stream (hosts.roles.qemu_link)
    dirty_kib: int = 0  # the QEMU guest's dirtying loop


def read_manifest(body: bytes, max_image_bytes: int,
                  vm_address: tuple[str, str] | None = None) -> Manifest:
    """Check and read a manifest; ``ManifestError`` names what is wrong.

    ``max_image_bytes`` (0: not vouched) bounds the image as the controller saw it registered;
    ``hosts.vm.MAX_MIB`` bounds it always. ``vm_address``: the VM's own (ip, mac) as the
    controller vouched it (("", ""): it has none); a manifest claiming another is refused (None:
    not checked).
    """
    try:
        m = json.loads(body)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(m, dict):
        raise ManifestError(f"manifest must be an object, got {type(m).__name__}")
    try:
        name = check_name(m.get("vm"))
    except VMNameError as exc:
        raise ManifestError(f"manifest field 'vm': {exc}") from None
    mib = m.get("mib")
    if not isinstance(mib, int) or isinstance(mib, bool) or not 1 <= mib <= MAX_MIB:
        raise ManifestError(f"manifest field 'mib' must be an int 1..{MAX_MIB}, got {mib!r}")
    if max_image_bytes and mib * MIB > max_image_bytes:
        raise ManifestError(
            f"manifest field 'mib': an image of {mib * MIB} bytes exceeds the "
            f"{max_image_bytes} bytes vouched for this migration"
        )
    rate = m.get("dirty_pages_per_s", 0.0)
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate < 1e9:
        raise ManifestError(f"manifest field 'dirty_pages_per_s' must be a number >= 0, "
                            f"got {rate!r}")
    seed = m.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 1 << 62:
        raise ManifestError(f"manifest field 'seed' must be an int >= 0, got {seed!r}")
    ip, mac = m.get("ip"), m.get("mac")
    if (ip is None) != (mac is None) or not isinstance(ip, str | None) \
            or not isinstance(mac, str | None):
        raise ManifestError(f"manifest fields 'ip' and 'mac' must be two strings or both absent, "
                            f"got {ip!r}, {mac!r}")
    if vm_address is not None and (ip or "", mac or "") != vm_address:
        raise ManifestError(f"manifest fields 'ip'/'mac' claim {ip!r}/{mac!r}; the controller "
                            f"vouched {vm_address[0] or None!r}/{vm_address[1] or None!r} for "
                            "this VM")
    kind, dirty_kib = m.get("kind", "model"), m.get("dirty_kib", 0)
    if kind not in ("model", "qemu"):
        raise ManifestError(f"manifest field 'kind' must be 'model' or 'qemu', got {kind!r}")
    if not isinstance(dirty_kib, int) or isinstance(dirty_kib, bool) \
            or not 0 <= dirty_kib <= MAX_DIRTY_KIB:
        raise ManifestError(f"manifest field 'dirty_kib' must be an int 0..{MAX_DIRTY_KIB}, "
                            f"got {dirty_kib!r}")
    if kind == "qemu" and not QEMU_MIN_MIB <= mib <= QEMU_MAX_MIB:  # refused here, not by QEMU
        raise ManifestError(f"manifest field 'mib' must be {QEMU_MIN_MIB}..{QEMU_MAX_MIB} for a "
                            f"QEMU guest, got {mib!r}")
    return Manifest(name, mib, float(rate), seed, ip, mac, kind, dirty_kib)


class Destination(Role):
    """VM_destination (Alg 6)."""

    name = "destination"
    view: DestinationView

    def __init__(self, ctx: AgentContext, view: DestinationView) -> None:
        super().__init__(ctx, view)
        self.upstream: Channel | None = None
        self.vm: VM | None = None
        self.result: dict[str, Any] = {}

    def prepare(self) -> dict[str, Any]:
        return {"port": self._listen("0.0.0.0", {self.view.peer_pubkey})}

    def on_channel(self, ch: Channel, first: bytes) -> None:
        with self.cond:
            if self.upstream is not None or self.state != "prepared":
                self.reject(f"second stream from {ch.peer}", "already receiving")
                ch.close()
                return
            self.upstream = ch
            self.state = "receiving"
        try:
            self._receive(ch, first)
        except (RoleError, VMError, NicError, FrameError, ValueError, KeyError,
                TypeError) as exc:
            try:
                ch.send(build_frame(FrameType.ABORT, str(exc).encode()))
            except ChannelError:
                pass
            self._discard()
            self.fail(str(exc))
        except ChannelError as exc:
            self._discard()
            self.fail(f"stream ended before the trailer (truncated): {exc}")

    def _receive(self, ch: Channel, first: bytes) -> None:
        fr = parse_frame(first)
        if fr.type != FrameType.MANIFEST:
            raise RoleError(f"stream starts with {fr.type.name}, not the manifest")
        manifest = read_manifest(fr.body, self.view.max_image_bytes,
                                 (self.view.vm_ip, self.view.vm_mac))
        name, mib = manifest.vm, manifest.mib
        if self.ctx.get_vm() is not None:
            raise RoleError(f"this host already runs VM {self.ctx.get_vm().name}")  # type: ignore[union-attr]
        mig = check_name(self.mig, "migration id")
        try:
            nic = VmNic(manifest.ip, manifest.mac, self.ctx.ip) if manifest.ip else None
        except NicError as exc:
            raise ManifestError(f"manifest fields 'ip'/'mac': {exc}") from None
        if manifest.kind == "qemu":
            qemu_link.receive(self, ch, manifest, nic)
            return
        path = os.path.join(self.ctx.workdir, f"{name}.{mig}.mem")
        self.vm = VM(
            name,
            path,
            mib,
            host=self.ctx.host,
            ip=self.ctx.ip,
            port=self.ctx.vm_port,
            dirty_pages_per_s=manifest.dirty_pages_per_s,
            seed=manifest.seed + 7,
            fill=False,
            nic=nic,
        )
        self.vm.attach_nic()  # now, off the downtime path
        installer = StreamInstaller(self.vm)
        self.log("receiving", vm=name, mib=mib, peer=ch.peer)
        seq, trailer_body = read_data(ch.recv, installer.feed)
        self.stats["bytes_received"] = ch.bytes_received
        # with the trailer's paused_at: did the pre-copy all arrive before the VM paused?
        self.stats["last_round_in_at"] = installer.last_round_at
        self.log("trailer_in", frames=seq)  # downtime: the last hop, then the check and resume
        trailer = json.loads(trailer_body)
        if not isinstance(trailer, dict):
            raise RoleError(f"trailer must be an object, got {type(trailer).__name__}")
        if trailer.get("vm_bytes", self.vm.size) != self.vm.size:
            raise RoleError(f"trailer says {trailer['vm_bytes']} image bytes, the manifest "
                            f"{self.vm.size}")
        installer.finish()
        digest = self.vm.digest()
        if digest != trailer["sha256"]:
            raise RoleError(f"image hash {digest[:16]}.. != {str(trailer['sha256'])[:16]}..")
        self.vm.start()
        self.running(ch, self.vm, digest, time.time(), trailer, seq)

    def running(self, ch: Channel, vm: Any, digest: str, resumed: float,
                trailer: dict[str, Any], seq: int, **extra: Any) -> None:
        """The VM (the model or a QEMU guest) runs here since ``resumed``: keep it, ack the
        stream's ``seq`` frames, record the result (plus ``extra``) and report it done."""
        downtime = resumed - float(trailer["paused_at"])
        self.ctx.set_vm(vm)
        self._count_sent("upstream", ch.send(build_frame(FrameType.ACK, ack_body(seq))))
        self.result = {"sha256": digest, "downtime_s": downtime, "resumed_at": resumed,
                       "vm": vm.name, "vm_bytes": vm.size, "rounds": trailer.get("rounds"),
                       **extra}
        self.stats.update(self.result)
        with self.cond:
            self.state = "done"
            self.cond.notify_all()
        kind = {"kind": extra["kind"]} if "kind" in extra else {}
        self.log("vm_running", sha256=digest[:16], downtime_s=f"{downtime:.3f}", **kind)
        self._report({"op": "migration_done", "sha256": digest, "downtime_s": downtime})

    def _discard(self) -> None:
        if self.vm is not None and self.ctx.get_vm() is not self.vm:
            self.vm.destroy()
            self.vm = None

    def on_fail(self, reason: str) -> None:
        self._discard()  # keeps a VM that already runs here

    def close(self) -> None:
        super().close()
        if self.upstream is not None:
            self.upstream.close()


