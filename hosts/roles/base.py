"""What every role has in common: its agent's context, state, logs, failure, the accept loop.

``Role`` is the base of the four roles (``hosts.roles.source``, ``.intermediate``, ``.leader``,
``.destination``): it holds the role's typed view (``hosts.protocol.plan``), logs
``migration=ID role=ROLE host=HOST event=EVENT key=value ...``, turns a failure into one
``migration_failed`` report, listens and accepts hop channels for the receivers
(``_listen``/``on_channel``) and connects them for the senders (``_connect``). The agent
(``hosts.agent``) drives a role through ``prepare``, ``start``, ``abort``, ``release`` and
``status``.

Bounds on what a peer can make a role spend: a listener serves at most ``expected_peers() +
CONN_SLACK`` connections at once (one thread each; more are closed at once, unread); the Noise
handshake, including the sender's first record (capped at 64 KiB by ``hosts.channel``), must end
within ``HANDSHAKE_S`` (or the stall timeout if shorter); a sender key is accepted once per
listener (``seen``); connections still in their handshake are closed by ``close()``; and every
later read and write on a hop times out after twice the stall timeout (``io_timeout``).

Transport: a view with ``transport="tcp"`` (the default) listens and connects on TCP, the role's
port a real one. With ``transport="cover"`` both go through the agent's cover mux
(``AgentContext.get_cover``, a ``CoverTransport``: ``hosts.cover.CoverMux``): ``_listen`` binds
the role's port as a virtual port of the mux and takes each stream it hands over like an accepted
connection, ``_connect`` opens a stream to the peer's virtual port; the same Noise handshake and
records run on top, so the roles above see no difference and nothing of them is on the wire.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, listen, load_public
from hosts.protocol.plan import DEFAULTS, RoleView
from hosts.roles.faults import faults_for
from hosts.vm import VM

log = logging.getLogger("hosts.roles")

CONN_SLACK = 4  # connections a listener serves beyond its expected peers (junk, late retries)
HANDSHAKE_S = 10.0  # the longest a connection may take from accept to its first record


OnStream = Callable[[socket.socket, tuple[str, int]], None]


class CoverTransport(Protocol):
    """What a role uses of its agent's cover mux (``hosts.cover.CoverMux``)."""

    def open(self, peer_ip: str, vport: int) -> socket.socket:
        """A stream to ``vport`` of the mux at ``peer_ip`` (our end of a socketpair)."""
        ...

    def bind(self, vport: int, on_stream: OnStream) -> None:
        """Hand every stream opened to ``vport`` to ``on_stream(sock, (peer_ip, stream_id))``."""
        ...

    def unbind(self, vport: int) -> None:
        ...

    def acked(self, sock: socket.socket) -> int | None:
        """Bytes written to our end ``sock`` that the peer's mux acknowledged (None: gone)."""
        ...

    @property
    def rate_bytes_per_s(self) -> float:
        """The cover rate of this mux: what a migration's hops can get at most."""
        ...


@dataclass
class AgentContext:
    """What a role may use of its agent (``get_cover``: its cover mux, if one runs)."""

    host: str
    ip: str
    static: X25519PrivateKey
    workdir: str
    vm_port: int = 7000
    report: Callable[[dict[str, Any]], None] = lambda msg: None
    get_vm: Callable[[], VM | None] = lambda: None
    set_vm: Callable[[VM | None], None] = lambda vm: None
    get_cover: Callable[[], CoverTransport | None] = lambda: None


COVER_CHUNK = DEFAULTS.chunk_size  # the cover arm's chunk size (CoverChunkPolicy's default)


def stall_for_rate(rate_bytes_per_s: float, window: int) -> float:
    """The stall timeout a role over cover needs at least: four role windows of chunks at the
    cover rate (the window crosses three hops, each paced by the cover schedule)."""
    if not rate_bytes_per_s > 0:
        raise ValueError(f"cover rate must be > 0, got {rate_bytes_per_s!r}")
    return 4 * max(1, window) * COVER_CHUNK / rate_bytes_per_s


class RoleError(RuntimeError):
    """A role cannot do what it was asked; the message says why."""


