"""The four roles of a stealth migration (Algs 3–6) and the direct baseline, as run by an agent.

- ``Source`` (VM_anomalous, Alg 3): splits a fresh AES-256 key with Shamir (k of n), sends one
  share to each intermediate, runs pre-copy and seals the stream into chunks whose sizes and send
  times a ``ChunkPolicy`` draws; chunk 0 is the manifest (destination address ...), the last
  chunk the trailer (image hash ...). Keeps at most ``window`` unacknowledged chunks; chunks
  sent through an intermediate that dies are re-sent through the others. In ``direct`` mode it
  streams straight to the destination over one encrypted hop.
- ``Intermediate`` (VM_available, Alg 4): holds its own share, marks each chunk as a data
  segment and forwards it to the leader; relays the leader's acks back. Never sees the
  destination or the key.
- ``Leader`` (Alg 5): with ≥ k shares rebuilds the key, opens the manifest, reorders and opens
  the chunks (window-bounded memory) and sends the stream on to the destination over a hop
  encrypted to the destination's vouched key.
- ``Destination`` (Alg 6): installs the stream, checks the image hash, runs the VM and tells the
  controller (``migration_done`` with sha256 and downtime) — or ``migration_failed``.

Every hop is a ``hosts.channel.Channel`` (one TCP connection, bound to the sender's IP).
Logs are ``migration=ID role=ROLE event=EVENT key=value ...``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts import shamir
from hosts.channel import Channel, ChannelError, listen, load_public
from hosts.chunk_policy import Pacer, policy_from_settings
from hosts.stream import ChunkOpener, ChunkSealer, StreamError, new_key
from hosts.vm import VM, StreamInstaller, VMError, precopy_records
from hosts.wire import (
    CHUNK_HEAD,
    HEADER,
    Frame,
    FrameError,
    FrameType,
    SealedChunk,
    ack_body,
    build_frame,
    chunk_body,
    data_body,
    parse_ack,
    parse_chunk,
    parse_data,
    parse_frame,
    parse_text,
)

log = logging.getLogger("hosts.roles")

TAG = 16  # AES-GCM tag of a hop record
# record length of a CHUNK = plaintext + frame header + chunk header + chunk tag + hop tag
CHUNK_RECORD_OVERHEAD = HEADER.size + CHUNK_HEAD.size + TAG + TAG


@dataclass
class AgentContext:
    """What a role may use of its agent."""

    host: str
    ip: str
    static: X25519PrivateKey
    workdir: str
    vm_port: int = 7000
    report: Callable[[dict[str, Any]], None] = lambda msg: None
    get_vm: Callable[[], VM | None] = lambda: None
    set_vm: Callable[[VM | None], None] = lambda vm: None


class RoleError(RuntimeError):
    """A role cannot do what it was asked; the message says why."""


class Role:
    """Common state, logging and failure handling of the roles."""

    name = "role"

    def __init__(self, ctx: AgentContext, view: dict[str, Any]) -> None:
        self.ctx = ctx
        self.view = view
        self.mig = str(view["migration"])
        self.me = view["me"]
        self.fault: dict[str, Any] = view.get("fault") or {}
        self.window = int(view.get("window", 32))
        self.stall = float(view.get("stall_timeout_s", 15.0))
        self.state = "prepared"
        self.reason = ""
        self.stats: dict[str, Any] = {"bytes_sent": {}, "bytes_received": 0, "rejected": 0}
        self.cond = threading.Condition()
        self.closing = threading.Event()
        self._reported = False
        self._listener: socket.socket | None = None

    # --- logging and state ----------------------------------------------------------------
    def log(self, event: str, level: int = logging.INFO, **kv: Any) -> None:
        extra = " ".join(f"{k}={v}" for k, v in kv.items())
        log.log(
            level,
            "migration=%s role=%s host=%s event=%s %s",
            self.mig,
            self.name,
            self.ctx.host,
            event,
            extra,
        )

    def reject(self, what: str, why: object) -> None:
        """A bad frame or connection: log it, count it, carry on."""
        self.stats["rejected"] += 1
        self.log("reject", logging.WARNING, what=what, why=json.dumps(str(why)))

    def fail(self, reason: str) -> None:
        """Give up this migration (once), tell the controller, close everything."""
        with self.cond:
            if self.state in ("failed", "aborted", "released", "done", "closed"):
                return
            self.state = "failed"
            self.reason = reason
            self.cond.notify_all()
        self.log("failed", logging.WARNING, reason=json.dumps(reason))
        self.on_fail(reason)
        self.close()
        self._report({"op": "migration_failed", "reason": reason})

    def _report(self, msg: dict[str, Any]) -> None:
        if self._reported:
            return
        self._reported = True
        msg.update(migration=self.mig, host=self.ctx.host, role=self.name)
        try:
            self.ctx.report(msg)
        except Exception as exc:  # the controller may be gone; the status op still tells
            self.log("report_failed", logging.WARNING, why=json.dumps(str(exc)))

    def on_fail(self, reason: str) -> None:
        """Role-specific clean-up on failure (the source resumes its VM)."""

    def close(self) -> None:
        self.closing.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self.cond:
            self.cond.notify_all()

    # --- agent commands -------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        return {}

    def start(self) -> None:
        raise RoleError(f"the {self.name} is not started by command, only the source is")

    def abort(self, reason: str) -> None:
        with self.cond:
            if self.state in ("aborted", "released"):
                return
            was = self.state
            self.state = "aborted"
            self.reason = self.reason or reason
            self.cond.notify_all()
        self.log("abort", reason=json.dumps(reason), was=was)
        self.on_fail(reason)
        self.close()

    def release(self) -> None:
        """The migration is over: free what this role holds."""
        with self.cond:
            if self.state not in ("failed", "aborted"):
                self.state = "released" if self.name == "source" else "closed"
            self.cond.notify_all()
        self.close()

    def status(self) -> dict[str, Any]:
        """A snapshot (the role's threads keep updating ``stats`` meanwhile)."""
        for _ in range(5):
            try:
                stats = json.loads(json.dumps(self.stats, default=str))
                break
            except RuntimeError:  # changed size during iteration: try again
                continue
        else:
            stats = {}
        return {"role": self.name, "state": self.state, "reason": self.reason, "stats": stats}

    # --- receivers ------------------------------------------------------------------------
    def _listen(self, ip: str, allowed: set[str]) -> int:
        port = int(self.me.get("listen_port") or self.me.get("port", 0))
        self._listener = listen(ip, port)
        self._listener.settimeout(0.5)
        port = self._listener.getsockname()[1]
        threading.Thread(
            target=self._accept_loop, args=(allowed,), name=f"{self.name}:accept", daemon=True
        ).start()
        self.log("listening", ip=ip, port=port)
        return port

    def _accept_loop(self, allowed: set[str]) -> None:
        lst = self._listener
        assert lst is not None
        while not self.closing.is_set():
            try:
                conn, addr = lst.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._handshake, args=(conn, addr, allowed), daemon=True
            ).start()

    def _handshake(self, conn: socket.socket, addr: Any, allowed: set[str]) -> None:
        try:
            ch = Channel.accept(conn, self.ctx.static, allowed, self.mig, timeout=self.stall)
        except ChannelError as exc:
            self.reject(f"connection from {addr[0]}:{addr[1]}", exc)
            conn.close()
            return
        try:
            first = ch.recv()  # proves the sender holds its key
        except ChannelError as exc:
            self.reject(f"connection from {addr[0]}:{addr[1]}", exc)
            ch.close()
            self.on_gone(ch.peer_key)
            return
        try:
            self.on_channel(ch, first)
        except Exception as exc:  # a receiver never dies of one connection
            self.reject(f"connection from {ch.peer}", f"{type(exc).__name__}: {exc}")
            ch.close()

    def on_channel(self, ch: Channel, first: bytes) -> None:
        raise NotImplementedError

    def on_gone(self, peer_key: str) -> None:
        """An expected sender connected and vanished (or forged) before its first record."""

    def _count_sent(self, label: str, n: int) -> None:
        bs = self.stats["bytes_sent"]
        bs[label] = bs.get(label, 0) + n

    def _maybe_die(self, counter: str, n: int) -> None:
        """Test hook: a fault in the plan kills this process for real."""
        limit = self.fault.get(counter)
        if limit is not None and n >= int(limit):
            self.log("fault_injected_exit", fault=counter, at=n)
            logging.shutdown()
            os._exit(17)


