"""The management plane: newline-delimited JSON over a Unix socket, out of band, authenticated.

The tenant network is what attackers watch, so the controller, the runner and the host agents
talk over Unix sockets instead. The sockets live in the run's private folder (0700, root's,
``hosts.protocol.auth.private_dir``), which attacker hosts do not see (Mininet ``privateDirs``).
One request is one JSON object on one line; the reply is one JSON object on one line:
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. A connection may carry several
requests.

Every connection and request is checked, in this order, and every refusal is a logged error
reply (the server never dies of one):

1. the peer's credentials (``SO_PEERCRED``): its uid must be in ``allowed_uids`` (default: our
   own, i.e. root in the testbed);
2. the size (``MAX_LINE``) and the time to send it (``read_timeout_s``; an idle connection is
   closed after ``idle_timeout_s``);
3. the request's MAC (``hosts.protocol.auth``: identity, freshness, no replay);
4. the caller's right to the op (``hosts.protocol.policy.check``, the one table).

At most ``max_conns`` connections are served at once (one thread each); further ones wait in
the listen backlog, so a flood of idle clients holds a bounded number of threads. ``call`` has
one deadline for connect, send and reply, and caps the reply's size.

Used by the controller (``MgmtServer``), the runner, the monitors and the role agents (``call``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from hosts.protocol import policy as P
from hosts.protocol.auth import CONTROLLER, AuthError, Credential, Verifier, sign

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # a request (or reply) larger than 1 MiB is refused
MAX_CONNS = 32  # connections served at once per server
IDLE_TIMEOUT_S = 10.0  # a connection with no request for this long is closed
READ_TIMEOUT_S = 10.0  # a request must arrive whole this soon after its first byte
WRITE_TIMEOUT_S = 10.0  # a reply must be taken this soon

Handler = Callable[[dict[str, Any], str], dict[str, Any]]  # (request, caller identity) -> reply
Policy = Callable[[str, str, str, dict[str, Any]], None]  # (server, op, caller, msg); raises


class MgmtError(RuntimeError):
    """The peer answered ``ok: false`` or could not be reached; the message says which."""


def encode(msg: dict[str, Any]) -> bytes:
    """One message as one line of JSON."""
    return json.dumps(msg, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one request line; raises ValueError with a readable reason."""
    if len(line) > MAX_LINE:
        raise ValueError(f"request of {len(line)} bytes exceeds {MAX_LINE}")
    try:
        msg = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ValueError("a request must be a JSON object")
    if not isinstance(msg.get("op"), str):
        raise ValueError("a request needs a string field 'op'")
    return msg


def dispatch(handler: Handler, line: bytes, verifier: Verifier,
             policy: Policy = P.check) -> dict[str, Any]:
    """Check and run one raw request line; never raises: errors become error replies."""
    try:
        msg = decode(line)
    except ValueError as exc:
        log.warning("event=mgmt_refused server=%s why=%r", verifier.server, f"malformed: {exc}")
        return {"ok": False, "error": f"malformed request: {exc}"}
    op = msg["op"]
    try:
        caller = verifier.verify(msg)
        policy(verifier.server, op, caller, msg)
    except (AuthError, PermissionError) as exc:
        claimed = msg.get("auth", {}).get("id") if isinstance(msg.get("auth"), dict) else None
        log.warning("event=mgmt_refused server=%s op=%r claimed=%r why=%r", verifier.server,
                    op[:64], str(claimed)[:64], str(exc))
        return {"ok": False, "error": f"refused: {exc}"}
    msg = {k: v for k, v in msg.items() if k != "auth"}
    try:
        reply = handler(msg, caller)
    except Exception as exc:  # the server must survive any request
        log.exception("management request %r failed", op)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not isinstance(reply, dict):
        return {"ok": False, "error": "internal: handler returned no reply"}
    reply.setdefault("ok", True)
    return reply


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _read_line(conn: socket.socket, buf: bytearray, idle_s: float, read_s: float) -> bytes | None:
    """The next request line (None: the peer closed, went idle or sent too much)."""
    started: float | None = None
    idle_end = time.monotonic() + idle_s
    while True:
        nl = buf.find(b"\n")
        if nl >= 0:
            line = bytes(buf[:nl + 1])
            del buf[:nl + 1]
            return line
        if len(buf) > MAX_LINE:
            raise ValueError(f"request exceeds {MAX_LINE} bytes")
        if buf and started is None:
            started = time.monotonic()
        end = idle_end if started is None else started + read_s
        left = end - time.monotonic()
        if left <= 0:
            return None
        conn.settimeout(left)
        try:
            part = conn.recv(65536)
        except TimeoutError:
            return None
        if not part:
            return None
        buf += part


