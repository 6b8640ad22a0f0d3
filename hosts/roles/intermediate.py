"""The intermediate, VM_available (Alg 4): relays one source's chunks to the leader.

It accepts one hop channel, from the source's key only, holds the one key share the source
sends it (and passes it on), marks each chunk as a data segment and forwards it to the leader;
the leader's acks and aborts go back the other way. It never sees the destination or the key.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from hosts.channel import Channel, ChannelError
from hosts.protocol.plan import IntermediateView
from hosts.roles.base import AgentContext, Role
from hosts.wire import FrameError, FrameType, build_frame, parse_chunk, parse_frame


class Intermediate(Role):
    """VM_available (Alg 4)."""

    name = "intermediate"
    view: IntermediateView

    def __init__(self, ctx: AgentContext, view: IntermediateView) -> None:
        super().__init__(ctx, view)
        self.upstream: Channel | None = None
        self.downstream: Channel | None = None
        self.share: bytes | None = None
        self.stats["chunks"] = 0

    def prepare(self) -> dict[str, Any]:
        return {"port": self._listen(self.ctx.ip, {self.view.source_pubkey})}

    def on_channel(self, ch: Channel, first: bytes) -> None:
        with self.cond:
            if self.upstream is not None or self.state != "prepared":
                self.reject(f"second upstream from {ch.peer}", "already relaying")
                ch.close()
                return
            self.upstream = ch
            self.state = "relaying"
        leader = self.view.leader
        try:
            self.downstream = self._connect(leader.ip, leader.port, leader.pubkey)
        except (OSError, ChannelError) as exc:
            self._upstream_abort(f"leader unreachable: {exc}")
            return
        self.log("relaying", upstream=ch.peer, leader=self.downstream.peer)
        threading.Thread(target=self._backward, name="intermediate:acks", daemon=True).start()
        raw: bytes | None = first
        while True:
            if raw is None:
                try:
                    raw = ch.recv()
                except ChannelError as exc:
                    self._upstream_gone(exc)
                    return
            try:
                self._forward(raw)
            except FrameError as exc:
                self.reject("frame from source", exc)
            except ChannelError as exc:
                self._upstream_abort(f"leader unreachable: {exc}")
                return
            raw = None

    def _forward(self, raw: bytes) -> None:
        fr = parse_frame(raw)
        self.stats["bytes_received"] = self.upstream.bytes_received if self.upstream else 0
        assert self.downstream is not None
        if fr.type == FrameType.SHARE:
            if self.share is not None:
                raise FrameError("a second key share")
            self.share = fr.body  # the one share this VM ever holds
            if not self.faults.on_share():
                return
            n = self.downstream.send(build_frame(FrameType.SHARE, fr.body, pad_to=len(raw)))
        elif fr.type == FrameType.CHUNK:
            chunk = parse_chunk(fr.body)  # a malformed chunk is refused here, not at the leader
            nth = self.stats["chunks"] + 1
            body, copies = self.faults.on_chunk(fr.body, nth, chunk.index)
            # Alg 4: mark the chunk as a data segment and send it to the leader
            segment = build_frame(FrameType.SEGMENT, body, pad_to=len(raw))
            n = sum(self.downstream.send(segment) for _ in range(copies))
            self.stats["chunks"] = nth
            self.faults.after_chunk(nth, copies)
        else:
            raise FrameError(f"unexpected {fr.type.name} from the source")
        self._count_sent("leader", n)

    def _backward(self) -> None:
        """Leader → source: acks and aborts."""
        down, up = self.downstream, self.upstream
        assert down is not None and up is not None
        while True:
            try:
                raw = down.recv()
            except ChannelError as exc:
                if not self.closing.is_set() and self.state == "relaying":
                    self._upstream_abort(f"leader unreachable: {exc}")
                return
            try:
                fr = parse_frame(raw)
                if fr.type not in (FrameType.ACK, FrameType.ABORT):
                    raise FrameError(f"unexpected {fr.type.name} from the leader")
                up.send(raw)
                self._count_sent("source", len(raw) + 20)
            except FrameError as exc:
                self.reject("frame from leader", exc)
            except ChannelError:
                return

    def _upstream_abort(self, reason: str) -> None:
        if self.upstream is not None:
            try:
                self.upstream.send(build_frame(FrameType.ABORT, reason.encode()))
            except ChannelError:
                pass
        self.fail(reason)

    def _upstream_gone(self, exc: Exception) -> None:
        with self.cond:
            if self.state == "relaying":
                self.state = "closed"
        self.log("upstream_closed", why=json.dumps(str(exc)), chunks=self.stats["chunks"])
        self.close()

    def close(self) -> None:
        super().close()
        for ch in (self.upstream, self.downstream):
            if ch is not None:
                ch.close()