# ======================================================================================
class Intermediate(Role):
    """VM_available (Alg 4)."""

    name = "intermediate"

    def __init__(self, ctx: AgentContext, view: dict[str, Any]) -> None:
        super().__init__(ctx, view)
        self.upstream: Channel | None = None
        self.downstream: Channel | None = None
        self.share: bytes | None = None
        self.stats["chunks"] = 0

    def prepare(self) -> dict[str, Any]:
        return {"port": self._listen(self.ctx.ip, {self.view["source_pubkey"]})}

    def on_channel(self, ch: Channel, first: bytes) -> None:
        with self.cond:
            if self.upstream is not None or self.state != "prepared":
                self.reject(f"second upstream from {ch.peer}", "already relaying")
                ch.close()
                return
            self.upstream = ch
            self.state = "relaying"
        leader = self.view["leader"]
        try:
            self.downstream = Channel.connect(
                self.ctx.ip,
                leader["ip"],
                int(leader["port"]),
                load_public(leader["pubkey"]),
                self.ctx.static,
                self.mig,
                timeout=self.stall,
            )
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
            self._maybe_die("die_on_share", 1)
            self.share = fr.body  # the one share this VM ever holds
            if self.fault.get("drop_share"):
                self.log("fault_dropped_share")
                return
            n = self.downstream.send(build_frame(FrameType.SHARE, fr.body, pad_to=len(raw)))
        elif fr.type == FrameType.CHUNK:
            chunk = parse_chunk(fr.body)  # a malformed chunk is refused here, not at the leader
            nth = self.stats["chunks"] + 1
            body, copies = self._faulty(fr.body, nth, chunk.index) if self.fault else (fr.body, 1)
            # Alg 4: mark the chunk as a data segment and send it to the leader
            segment = build_frame(FrameType.SEGMENT, body, pad_to=len(raw))
            n = sum(self.downstream.send(segment) for _ in range(copies))
            self.stats["chunks"] = nth
            if copies:
                self._maybe_die("die_after_chunks", nth)
        else:
            raise FrameError(f"unexpected {fr.type.name} from the source")
        self._count_sent("leader", n)

    def _faulty(self, body: bytes, nth: int, index: int) -> tuple[bytes, int]:
        """Test hooks of a misbehaving relay, off the normal path: slow (``delay_chunk_s``),
        dropping, forging or replaying its ``nth`` chunk. Returns the body and how many copies
        to send."""
        f = self.fault
        if f.get("delay_chunk_s"):
            time.sleep(float(f["delay_chunk_s"]))
        if f.get("drop_chunk") == nth:
            self.log("fault_dropped_chunk", index=index)
            return body, 0
        if f.get("forge_chunk") == nth:
            body = body[:-1] + bytes([body[-1] ^ 1])
            self.log("fault_forged_chunk", index=index)
        if f.get("replay_chunk") == nth:
            self.log("fault_replayed_chunk", index=index)
            return body, 2
        return body, 1

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


