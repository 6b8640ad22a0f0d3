"""The source, VM_anomalous (Alg 3), and the sender of the direct baseline.

Stealth: splits a fresh AES-256 key with Shamir (k of n), sends one share to each intermediate,
runs pre-copy and seals the stream into chunks whose sizes and send times a chunk policy
(``hosts.traffic``) draws; chunk 0 is the manifest (destination address ...), the last chunk the
trailer (image hash ...). It keeps at most ``window`` unacknowledged chunks; chunks sent through
an intermediate that dies are re-sent through the others. Direct: streams straight to the
destination over one encrypted hop. The VM stays paused once sent, until the controller's
release (drop this copy) or abort (resume it here).

Its stats say how soon it started after the controller's decision (the view's ``decided_at``):
``decision_to_start_s`` (the chunk policy is ready, e.g. a profile's sniff is over) and
``decision_to_first_byte_s`` (the first migration frame is in a hop, its handshake done).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hosts import shamir
from hosts.channel import Channel, ChannelError
from hosts.chunk_policy import Pacer, policy_from_settings
from hosts.protocol.plan import SourceView
from hosts.roles import qemu_link
from hosts.roles.base import AgentContext, Role, RoleError
from hosts.stream import ChunkSealer, new_key
from hosts.vm import VM, precopy_records
from hosts.wire import (
    CHUNK_HEAD,
    HEADER,
    FrameError,
    FrameType,
    SealedChunk,
    build_frame,
    chunk_body,
    data_body,
    parse_ack,
    parse_frame,
    parse_text,
)

TAG = 16  # AES-GCM tag of a hop record
FINAL_CHUNK = 16 << 10  # over cover: the stop-and-copy's chunk plaintext at most
# over cover, unless the plan sets min_dirty_pages: the VM pauses once the dirty set is what the
# relay moved in PAUSE_BUDGET_S during the first round (its measured goodput), within
# [MIN_PAUSE_PAGES, the default 64], or once a round stopped shrinking it (pause_threshold)
PAUSE_BUDGET_S = 0.25
MIN_PAUSE_PAGES = 4


def pause_threshold(pages_per_round: list[int], round1_s: float, default: int) -> int:
    """Over cover, after a pre-copy round: pause once at most this many pages are dirty.

    The pages the relay moved in ``PAUSE_BUDGET_S`` of the first round (its measured goodput;
    ``round1_s`` its duration), within [``MIN_PAUSE_PAGES``, ``default``]; but once a round
    did not shrink the dirty set (``pages_per_round``, the rounds so far), whatever is dirty no
    more than that: each round then leaves as many pages as it moves (the dirty rate times the
    relay's drain), so more rounds cost time and cut nothing of the stop-and-copy."""
    if round1_s <= 0 or not pages_per_round:
        return default
    budget = max(MIN_PAUSE_PAGES, min(default, int(pages_per_round[0] / round1_s
                                                    * PAUSE_BUDGET_S)))
    if len(pages_per_round) >= 2 and pages_per_round[-1] >= pages_per_round[-2]:
        return max(budget, pages_per_round[-1])
    return budget


HOLD_CAP = 64  # over cover: pre-copy rounds in all, holding rounds included (RoundBook)


@dataclass
class RoundBook:
    """Over cover, which pre-copy rounds count toward ``max_rounds``.

    Every round ends with a drain: a wait until the relay has carried all sent so far to the
    destination, cut short once more pages are dirty than the VM may pause with. A round is
    *steady* if, when its drain ended, the relay had delivered every earlier round: only its
    own pages were still on the way, so the pages dirtied meanwhile measure convergence. A
    round cut short while earlier rounds were still queued (at 0.25x cover the first round
    leaves ~40 s of backlog) is a *holding* round: it kept the dirty set small meanwhile, says
    nothing of convergence and does not count. Before, such rounds used up ``max_rounds`` while
    the backlog drained, and the last round's full drain then let 40-52 pages get dirty before
    the pause. The VM pauses only after a drain that saw everything arrive (``emptied``), so
    nothing is queued ahead of the stop-and-copy. At most ``HOLD_CAP`` rounds in all."""

    max_rounds: int
    steady: list[bool] = field(default_factory=list)  # per round ended
    emptied: bool = False  # the last round's drain saw everything arrive: the VM may pause
    round_from: int = 0  # the chunk the round being drained began with

    def ended(self, upto: int, delivered: int) -> None:
        """A round's drain is over: ``upto`` chunks were emitted by then (this round's last
        one included), ``delivered`` of them had reached the destination."""
        self.steady.append(delivered >= self.round_from)
        self.emptied = delivered >= upto
        self.round_from = upto

    def counted(self) -> int:
        return sum(self.steady)

    def last(self) -> bool:
        """Whether the round ending now is the last (its drain then waits for all)."""
        return self.counted() + 1 >= self.max_rounds or len(self.steady) + 1 >= HOLD_CAP

    def up(self) -> bool:
        """The rounds are used up: the VM pauses now, whatever is dirty."""
        return self.counted() >= self.max_rounds or len(self.steady) >= HOLD_CAP

    def converging(self, pages_per_round: list[int]) -> list[int]:
        """The pages of the rounds that measure convergence: the first, and every round after
        a steady one (a holding round's successor holds only what got dirty up to the cut)."""
        later = zip(pages_per_round[1:], self.steady, strict=False)  # round i, round i - 1
        return pages_per_round[:1] + [n for n, steady in later if steady]


# record length of a CHUNK = plaintext + frame header + chunk header + chunk tag + hop tag
CHUNK_RECORD_OVERHEAD = HEADER.size + CHUNK_HEAD.size + TAG + TAG


@dataclass
class _Hop:
    host: str
    ch: Channel
    alive: bool = True
    inflight: set[int] = field(default_factory=set)


class Source(Role):
    """VM_anomalous (Alg 3), and the sender of the direct baseline."""

    name = "source"
    view: SourceView

    def __init__(self, ctx: AgentContext, view: SourceView) -> None:
        super().__init__(ctx, view)
        vm = ctx.get_vm()
        if vm is None or not vm.running:
            raise RoleError(f"host {ctx.host} runs no VM to migrate")
        self.vm: VM = vm
        self.hops: list[_Hop] = []
        self.pending: dict[int, bytes] = {}
        self.queue: list[int] = []
        self.resend: list[int] = []
        self.acked = 0
        self.delivered = 0  # over cover: chunks the leader says reached the destination
        self.total: int | None = None
        self.last_progress = time.monotonic()
        self.stats.update(failed_intermediates=[], chunks=0, resent=0, vm_bytes=self.vm.size)
        self.precopy: dict[str, Any] = {}
        self.direct: Channel | None = None
        self.trailer_sent = False
        self._controller_abort = False
        self.seed = view.seed

    def start(self) -> None:
        with self.cond:
            if self.state != "prepared":
                raise RoleError(f"source is {self.state}, not prepared")
            self.state = "sending"
        self.stats["started_at"] = time.time()
        threading.Thread(target=self._run, name="source", daemon=True).start()

    def _run(self) -> None:
        try:
            if self.view.mode == "direct":
                self._direct()
            else:
                self._stealth()
        except RoleError as exc:
            self.fail(str(exc))
        except Exception as exc:
            self.log("crash", logging.ERROR, why=json.dumps(f"{type(exc).__name__}: {exc}"))
            self.fail(f"source internal error: {type(exc).__name__}: {exc}")

    def _started(self) -> None:
        """The transfer starts now (the chunk policy is ready)."""
        now = time.time()
        self.stats["transfer_started_at"] = now
        self.stats["transport"] = self.view.transport
        if self.view.decided_at > 0:
            self.stats["decision_to_start_s"] = now - self.view.decided_at

    def _first_byte(self) -> None:
        """A migration frame went into a hop (once)."""
        if "first_byte_at" in self.stats:
            return
        now = time.time()
        self.stats["first_byte_at"] = now
        if self.view.decided_at > 0:
            latency = now - self.view.decided_at
            self.stats["decision_to_first_byte_s"] = latency
            self.log("first_byte", decision_to_first_byte_s=f"{latency:.3f}",
                     transport=self.view.transport)

    def _manifest(self) -> bytes:
        return json.dumps(
            {
                "dest_address": self.view.dest_address,
                "dest_port": self.view.dest_port,
                "vm": self.vm.name,
                "mib": self.vm.mib,
                "page_size": 4096,
                "dirty_pages_per_s": self.vm.dirty_pages_per_s,
                "seed": self.vm.seed,
                **self.vm.address(),  # the VM's own address, if it has one: it moves too
                **qemu_link.manifest_extra(self.vm),
            }
        ).encode()

    def _stream(self, sizes: Callable[[], int],
                drain: Callable[[int | None], tuple[int, int]] | None = None
                ) -> Iterator[tuple[bytes, bool]]:
        """Yield (plaintext chunk, last) for the manifest-less part: pre-copy then trailer.

        With ``drain``, every pre-copy round ends with ``drain(most)``: it waits until the chunks
        sent so far have reached the destination (the leader's acks say so) or, unless ``most``
        is None (the rounds run out), until more than ``most`` pages are dirty again, which then
        go in one more round while the pipeline keeps emptying. So the VM pauses (few pages
        dirty) with nothing queued ahead of its stop-and-copy on any hop, and the wait for the
        pipeline to empty overlaps the rounds, never adds a round of dirty pages of its own;
        rounds cut short behind an earlier round's backlog do not count (``RoundBook``)."""
        pc = self.view.precopy
        max_rounds = int(pc.get("max_rounds", 8))
        buf = bytearray()
        size = sizes()
        paused = False
        qemu = qemu_link.is_qemu(self.vm)  # a real guest: QEMU's own stream, not the model's
        most = int(pc.get("min_dirty_pages", 64))
        fixed = "min_dirty_pages" in pc or drain is None  # the plan's, or not over cover
        book = RoundBook(max_rounds)

        def threshold() -> int:
            """Dirty pages small enough to pause with (``pause_threshold``)."""
            ends = self.stats.get("round_end_s")
            if fixed or not ends:
                return most
            return pause_threshold(book.converging(self.precopy["pages_per_round"]), ends[0],
                                   most)

        def few() -> int:
            """What ``precopy_records`` may pause with after a round: over cover, once the
            rounds are used up anything, else only after a drain that emptied the relay."""
            if drain is None:
                return threshold()
            if book.up():
                return self.vm.pages
            return threshold() if book.emptied else -1

        records = qemu_link.source_records(self.vm, self.precopy, self.stats, pc) if qemu else \
            precopy_records(self.vm, max_rounds=HOLD_CAP if drain is not None else max_rounds,
                            min_dirty_pages=few, stats=self.precopy)
        for rec in records:
            if self.closing.is_set():
                raise RoleError(self.reason or "closed")
            if not paused and drain is not None and "paused_at" in self.precopy:
                paused = True
                size = sizes()  # the policy may size the stop-and-copy's chunks differently
            buf += rec
            while len(buf) >= size:
                yield bytes(buf[:size]), False
                del buf[:size]
                size = sizes()
            if not qemu and rec[:1] == b"R" and "paused_at" not in self.precopy:
                self.stats.setdefault("round_end_s", []).append(round(self._since_start(), 3))
                if drain is not None:
                    if buf:  # the round's tail, so the drain covers all of it
                        yield bytes(buf), False
                        buf.clear()
                    book.ended(*drain(None if book.last() else threshold()))
                    self.stats["holding_rounds"] = len(book.steady) - book.counted()
        if buf:
            yield bytes(buf), False
        self.log(
            "stop_and_copy_sent",
            paused_at=f"{self.precopy['paused_at']:.3f}",
            pages_per_round=",".join(map(str, self.precopy["pages_per_round"])),
        )
        digest = self.vm.digest()
        self.log("image_hashed", sha256=digest[:16])
        self.stats.update(
            rounds=self.precopy.get("rounds"),
            sha256=digest,
            pages_per_round=self.precopy.get("pages_per_round"),
        )
        trailer = {
            "sha256": digest,
            "paused_at": self.precopy["paused_at"],
            "rounds": self.precopy.get("rounds"),
            "vm_bytes": self.vm.size,
            **self.precopy.get("trailer_extra", {}),
        }
        self.trailer_sent = True  # from here on the destination may complete without us
        yield json.dumps(trailer).encode(), True

    def _since_start(self) -> float:
        return time.time() - self.stats.get("transfer_started_at", time.time())

    # --- direct ---------------------------------------------------------------------------
    def _direct(self) -> None:
        policy = policy_from_settings(self.view.chunk_policy, seed=self.seed, ip=self.ctx.ip)
        self._started()  # set-up (e.g. a sniff) is over
        try:
            ch = self._connect(self.view.dest_address, self.view.dest_port, self.view.dest_pubkey)
        except (OSError, ChannelError) as exc:
            raise RoleError(f"destination unreachable: {exc}") from None
        self.direct = ch
        ch.sock.settimeout(self.stall)
        pacer = Pacer()
        manifest = json.loads(self._manifest())
        manifest.pop("dest_address")
        manifest.pop("dest_port")
        try:
            ch.send(build_frame(FrameType.MANIFEST, json.dumps(manifest).encode()))
            self._first_byte()
            seq = 0
            for pt, last in self._stream(policy.next_size):
                if last:
                    ch.send(build_frame(FrameType.TRAILER, pt))
                    break
                pacer.wait(policy.next_gap(len(pt)))
                ch.send(build_frame(FrameType.DATA, data_body(seq, pt)))
                seq += 1
                self.stats["chunks"] = seq
            ch.sock.settimeout(max(self.stall, 60.0))
            reply = parse_frame(ch.recv())
        except (ChannelError, FrameError, OSError) as exc:
            raise RoleError(f"direct stream to the destination broke: {exc}") from None
        finally:
            self._count_sent("destination", ch.bytes_sent)
        if reply.type == FrameType.ABORT:
            raise RoleError(f"destination refused: {parse_text(reply.body)}")
        self._sent()

    def _sent(self) -> None:
        with self.cond:
            if self.state == "sending":
                self.state = "sent"  # the VM stays paused until release or abort
            self.cond.notify_all()
        self.stats["sent_at"] = time.time()
        self.log("sent", chunks=self.stats["chunks"], rounds=self.stats.get("rounds"))

    # --- stealth --------------------------------------------------------------------------
    def _stealth(self) -> None:
        inters = self.view.intermediates
        n, k = self.view.n, self.view.k
        sizes = policy_from_settings(self.view.chunk_policy, seed=self.seed, ip=self.ctx.ip)
        self.stats["chunk_policy"] = sizes.describe()
        key = new_key()
        shares = shamir.split(key, k, n)
        self.faults.on_key(key, shares)
        sealer = ChunkSealer(key, self.mig)
        del key
        self._started()  # set-up (e.g. a sniff) is over
        def share_hop(i: int, ep: Any) -> _Hop:
            """Open the hop to intermediate ``i`` and send it its share."""
            ch = self._connect(ep.ip, ep.port, ep.pubkey)
            # a share travels in a record of a size drawn like any chunk's; over cover the mux's
            # records hide every size, so it goes unpadded (sooner at the leader)
            pad = len(shares[i]) + HEADER.size
            if not self.over_cover:
                pad = max(sizes.next_size() - TAG, pad)
            n_sent = ch.send(build_frame(FrameType.SHARE, shares[i], pad_to=pad))
            self._first_byte()
            self._count_sent(ep.host, n_sent)
            return _Hop(ep.host, ch)

        # over cover a handshake takes a few cover slots: all of them at once, each share as
        # soon as its hop is up; over TCP one after the other, as always
        for i, got in enumerate(self._each_hop(inters, share_hop)):
            if isinstance(got, _Hop):
                self.hops.append(got)
            else:
                self.log("intermediate_unreachable", peer=inters[i].host,
                         why=json.dumps(str(got)))
                self.stats["failed_intermediates"].append(inters[i].host)
        shares.clear()  # the source keeps no share
        if len(self.hops) < k:
            raise RoleError(f"only {len(self.hops)} of {n} intermediates reachable, need k={k}")
        for i, hop in enumerate(self.hops):
            pol = sizes.for_sender(share=1 / len(self.hops), seed=self.seed + 100 + i)
            threading.Thread(target=self._sender, args=(hop, pol), daemon=True).start()
            threading.Thread(target=self._acks, args=(hop,), daemon=True).start()
        self._emit(sealer, self._manifest(), False)

        # each CHUNK record on the wire is exactly the size the policy drew; over cover the
        # stop-and-copy goes in smaller chunks: each of the three hops forwards a chunk only once
        # it has all of it, so small chunks pipeline the last pages (the downtime) better
        def plaintext_size() -> int:
            size = max(64, sizes.next_size() - CHUNK_RECORD_OVERHEAD)
            if self.over_cover and "paused_at" in self.precopy:
                size = min(size, FINAL_CHUNK)
            return size

        def drain(most: int | None) -> tuple[int, int]:
            """Wait until every chunk emitted so far has reached the destination, or (``most``
            not None) more than ``most`` pages are dirty (cover transport). Returns the chunks
            emitted and those delivered by then (for ``RoundBook.ended``)."""
            t0 = time.monotonic()
            with self.cond:
                upto = self.stats["chunks"]
                self._wait_locked(
                    lambda: self.delivered >= upto or (most is not None
                                                       and int(self.vm.dirty.sum()) > most),
                    f"the delivery of round {upto}")
                got = self.delivered
            self.stats["drain_s"] = self.stats.get("drain_s", 0.0) + time.monotonic() - t0
            return upto, got

        # over cover the relay's queues are deep (the mux paces): drain them before a pause
        rounds_drain = drain if self.over_cover else None
        for pt, last in self._stream(plaintext_size, rounds_drain):
            self._emit(sealer, pt, last)
        with self.cond:
            self.total = sealer.next_index
            self._wait_locked(lambda: self.acked >= (self.total or 0), "the last acks")
        self._sent()  # before closing: our ack readers then take the EOF as the end
        for hop in self.hops:
            hop.ch.close()

    def _each_hop(self, inters: list[Any], fn: Callable[[int, Any], _Hop]
                  ) -> list[_Hop | Exception]:
        """``fn(i, ep)`` for every intermediate, in order: concurrently over cover, one by one
        over TCP; each result the hop or why not."""
        out: list[_Hop | Exception] = [ChannelError("not tried")] * len(inters)

        def one(i: int, ep: Any) -> None:
            try:
                out[i] = fn(i, ep)
            except (OSError, ChannelError) as exc:
                out[i] = exc

        if not self.over_cover:
            for i, ep in enumerate(inters):
                one(i, ep)
            return out
        threads = [threading.Thread(target=one, args=(i, ep), daemon=True)
                   for i, ep in enumerate(inters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def _wait_locked(self, ready: Callable[[], bool], what: str) -> None:
        while not ready():
            if self.state != "sending":
                raise RoleError(self.reason or f"stopped while waiting for {what}")
            if time.monotonic() - self.last_progress > self.stall:
                raise RoleError(
                    f"no ack for {self.stall:.0f}s while waiting for {what} (acked {self.acked}): "
                    "leader unreachable or stalled"
                )
            self.cond.wait(0.2)

    def _emit(self, sealer: ChunkSealer, pt: bytes, last: bool) -> None:
        idx, ct = sealer.seal(pt, last)
        frame = build_frame(FrameType.CHUNK, chunk_body(SealedChunk(idx, last, sealer.prefix, ct)))
        with self.cond:
            self._wait_locked(lambda: idx < self.acked + self.window, f"window for chunk {idx}")
            self.pending[idx] = frame
            self.queue.append(idx)
            self.stats["chunks"] = idx + 1
            self.cond.notify_all()

    def _sender(self, hop: _Hop, policy: Any) -> None:
        pacer = Pacer()
        while True:
            with self.cond:
                while True:
                    if not hop.alive or self.state != "sending":
                        return
                    while self.resend and self.resend[0] < self.acked:
                        self.resend.pop(0)
                    if self.resend:
                        idx = self.resend.pop(0)
                        self.stats["resent"] += 1
                        break
                    if self.queue:
                        idx = self.queue.pop(0)
                        break
                    self.cond.wait(0.2)
                frame = self.pending.get(idx)
                if frame is None:
                    continue
                hop.inflight.add(idx)
            pacer.wait(policy.next_gap(len(frame)))
            try:
                self._count_sent(hop.host, hop.ch.send(frame))
            except ChannelError as exc:
                self._hop_dead(hop, exc)
                return

    def _acks(self, hop: _Hop) -> None:
        while True:
            try:
                raw = hop.ch.recv()
            except ChannelError as exc:
                if self.state == "sending":
                    self._hop_dead(hop, exc)
                return
            try:
                fr = parse_frame(raw)
                if fr.type == FrameType.ACK:
                    upto, delivered = parse_ack(fr.body)
                    with self.cond:
                        if upto > self.acked or delivered > self.delivered:
                            for i in range(self.acked, upto):
                                self.pending.pop(i, None)
                            self.acked = max(self.acked, upto)
                            self.delivered = max(self.delivered, delivered)
                            self.last_progress = time.monotonic()
                            self.cond.notify_all()
                elif fr.type == FrameType.ABORT:
                    reason = parse_text(fr.body)
                    if reason.startswith("leader:"):  # the leader gave up: so do we
                        self.fail(reason)
                    else:  # this intermediate lost the leader: re-send through the others
                        self._hop_dead(hop, reason)
                    return
                else:
                    raise FrameError(f"unexpected {fr.type.name} from an intermediate")
            except FrameError as exc:
                self.reject(f"frame from {hop.host}", exc)

    def _hop_dead(self, hop: _Hop, exc: Exception | str) -> None:
        with self.cond:
            if not hop.alive:
                return
            hop.alive = False
            again = sorted(i for i in hop.inflight if i >= self.acked and i in self.pending)
            self.resend = sorted(set(self.resend) | set(again))
            self.stats["failed_intermediates"].append(hop.host)
            alive = sum(h.alive for h in self.hops)
            self.cond.notify_all()
        self.log(
            "intermediate_dead",
            peer=hop.host,
            resend=len(again),
            alive=alive,
            why=json.dumps(str(exc)),
        )
        hop.ch.close()
        if alive == 0:
            self.fail(f"every intermediate is gone (last: {hop.host}: {exc})")

    # --- end ------------------------------------------------------------------------------
    def on_fail(self, reason: str) -> None:
        with self.cond:  # which relay carried each chunk still unacknowledged (names a dropper)
            via: dict[str, list[str]] = {}
            for hop in self.hops:
                for i in hop.inflight:
                    if i >= self.acked:
                        via.setdefault(str(i), []).append(hop.host)
            self.stats["unacked_via"] = via
        for hop in self.hops:
            hop.ch.close()
        if self.direct is not None:
            self.direct.close()
        if not self.vm.paused:
            return
        if self.trailer_sent and not self._controller_abort:
            # the whole image left: the destination may run it already. Resuming here could
            # run the VM twice; the controller decides (abort resumes, release drops).
            self.log("vm_kept_paused", vm=self.vm.name, why=json.dumps("image fully sent"))
            return
        self.vm.resume()
        self.log("vm_resumed", vm=self.vm.name)

    def abort(self, reason: str) -> None:
        """The controller's abort: the migration did not happen, the VM runs here again."""
        self._controller_abort = True
        super().abort(reason)
        if self.vm.paused:  # also after an earlier failure that kept it paused
            self.vm.resume()
            self.log("vm_resumed", vm=self.vm.name)

    def release(self) -> None:
        """The destination runs the VM: drop this copy (only after migration_done)."""
        with self.cond:  # the destination's confirmation may still be on its way to us
            deadline = time.monotonic() + 10.0
            while self.state == "sending" and time.monotonic() < deadline:
                self.cond.wait(0.1)
        late = self.state == "failed" and self.trailer_sent and not self._controller_abort
        if self.state != "sent" and not late:
            raise RoleError(f"refusing to release the VM: source is {self.state}")
        self.vm.destroy()
        self.ctx.set_vm(None)
        self.log("released", vm=self.vm.name, after_late_failure=late)
        with self.cond:
            self.state = "released"
        super().release()
