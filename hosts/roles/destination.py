"""The destination, VM_destination (Alg 6): installs the stream and runs the VM.

It accepts one hop channel, from the one key it was told (the leader's, or the source's in
direct mode), installs the migration stream into a new VM image, checks the image hash of the
trailer, starts the VM and reports ``migration_done`` (sha256, downtime) to the controller; on
any error it discards the image and reports ``migration_failed``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hosts.channel import Channel, ChannelError
from hosts.protocol.plan import DestinationView
from hosts.roles.base import AgentContext, Role, RoleError
from hosts.vm import VM, StreamInstaller, VMError
from hosts.wire import FrameError, FrameType, ack_body, build_frame, parse_data, parse_frame


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
        except (RoleError, VMError, FrameError, ValueError) as exc:
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
        manifest = json.loads(fr.body)
        name, mib = str(manifest["vm"]), int(manifest["mib"])
        if self.ctx.get_vm() is not None:
            raise RoleError(f"this host already runs VM {self.ctx.get_vm().name}")  # type: ignore[union-attr]
        path = os.path.join(self.ctx.workdir, f"{name}.{self.mig}.mem")
        self.vm = VM(
            name,
            path,
            mib,
            host=self.ctx.host,
            ip=self.ctx.ip,
            port=self.ctx.vm_port,
            dirty_pages_per_s=float(manifest.get("dirty_pages_per_s", 0.0)),
            seed=int(manifest.get("seed", 0)) + 7,
            fill=False,
        )
        installer = StreamInstaller(self.vm)
        self.log("receiving", vm=name, mib=mib, peer=ch.peer)
        seq = 0
        while True:
            fr = parse_frame(ch.recv())
            if fr.type == FrameType.DATA:
                s, payload = parse_data(fr.body)
                if s != seq:
                    raise RoleError(f"data frame {s} where {seq} was expected")
                seq += 1
                installer.feed(payload)
            elif fr.type == FrameType.TRAILER:
                break
            else:
                raise FrameError(f"unexpected {fr.type.name} in the stream")
        self.stats["bytes_received"] = ch.bytes_received
        trailer = json.loads(fr.body)
        installer.finish()
        digest = self.vm.digest()
        if digest != trailer["sha256"]:
            raise RoleError(f"image hash {digest[:16]}.. != {str(trailer['sha256'])[:16]}..")
        self.vm.start()
        resumed = time.time()
        downtime = resumed - float(trailer["paused_at"])
        self.ctx.set_vm(self.vm)
        n = ch.send(build_frame(FrameType.ACK, ack_body(seq)))
        self._count_sent("upstream", n)
        self.result = {
            "sha256": digest,
            "downtime_s": downtime,
            "resumed_at": resumed,
            "vm": self.vm.name,
            "vm_bytes": self.vm.size,
            "rounds": trailer.get("rounds"),
        }
        self.stats.update(self.result)
        with self.cond:
            self.state = "done"
            self.cond.notify_all()
        self.log("vm_running", sha256=digest[:16], downtime_s=f"{downtime:.3f}")
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


