"""The roles' QEMU side: what the source sends and the destination installs for a ``QemuVM``.

The source carries QEMU's own migration stream (``QemuVM.migrate_out``) where it would carry the
model's pre-copy records, in the same chunks, sealed and paced the same way (direct and
stealth); the manifest says ``kind: "qemu"`` and the trailer adds QEMU's ``query-migrate``
figures and the stream's length. The destination starts QEMU with ``-incoming defer`` as soon
as the manifest is read (off the downtime path), writes the stream to a 0600 file in its work
folder, bounded to ``STREAM_FACTOR`` times the image, and loads it into QEMU only once the
trailer came and the stream's SHA-256 matches it (each chunk is already authenticated by the
hop or chunk AEAD); anything else discards QEMU and the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from hosts.channel import Channel
from hosts.qemu import QemuError, QemuVM
from hosts.roles.base import RoleError
from hosts.vnic import VmNic
from hosts.wire import read_data

STREAM_FACTOR = 4  # QEMU re-sends dirtied pages: its stream may exceed the RAM, not by this


def is_qemu(vm: object) -> bool:
    return isinstance(vm, QemuVM)


def manifest_extra(vm: object) -> dict[str, Any]:
    """The manifest fields of a QEMU guest (none for the model)."""
    if not isinstance(vm, QemuVM):
        return {}
    return {"kind": "qemu", "dirty_kib": vm.dirty_kib}


def source_records(vm: QemuVM, precopy: dict[str, Any], stats: dict[str, Any],
                   settings: dict[str, Any]) -> Iterator[bytes]:
    """QEMU's stream for the source's ``_stream``; fills ``precopy`` as the model's pre-copy
    does (``paused_at``, ``rounds``, ``pages_per_round``) and ``stats['qemu']``. ``settings``
    is the view's ``precopy`` (``max_rounds``, as for the model)."""
    try:
        yield from vm.migrate_out(precopy, max_rounds=int(settings.get("max_rounds", 8)))
    except QemuError as exc:
        raise RoleError(f"QEMU's migration failed: {exc}") from None
    precopy.setdefault("pages_per_round", [])
    figures = stats_qemu(precopy)
    precopy["trailer_extra"] = {"kind": "qemu", "stream_bytes": precopy["stream_bytes"],
                                "qemu": figures}
    stats["qemu"] = figures
    stats["stream_bytes"] = precopy["stream_bytes"]


def stats_qemu(precopy: dict[str, Any]) -> dict[str, Any]:
    return {**precopy["qemu"], "forced_stop": precopy.get("forced", False)}


def receive(role: Any, ch: Channel, manifest: Any, nic: VmNic | None) -> None:
    """The destination's part for a QEMU manifest (``role`` is the ``Destination``)."""
    ctx = role.ctx
    mig = role.mig
    vm = QemuVM(manifest.vm, ctx.workdir, manifest.mib, host=ctx.host, ip=ctx.ip,
                port=ctx.vm_port, nic=nic, dirty_kib=manifest.dirty_kib, tag=mig)
    role.vm = vm  # the role's _discard destroys it (QEMU quits) on any failure
    t0 = time.monotonic()
    try:
        vm.start(incoming=True)
    except QemuError as exc:
        raise RoleError(f"destination QEMU did not start: {exc}") from None
    if role.closing.is_set():  # aborted while QEMU started: _discard may have run already
        vm.destroy()
        raise RoleError(role.reason or "aborted while the destination's QEMU started")
    role.stats["qemu_incoming_start_s"] = time.monotonic() - t0
    role.log("receiving", vm=vm.name, mib=vm.mib, peer=ch.peer, kind="qemu")
    path = os.path.join(ctx.workdir, f"{vm.name}.{mig}.stream")
    limit = STREAM_FACTOR * vm.size
    h = hashlib.sha256()
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)

    def store(payload: bytes) -> None:
        nonlocal n
        n += len(payload)
        if n > limit:
            raise RoleError(f"QEMU stream longer than {limit} bytes "
                            f"({STREAM_FACTOR}x the {vm.size}-byte guest)")
        h.update(payload)
        os.write(fd, payload)

    try:
        try:
            seq, trailer_body = read_data(ch.recv, store)
        finally:
            os.close(fd)
        role.stats["bytes_received"] = ch.bytes_received
        trailer = json.loads(trailer_body)
        if not isinstance(trailer, dict) or trailer.get("kind") != "qemu":
            raise RoleError("the trailer of a QEMU stream must be an object with kind 'qemu'")
        digest = h.hexdigest()
        if trailer.get("stream_bytes") != n:
            raise RoleError(f"trailer says {trailer.get('stream_bytes')} stream bytes, "
                            f"{n} came (truncated)")
        if digest != trailer.get("sha256"):
            raise RoleError(f"stream hash {digest[:16]}.. != {str(trailer.get('sha256'))[:16]}..")
        try:
            loaded = vm.migrate_in(path)
        except QemuError as exc:
            raise RoleError(f"QEMU did not load the stream: {exc}") from None
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    role.running(ch, vm, digest, loaded["resumed_at"], trailer, seq, kind="qemu",
                 stream_bytes=n, qemu=trailer.get("qemu"), qemu_load_s=loaded["load_s"])
