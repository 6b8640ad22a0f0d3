"""The management plane: newline-delimited JSON over a Unix socket, out of band.

The tenant network is what attackers watch, so the controller, the runner and the host agents
talk over Unix sockets on the shared file system instead (Mininet hosts share it). One request is
one JSON object on one line; the reply is one JSON object on one line: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. A connection may carry several requests.

Used by the controller (``MgmtServer``), the runner and the role agents (``call``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # a request larger than 1 MiB is refused

Handler = Callable[[dict[str, Any]], dict[str, Any]]


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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ValueError("a request must be a JSON object")
    if not isinstance(msg.get("op"), str):
        raise ValueError("a request needs a string field 'op'")
    return msg


def dispatch(handler: Handler, line: bytes) -> dict[str, Any]:
    """Run ``handler`` on one raw request line; never raises: errors become error replies."""
    try:
        msg = decode(line)
    except ValueError as exc:
        return {"ok": False, "error": f"malformed request: {exc}"}
    try:
        reply = handler(msg)
    except Exception as exc:  # the server must survive any request
        log.exception("management request %r failed", msg.get("op"))
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not isinstance(reply, dict):
        return {"ok": False, "error": "internal: handler returned no reply"}
    reply.setdefault("ok", True)
    return reply


class _StreamHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if not line.strip():
                continue
            reply = dispatch(self.server.handler, line)  # type: ignore[attr-defined]
            try:
                self.wfile.write(encode(reply))
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return


class MgmtServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threaded Unix-socket server that answers each request line with ``handler(msg)``."""

    daemon_threads = True
    request_queue_size = 128  # agents and runner may connect in bursts

    def __init__(self, path: str, handler: Handler) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        self.handler = handler
        self.path = path
        super().__init__(path, _StreamHandler)
        os.chmod(path, 0o660)

    def start(self) -> threading.Thread:
        """Serve in a daemon thread and return it."""
        t = threading.Thread(target=self.serve_forever, name=f"mgmt:{self.path}", daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _connect(s: socket.socket, path: str, timeout: float) -> None:
    """Connect, retrying while the listen backlog is momentarily full (EAGAIN)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def call(path: str, msg: dict[str, Any], timeout: float = 10.0,
         check: bool = True) -> dict[str, Any]:
    """Send one request to the server at ``path`` and return its reply.

    With ``check`` (default) an ``ok: false`` reply raises MgmtError carrying the server's error.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            _connect(s, path, timeout)
            s.sendall(encode(msg))
            buf = b""
            while not buf.endswith(b"\n"):
                part = s.recv(65536)
                if not part:
                    break
                buf += part
    except FileNotFoundError:
        raise MgmtError(f"no management socket at {path}: is the controller running?") from None
    except (ConnectionRefusedError, TimeoutError, OSError) as exc:
        raise MgmtError(f"management socket {path}: {exc}") from None
    if not buf:
        raise MgmtError(f"management socket {path} closed without a reply to {msg.get('op')!r}")
    reply = json.loads(buf)
    if check and not reply.get("ok", False):
        raise MgmtError(f"{msg.get('op')}: {reply.get('error', 'unknown error')}")
    return reply
