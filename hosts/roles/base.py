"""What every role has in common: its agent's context, state, logs, failure, the accept loop.

``Role`` is the base of the four roles (``hosts.roles.source``, ``.intermediate``, ``.leader``,
``.destination``): it holds the role's typed view (``hosts.protocol.plan``), logs
``migration=ID role=ROLE host=HOST event=EVENT key=value ...``, turns a failure into one
``migration_failed`` report, listens and accepts hop channels for the receivers
(``_listen``/``on_channel``) and connects them for the senders (``_connect``). The agent
(``hosts.agent``) drives a role through ``prepare``, ``start``, ``abort``, ``release`` and
``status``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hosts.channel import Channel, ChannelError, listen, load_public
from hosts.protocol.plan import RoleView
from hosts.roles.faults import faults_for
from hosts.vm import VM

log = logging.getLogger("hosts.roles")


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

    def __init__(self, ctx: AgentContext, view: RoleView) -> None:
        self.ctx = ctx
        self.view = view
        self.mig = view.migration
        self.me = view.me
        self.faults = faults_for(view.fault, self.log)  # NO_FAULTS unless a test asks
        self.window = view.window
        self.stall = view.stall_timeout_s
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
        port = self.me.listen_port or self.me.port
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

    def _connect(self, ip: str, port: int, pubkey: str) -> Channel:
        """A hop channel from this host to ``ip:port``, whose receiver must hold ``pubkey``."""
        return Channel.connect(
            self.ctx.ip, ip, port, load_public(pubkey), self.ctx.static, self.mig,
            timeout=self.stall,
        )