class MgmtServer:
    """A Unix-socket server that answers each authenticated, allowed request line with
    ``handler(msg, caller)``; one thread per connection, at most ``max_conns`` at once."""

    def __init__(self, path: str, handler: Handler, verifier: Verifier, *,
                 policy: Policy = P.check, allowed_uids: Collection[int] | None = None,
                 max_conns: int = MAX_CONNS, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.path, self.handler, self.verifier, self.policy = path, handler, verifier, policy
        self.allowed_uids = frozenset(allowed_uids if allowed_uids is not None
                                      else {os.geteuid()})
        self.idle_timeout_s, self.read_timeout_s = idle_timeout_s, read_timeout_s
        self.max_conns = max_conns
        self._slots = threading.BoundedSemaphore(max_conns)
        self._closed = threading.Event()
        self._active = 0
        self._lock = threading.Lock()
        if os.path.lexists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)  # root's only (and its folder is 0700)
        self.sock.listen(128)
        self.sock.settimeout(0.5)

    @property
    def active(self) -> int:
        """Connections being served now."""
        return self._active

    def start(self) -> threading.Thread:
        """Serve in a daemon thread and return it."""
        t = threading.Thread(target=self.serve_forever, name=f"mgmt:{self.path}", daemon=True)
        t.start()
        return t

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue  # every slot busy: new connections wait in the backlog
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError as exc:
                self._slots.release()
                if self._closed.is_set():
                    return
                log.warning("event=mgmt_accept_failed server=%s why=%r", self.verifier.server,
                            str(exc))
                time.sleep(0.1)  # e.g. out of file descriptors: try again shortly
                continue
            with self._lock:
                self._active += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"mgmt-conn:{os.path.basename(self.path)}").start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                uid = peer_uid(conn)
                if uid not in self.allowed_uids:
                    log.warning("event=mgmt_refused server=%s peer_uid=%d why='uid not allowed'",
                                self.verifier.server, uid)
                    self._send(conn, {"ok": False, "error": f"refused: peer uid {uid} may not "
                                                            "use the management plane"})
                    return
                buf = bytearray()
                while not self._closed.is_set():
                    try:
                        line = _read_line(conn, buf, self.idle_timeout_s, self.read_timeout_s)
                    except ValueError as exc:
                        log.warning("event=mgmt_refused server=%s why=%r", self.verifier.server,
                                    str(exc))
                        self._send(conn, {"ok": False, "error": f"malformed request: {exc}"})
                        return
                    if line is None:
                        return
                    if not line.strip():
                        continue
                    if not self._send(conn, dispatch(self.handler, line, self.verifier,
                                                     self.policy)):
                        return
        except OSError:
            pass
        finally:
            with self._lock:
                self._active -= 1
            self._slots.release()

    @staticmethod
    def _send(conn: socket.socket, reply: dict[str, Any]) -> bool:
        try:
            conn.settimeout(WRITE_TIMEOUT_S)
            conn.sendall(encode(reply))
            return True
        except OSError:
            return False

    def close(self) -> None:
        self._closed.set()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def call(path: str, msg: dict[str, Any], cred: Credential | None, *, server: str = CONTROLLER,
         timeout: float = 10.0, check: bool = True) -> dict[str, Any]:
    """Send one request, signed with ``cred`` for ``server`` (``controller`` or
    ``agent:<host>``), to the socket at ``path`` and return its reply; connect, send and reply
    share the one deadline ``timeout``. ``cred=None`` sends it unsigned (every server refuses
    that: for tests of the refusal).

    With ``check`` (default) an ``ok: false`` reply raises MgmtError carrying the server's error.
    """
    deadline = time.monotonic() + timeout
    data = encode(sign(msg, cred, server) if cred is not None else msg)
    if len(data) > MAX_LINE:
        raise MgmtError(f"{msg.get('op')}: request of {len(data)} bytes exceeds {MAX_LINE}")

    def left() -> float:
        t = deadline - time.monotonic()
        if t <= 0:
            raise TimeoutError(f"no reply within {timeout:.1f} s")
        return t

    buf = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            while True:  # retry while the listen backlog is momentarily full (EAGAIN)
                s.settimeout(left())
                try:
                    s.connect(path)
                    break
                except BlockingIOError:
                    time.sleep(min(0.01, left()))
            s.settimeout(left())
            s.sendall(data)
            while not buf.endswith(b"\n"):
                s.settimeout(left())
                part = s.recv(65536)
                if not part:
                    break
                buf += part
                if len(buf) > MAX_LINE:
                    raise MgmtError(f"management socket {path}: reply exceeds {MAX_LINE} bytes")
    except FileNotFoundError:
        raise MgmtError(f"no management socket at {path}: is the controller running?") from None
    except (ConnectionRefusedError, TimeoutError, OSError) as exc:
        raise MgmtError(f"management socket {path}: {exc}") from None
    if not buf:
        raise MgmtError(f"management socket {path} closed without a reply to {msg.get('op')!r}")
    try:
        reply = json.loads(buf)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MgmtError(f"management socket {path}: reply is not JSON: {exc}") from None
    if not isinstance(reply, dict):
        raise MgmtError(f"management socket {path}: reply is not a JSON object")
    if check and not reply.get("ok", False):
        raise MgmtError(f"{msg.get('op')}: {reply.get('error', 'unknown error')}")
    return reply