class Role:
    """Common state, logging and failure handling of the roles."""

    name = "role"

    def __init__(self, ctx: AgentContext, view: RoleView) -> None:
        self.ctx = ctx
        self.view = view
        self.mig = view.migration
        self.me = view.me
        self.faults = faults_for(view.fault, self.log)  # NO_FAULTS unless a test asks
        self.window = view.window
        self.stall = view.stall_timeout_s
        if view.transport == "cover":  # a low cover rate must never look like a stall
            rate = getattr(ctx.get_cover(), "rate_bytes_per_s", None)
            if rate:
                self.stall = max(self.stall, stall_for_rate(rate, view.window))
        self.state = "prepared"
        self.reason = ""
        self.stats: dict[str, Any] = {"bytes_sent": {}, "bytes_received": 0, "rejected": 0}
        self.cond = threading.Condition()
        self.closing = threading.Event()
        self._reported = False
        self._listener: socket.socket | None = None
        self._pending: set[socket.socket] = set()  # accepted, handshake not finished
        self._serving = 0  # connections with a thread: in their handshake or on_channel
        self._seen: set[str] = set()  # sender keys accepted once (Channel.accept adds them)
        self._conn_lock = threading.Lock()
        self._bound: tuple[CoverTransport, int] | None = None  # cover: the mux and our vport

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
            _shut(self._listener)  # shutdown wakes the accept loop: the port closes now
        bound, self._bound = self._bound, None
        if bound is not None:
            try:
                bound[0].unbind(bound[1])
            except Exception as exc:  # the mux may have stopped already
                self.log("unbind_failed", logging.WARNING, why=json.dumps(str(exc)))
        with self._conn_lock:
            pending, self._pending = list(self._pending), set()
        for conn in pending:  # wakes their handshake threads, which then give up
            _shut(conn)
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
    def expected_peers(self) -> int:
        """How many senders connect to this role's listener in a normal run."""
        return 1

    @property
    def io_timeout(self) -> float:
        """Every read and write on a hop after its handshake gives up after this long: twice the
        stall timeout, so a role's own stall check (which names what it waited for) comes first
        and a hop is never dropped while its peer is merely waiting for a third one."""
        return 2 * self.stall

    @property
    def over_cover(self) -> bool:
        return self.view.transport == "cover"

    def _cover(self) -> CoverTransport:
        mux = self.ctx.get_cover()
        if mux is None:
            raise RoleError(f"the plan asks for the cover transport but {self.ctx.host} runs no "
                            "cover mux (the controller's cover_start comes first)")
        return mux

    def _listen(self, ip: str, allowed: set[str]) -> int:
        if self.over_cover:
            return self._bind_cover(allowed)
        port = self.me.listen_port or self.me.port
        self._listener = listen(ip, port)
        self._listener.settimeout(0.5)
        port = self._listener.getsockname()[1]
        threading.Thread(
            target=self._accept_loop, args=(allowed,), name=f"{self.name}:accept", daemon=True
        ).start()
        self.log("listening", ip=ip, port=port, max_connections=self.max_connections())
        return port

    def _bind_cover(self, allowed: set[str]) -> int:
        """Bind the role's port (0: a free one drawn at random) as a virtual port of the mux."""
        mux = self._cover()
        want = self.me.listen_port or self.me.port

        def on_stream(conn: socket.socket, addr: tuple[str, int]) -> None:
            self._admit(conn, addr, allowed)

        for _ in range(1 if want else 64):
            port = want or random.randrange(1024, 65536)
            try:
                mux.bind(port, on_stream)
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                if want:
                    raise RoleError(f"cover port {port}: {exc}") from None
                continue
            self._bound = (mux, port)
            self.log("listening", transport="cover", vport=port,
                     max_connections=self.max_connections())
            return port
        raise RoleError("no free virtual port on the cover mux")

    def max_connections(self) -> int:
        return self.expected_peers() + CONN_SLACK

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
            self._admit(conn, addr, allowed)

    def _admit(self, conn: socket.socket, addr: Any, allowed: set[str]) -> None:
        """One accepted connection (or cover stream; ``addr`` names it): a thread runs its
        handshake, unless the listener already serves its maximum (then it is closed unread)."""
        with self._conn_lock:
            full = self._serving >= self.max_connections() or self.closing.is_set()
            if not full:
                self._serving += 1
                self._pending.add(conn)
        if full:  # closed unread: no thread, no buffer
            _shut(conn)
            self.reject(f"connection from {addr[0]}:{addr[1]}",
                        f"{self.max_connections()} connections already served")
            return
        threading.Thread(
            target=self._serve, args=(conn, addr, allowed), name=f"{self.name}:conn",
            daemon=True,
        ).start()

    def _serve(self, conn: socket.socket, addr: Any, allowed: set[str]) -> None:
        try:
            self._handshake(conn, addr, allowed)
        finally:
            with self._conn_lock:
                self._serving -= 1
                self._pending.discard(conn)

    def _handshake(self, conn: socket.socket, addr: Any, allowed: set[str]) -> None:
        try:
            ch = Channel.accept(
                conn, self.ctx.static, allowed, self.mig, timeout=min(HANDSHAKE_S, self.stall),
                seen=self._seen, io_timeout=self.io_timeout,
                peer=f"{addr[0]}:{addr[1]}",
            )
        except ChannelError as exc:
            self.reject(f"connection from {addr[0]}:{addr[1]}", exc)
            conn.close()
            return
        with self._conn_lock:
            self._pending.discard(conn)
            if self.closing.is_set():
                ch.close()
                return
        try:
            first = ch.recv()  # the first frame, within the io timeout
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

    def _connect(self, ip: str, port: int, pubkey: str) -> Channel:
        """A hop channel from this host to ``ip:port``, whose receiver must hold ``pubkey``.

        The handshake must end within ``HANDSHAKE_S`` (or the stall timeout if shorter); every
        later read and write within the stall timeout. Over cover, a stream of the mux to the
        peer's virtual port ``port`` carries the same handshake and records.
        """
        if self.over_cover:
            mux = self._cover()  # a RoleError of its own when this agent runs no mux
            try:
                sock = mux.open(ip, port)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ChannelError(f"cover stream to {ip}:{port}: {exc}") from None
            return Channel.initiate(
                sock, load_public(pubkey), self.ctx.static, self.mig,
                timeout=min(HANDSHAKE_S, self.stall), peer=f"{ip}:{port}",
                io_timeout=self.io_timeout,
            )
        return Channel.connect(
            self.ctx.ip, ip, port, load_public(pubkey), self.ctx.static, self.mig,
            timeout=min(HANDSHAKE_S, self.stall), io_timeout=self.io_timeout,
        )


def _shut(conn: socket.socket) -> None:
    """Close a socket another thread may be blocked on (shutdown wakes it first)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