# ======================================================================================
class Leader(Role):
    """VM_leader (Alg 5)."""

    name = "leader"

    def __init__(self, ctx: AgentContext, view: dict[str, Any]) -> None:
        super().__init__(ctx, view)
        self.n = int(view["n"])
        self.k = int(view["k"])
        self.conns: list[Channel] = []
        self.live: set[int] = set()
        self.seen_keys: set[str] = set()  # intermediates that connected, alive or not
        self.shares: dict[int, bytes] = {}  # connection id -> share
        self.buffer: dict[int, tuple[SealedChunk, Channel]] = {}
        self.next = 0
        self.last_progress = time.monotonic()
        self.dest: Channel | None = None
        self.stats.update(chunks=0, duplicates=0, peak_buffer=0)

    def prepare(self) -> dict[str, Any]:
        port = self._listen(self.ctx.ip, set(self.view["intermediate_pubkeys"]))
        threading.Thread(target=self._pump_safe, name="leader:pump", daemon=True).start()
        return {"port": port}

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
                self.cond.notify_all()
            self._maybe_die("die_after_chunks", self.next)
            if self.next % max(1, self.window // 4) == 0:
                self._ack(self.next)

    def _ack(self, upto: int) -> None:
        frame = build_frame(FrameType.ACK, ack_body(upto))
        for cid in sorted(self.live):
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
            self.dest = Channel.connect(
                self.ctx.ip,
                addr,
                port,
                load_public(self.view["dest_pubkey"]),
                self.ctx.static,
                self.mig,
                timeout=self.stall,
            )
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
        self._maybe_die("die_after_done", 1)  # test hook: the last ack never reaches the source
        with self.cond:
            self.next += 1
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


# ======================================================================================
class Destination(Role):
    """VM_destination (Alg 6)."""

    name = "destination"

    def __init__(self, ctx: AgentContext, view: dict[str, Any]) -> None:
        super().__init__(ctx, view)
        self.upstream: Channel | None = None
        self.vm: VM | None = None
        self.result: dict[str, Any] = {}

    def prepare(self) -> dict[str, Any]:
        return {"port": self._listen("0.0.0.0", {self.view["peer_pubkey"]})}

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


# ======================================================================================
@dataclass
class _Hop:
    host: str
    ch: Channel
    alive: bool = True
    inflight: set[int] = field(default_factory=set)


class Source(Role):
    """VM_anomalous (Alg 3), and the sender of the direct baseline."""

    name = "source"

    def __init__(self, ctx: AgentContext, view: dict[str, Any]) -> None:
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
        self.total: int | None = None
        self.last_progress = time.monotonic()
        self.stats.update(failed_intermediates=[], chunks=0, resent=0, vm_bytes=self.vm.size)
        self.precopy: dict[str, Any] = {}
        self.direct: Channel | None = None
        self.trailer_sent = False
        self._controller_abort = False
        self.seed = int(view.get("seed", 0))

    def start(self) -> None:
        with self.cond:
            if self.state != "prepared":
                raise RoleError(f"source is {self.state}, not prepared")
            self.state = "sending"
        self.stats["started_at"] = time.time()
        threading.Thread(target=self._run, name="source", daemon=True).start()

    def _run(self) -> None:
        try:
            if self.view["mode"] == "direct":
                self._direct()
            else:
                self._stealth()
        except RoleError as exc:
            self.fail(str(exc))
        except Exception as exc:
            self.log("crash", logging.ERROR, why=json.dumps(f"{type(exc).__name__}: {exc}"))
            self.fail(f"source internal error: {type(exc).__name__}: {exc}")

    def _manifest(self) -> bytes:
        return json.dumps(
            {
                "dest_address": self.view["dest_address"],
                "dest_port": int(self.view["dest_port"]),
                "vm": self.vm.name,
                "mib": self.vm.mib,
                "page_size": 4096,
                "dirty_pages_per_s": self.vm.dirty_pages_per_s,
                "seed": self.vm.seed,
            }
        ).encode()

    def _stream(self, sizes: Callable[[], int]) -> Any:
        """Yield (plaintext chunk, last) for the manifest-less part: pre-copy then trailer."""
        pc = self.view.get("precopy") or {}
        buf = bytearray()
        size = sizes()
        for rec in precopy_records(
            self.vm,
            max_rounds=int(pc.get("max_rounds", 8)),
            min_dirty_pages=int(pc.get("min_dirty_pages", 64)),
            stats=self.precopy,
        ):
            if self.closing.is_set():
                raise RoleError(self.reason or "closed")
            buf += rec
            while len(buf) >= size:
                yield bytes(buf[:size]), False
                del buf[:size]
                size = sizes()
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
        }
        self.trailer_sent = True  # from here on the destination may complete without us
        yield json.dumps(trailer).encode(), True

    # --- direct ---------------------------------------------------------------------------
    def _direct(self) -> None:
        policy = policy_from_settings(
            self.view.get("chunk_policy") or {}, seed=self.seed, ip=self.ctx.ip
        )
        try:
            ch = Channel.connect(
                self.ctx.ip,
                self.view["dest_address"],
                int(self.view["dest_port"]),
                load_public(self.view["dest_pubkey"]),
                self.ctx.static,
                self.mig,
                timeout=self.stall,
            )
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
        inters = self.view["intermediates"]
        n, k = int(self.view["n"]), int(self.view["k"])
        settings = self.view.get("chunk_policy") or {}
        sizes = policy_from_settings(settings, seed=self.seed, ip=self.ctx.ip)
        self.stats["chunk_policy"] = sizes.describe()
        key = new_key()
        shares = shamir.split(key, k, n)
        if self.fault.get("record_key"):  # test hook: lets a test look for the key on the wire
            with open(self.fault["record_key"], "w") as f:
                json.dump({"key": key.hex(), "shares": [s.hex() for s in shares]}, f)
        sealer = ChunkSealer(key, self.mig)
        del key
        for i, ep in enumerate(inters):
            try:
                ch = Channel.connect(
                    self.ctx.ip,
                    ep["ip"],
                    int(ep["port"]),
                    load_public(ep["pubkey"]),
                    self.ctx.static,
                    self.mig,
                    timeout=self.stall,
                )
                # a share travels in a record of a size drawn like any chunk's
                pad = max(sizes.next_size() - TAG, len(shares[i]) + HEADER.size)
                n_sent = ch.send(build_frame(FrameType.SHARE, shares[i], pad_to=pad))
                self._count_sent(ep["host"], n_sent)
                self.hops.append(_Hop(ep["host"], ch))
            except (OSError, ChannelError) as exc:
                self.log("intermediate_unreachable", peer=ep["host"], why=json.dumps(str(exc)))
                self.stats["failed_intermediates"].append(ep["host"])
        del shares
        if len(self.hops) < k:
            raise RoleError(f"only {len(self.hops)} of {n} intermediates reachable, need k={k}")
        for i, hop in enumerate(self.hops):
            pol = sizes.for_sender(share=1 / len(self.hops), seed=self.seed + 100 + i)
            threading.Thread(target=self._sender, args=(hop, pol), daemon=True).start()
            threading.Thread(target=self._acks, args=(hop,), daemon=True).start()
        self._emit(sealer, self._manifest(), False)

        # each CHUNK record on the wire is exactly the size the policy drew
        def plaintext_size() -> int:
            return max(64, sizes.next_size() - CHUNK_RECORD_OVERHEAD)

        for pt, last in self._stream(plaintext_size):
            self._emit(sealer, pt, last)
        with self.cond:
            self.total = sealer.next_index
            self._wait_locked(lambda: self.acked >= (self.total or 0), "the last acks")
        self._sent()  # before closing: our ack readers then take the EOF as the end
        for hop in self.hops:
            hop.ch.close()

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
                    upto = parse_ack(fr.body)
                    with self.cond:
                        if upto > self.acked:
                            for i in range(self.acked, upto):
                                self.pending.pop(i, None)
                            self.acked = upto
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


ROLES: dict[str, type[Role]] = {
    "source": Source,
    "intermediate": Intermediate,
    "leader": Leader,
    "destination": Destination,
}
