"""The leader (Alg 5): rebuilds the key from k shares and passes the stream on to the destination.

It accepts one hop channel from each intermediate (their keys only), collects the key shares
until k of them open the manifest (chunk 0), then reorders and opens the chunks in a buffer
bounded by the window, acks them back through every live intermediate and sends the plaintext
stream on to the destination (whose address it learns from the manifest) over a hop encrypted
to the destination's vouched key. A forged chunk drops the intermediate that sent it.

Its listener serves the n intermediates (each key once, ``hosts.roles.base``). Every hop read
times out (``Role.io_timeout``), so while chunks arrive slowly the leader repeats its last ack
every third of the stall timeout (a heartbeat: the ack readers of the intermediates and the
source never wait that long). Over the cover transport it also acks whenever it has caught up
with what arrived, and its acks say too how many chunks the destination's mux has acknowledged
(``CoverTransport.acked``), with one more ack whenever that grows: the source drains the whole
relay before it pauses (``hosts.roles.source``), so the stop-and-copy's pages do not queue
behind earlier ones on the last hop.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hosts import shamir
from hosts.channel import Channel, ChannelError
from hosts.protocol.plan import LeaderView
from hosts.roles.base import AgentContext, Role, RoleError
from hosts.stream import ChunkOpener, StreamError
from hosts.wire import (
    Frame,
    FrameError,
    FrameType,
    SealedChunk,
    ack_body,
    build_frame,
    data_body,
    parse_chunk,
    parse_frame,
    parse_text,
)

DELIVERY_POLL_S = 0.02  # over cover: how often the leader asks its mux what has arrived


class Leader(Role):
    """VM_leader (Alg 5)."""

    name = "leader"
    view: LeaderView

    def __init__(self, ctx: AgentContext, view: LeaderView) -> None:
        super().__init__(ctx, view)
        self.n = view.n
        self.k = view.k
        self.conns: list[Channel] = []
        self.live: set[int] = set()
        self.seen_keys: set[str] = set()  # intermediates that connected, alive or not
        self.shares: dict[int, bytes] = {}  # connection id -> share
        self.buffer: dict[int, tuple[SealedChunk, Channel]] = {}
        self.next = 0
        self.last_progress = time.monotonic()
        self.dest: Channel | None = None
        self.stats.update(chunks=0, duplicates=0, peak_buffer=0)
        self._last_ack = time.monotonic()
        # over cover: (the destination channel's bytes_sent after a chunk, chunks up to it),
        # in order, until its mux acknowledges them; then those chunks count as delivered
        self._marks: deque[tuple[int, int]] = deque()
        self._delivered = 0

    def expected_peers(self) -> int:
        return self.n

    def prepare(self) -> dict[str, Any]:
        port = self._listen(self.ctx.ip, set(self.view.intermediate_pubkeys))
        threading.Thread(target=self._pump_safe, name="leader:pump", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="leader:heartbeat", daemon=True).start()
        if self.over_cover:
            threading.Thread(target=self._delivery, name="leader:delivery", daemon=True).start()
        return {"port": port}

    def _heartbeat(self) -> None:
        """Repeat the last ack when none left for a third of the stall timeout."""
        every = self.stall / 3
        while not self.closing.wait(every / 4):
            if self.state != "prepared":
                return
            if self.live and time.monotonic() - self._last_ack >= every:
                self._ack(self.next)

    def _delivered_chunks(self) -> int:
        """Over cover: the chunks the destination's mux has acknowledged, all of them."""
        dest = self.dest
        acked = self._cover().acked(dest.sock) if dest is not None else None
        with self.cond:
            while acked is not None and self._marks and self._marks[0][0] <= acked:
                self._delivered = self._marks.popleft()[1]
            return self._delivered

    def _delivery(self) -> None:
        """Over cover: ack as soon as the destination's mux acknowledged more chunks."""
        sent = 0
        while not self.closing.wait(DELIVERY_POLL_S) and self.state == "prepared":
            delivered = self._delivered_chunks()
            if delivered > sent:
                self._ack(self.next)
                sent = delivered

    def on_channel(self, ch: Channel, first: bytes) -> None:
        with self.cond:
            if self.closing.is_set() or len(self.conns) >= self.n:
                self.reject(f"connection from {ch.peer}", "no more intermediates expected")
                ch.close()
                return
            cid = len(self.conns)
            self.conns.append(ch)
            self.live.add(cid)
            self.seen_keys.add(ch.peer_key)
            self.cond.notify_all()
        self.log("intermediate_connected", peer=ch.peer, conn=cid)
        raw: bytes | None = first
        while True:
            if raw is None:
                try:
                    raw = ch.recv()
                except ChannelError as exc:
                    with self.cond:
                        self.live.discard(cid)
                        self.cond.notify_all()
                    if not self.closing.is_set():
                        self.log("intermediate_gone", conn=cid, why=json.dumps(str(exc)))
                    return
            try:
                self._take(cid, ch, parse_frame(raw))
            except FrameError as exc:
                self.reject(f"frame from {ch.peer}", exc)
            raw = None

    def on_gone(self, peer_key: str) -> None:
        with self.cond:
            self.seen_keys.add(peer_key)
            self.cond.notify_all()

    def _take(self, cid: int, ch: Channel, fr: Frame) -> None:
        self.stats["bytes_received"] += len(fr.body)
        if fr.type == FrameType.SHARE:
            with self.cond:
                if cid in self.shares:
                    raise FrameError("a second share on one connection")
                if len(fr.body) < 2:
                    raise FrameError("share too short")
                self.shares[cid] = fr.body
                self.cond.notify_all()
            return
        if fr.type != FrameType.SEGMENT:
            raise FrameError(f"unexpected {fr.type.name} from an intermediate")
        chunk = parse_chunk(fr.body)
        with self.cond:
            while chunk.index >= self.next + self.window and not self.closing.is_set():
                self.cond.wait(0.5)
            if chunk.index < self.next or chunk.index in self.buffer:
                self.stats["duplicates"] += 1  # a re-send after a hop died, or a replay
                self.log("duplicate_dropped", index=chunk.index, peer=ch.peer)
                return
            self.buffer[chunk.index] = (chunk, ch)
            self.stats["peak_buffer"] = max(self.stats["peak_buffer"], len(self.buffer))
            self.cond.notify_all()

    def _pump_safe(self) -> None:
        try:
            self._pump()
        except RoleError as exc:
            self.fail(str(exc))
        except Exception as exc:
            self.log("crash", logging.ERROR, why=json.dumps(f"{type(exc).__name__}: {exc}"))
            self.fail(f"leader internal error: {type(exc).__name__}: {exc}")

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        """Wait (holding cond) until ready(); RoleError on stall, closing or no intermediates."""
        while not ready():
            if self.closing.is_set():
                raise RoleError(f"closed while waiting for {what}")
            if self.conns and not self.live:
                raise RoleError(f"every intermediate is gone while waiting for {what}")
            if time.monotonic() - self.last_progress > self.stall:
                raise RoleError(f"no progress for {self.stall:.0f}s while waiting for {what}")
            self.cond.wait(0.2)

    def _recover_key(self) -> ChunkOpener:
        tried: set[frozenset[int]] = set()
        while True:
            with self.cond:

                def ready() -> bool:
                    gone = len(self.seen_keys) - len(self.live)
                    possible = len(self.shares) + len(self.live - set(self.shares))
                    possible += self.n - len(self.seen_keys)
                    if possible < self.k:
                        raise RoleError(
                            f"not enough shares: got {len(self.shares)} of k={self.k}, "
                            f"{gone} intermediates gone"
                        )
                    combos = [
                        frozenset(c) for c in itertools.combinations(sorted(self.shares), self.k)
                    ]
                    return 0 in self.buffer and any(c not in tried for c in combos)

                self._wait(ready, f"{self.k} key shares and the manifest")
                shares = dict(self.shares)
                manifest, _ = self.buffer[0]
            for combo in itertools.combinations(sorted(shares), self.k):
                fs = frozenset(combo)
                if fs in tried:
                    continue
                tried.add(fs)
                try:
                    key = shamir.combine([shares[c] for c in combo])
                    opener = ChunkOpener(key, self.mig)
                    opener.open(manifest.prefix, 0, manifest.last, manifest.sealed)
                except (shamir.ShamirError, StreamError, ValueError) as exc:
                    self.reject(f"shares {sorted(combo)}", f"do not open the manifest: {exc}")
                    continue
                self.log("key_recovered", shares=len(shares), k=self.k)
                return opener

    def _pump(self) -> None:
        opener = self._recover_key()
        seq = 0
        while True:
            with self.cond:
                self._wait(lambda: self.next in self.buffer, f"chunk {self.next}")
                chunk, src = self.buffer.pop(self.next)
            try:
                pt = opener.open(chunk.prefix, chunk.index, chunk.last, chunk.sealed)
            except StreamError as exc:
                # a forged chunk: drop the intermediate that sent it; the source re-sends
                self.reject(f"chunk {chunk.index} from {src.peer}", exc)
                self.stats.setdefault("forged_from", []).append(src.peer_key)  # names it
                src.close()
                continue
            if chunk.index == 0:
                self._open_destination(pt)
            elif chunk.last:
                self.log("trailer_in", chunks=self.next)  # downtime: the hops to here, then on
                self._finish(pt)
                return
            else:
                assert self.dest is not None
                try:
                    n = self.dest.send(build_frame(FrameType.DATA, data_body(seq, pt)))
                except ChannelError as exc:
                    raise RoleError(f"destination unreachable: {exc}") from None
                seq += 1
                self._count_sent("destination", n)
            with self.cond:
                self.next += 1
                self.stats["chunks"] = self.next
                self.last_progress = time.monotonic()
                caught_up = self.next not in self.buffer
                if self.over_cover and self.dest is not None:
                    self._marks.append((self.dest.bytes_sent, self.next))
                self.cond.notify_all()
            self.faults.after_chunk(self.next)
            # over cover also whenever it has caught up: the source drains before a pause and
            # an ack costs no record of its own there (it rides in a cover slot)
            if self.next % max(1, self.window // 4) == 0 or (self.over_cover and caught_up):
                self._ack(self.next)

    def _ack(self, upto: int) -> None:
        self._last_ack = time.monotonic()
        delivered = min(upto, self._delivered_chunks()) if self.over_cover else None
        frame = build_frame(FrameType.ACK, ack_body(upto, delivered))
        with self.cond:
            live = sorted(self.live)
        for cid in live:
            try:
                self._count_sent("intermediates", self.conns[cid].send(frame))
            except ChannelError:
                pass

    def _open_destination(self, manifest_pt: bytes) -> None:
        try:
            manifest = json.loads(manifest_pt)
            addr, port = str(manifest["dest_address"]), int(manifest["dest_port"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RoleError(f"bad manifest: {exc}") from None
        self.log("manifest_opened", vm=manifest.get("vm"), chunks_expected="unknown")
        try:
            self.dest = self._connect(addr, port, self.view.dest_pubkey)
            manifest.pop("dest_address", None)
            manifest.pop("dest_port", None)
            n = self.dest.send(build_frame(FrameType.MANIFEST, json.dumps(manifest).encode()))
        except (OSError, ChannelError) as exc:
            raise RoleError(f"destination unreachable: {exc}") from None
        self._count_sent("destination", n)
        self.log("destination_connected")

    def _finish(self, trailer_pt: bytes) -> None:
        assert self.dest is not None
        try:
            n = self.dest.send(build_frame(FrameType.TRAILER, trailer_pt))
            self._count_sent("destination", n)
            self.dest.sock.settimeout(max(self.stall, 60.0))
            reply = parse_frame(self.dest.recv())
        except (ChannelError, FrameError, OSError) as exc:
            raise RoleError(f"no confirmation from the destination: {exc}") from None
        if reply.type == FrameType.ABORT:
            raise RoleError(f"destination refused: {parse_text(reply.body)}")
        if reply.type != FrameType.ACK:
            raise RoleError(f"destination answered {reply.type.name}")
        self.faults.after_done()  # a test's leader may die here: the last ack never leaves
        with self.cond:
            self.next += 1
            self._delivered = self.next  # the destination's own ACK: it has all of them
            self._marks.clear()
            self.state = "done"
            self.cond.notify_all()
        self._ack(self.next)
        self.log("done", chunks=self.next)

    def on_fail(self, reason: str) -> None:
        frame = build_frame(FrameType.ABORT, f"leader: {reason}".encode())
        for cid in sorted(self.live):
            try:
                self.conns[cid].send(frame)
            except ChannelError:
                pass

    def close(self) -> None:
        super().close()
        for ch in self.conns:
            ch.close()
        if self.dest is not None:
            self.dest.close()


