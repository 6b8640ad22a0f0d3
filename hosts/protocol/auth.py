"""Who may speak on the management plane: the run secret, per-identity keys, request MACs, and
the private run folder that holds them.

A run (``experiments.testbed.Testbed``, or the loopback bed) draws one 32-byte *run secret* and
keeps it in a private folder (``private_dir``: root-owned, 0700, never a symlink, unique per run)
beside the management sockets. Every party has an identity — ``runner``, ``controller``,
``agent:<host>``, ``monitor:<host>`` and the test-only ``test`` — and a key derived from the
secret (``identity_key``). A request carries ``auth = {id, t, nonce, mac}``: an HMAC-SHA256 over
the server's name, the caller's identity, a timestamp, a nonce and the canonical JSON of the
request (``sign`` / ``Verifier.verify``). Calls to the controller are keyed with the caller's own
key (the controller holds the secret, so it can derive every key). Calls to ``agent:<host>`` are
keyed with ``pair_key(caller_key, "agent:<host>")``: an agent is given only its own key and the
pair keys of the callers it accepts (``KeyRing``), so an agent's key file cannot speak as the
controller to any other agent. A MAC binds the request to one server, is valid ``MAX_SKEW_S``
and is accepted once (its nonce is remembered), so a recorded request cannot be replayed.

Used by ``hosts.protocol.mgmt`` (the transport checks it), the controller, the agents, the
monitors and the runner.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECRET_BYTES = 32
MAX_SKEW_S = 60.0  # a request's timestamp may be this far from the server's clock
RUNNER, CONTROLLER, TEST = "runner", "controller", "test"
# The test-only switch: "1" in the environment of the controller admits the `test` identity and
# `migrate` faults; in an agent's, prepared views may carry faults. Only the tests set it
# (Testbed(test_faults=True), LoopbackBed(test_faults=True)); the runner never does.
TEST_FAULTS_ENV = "STEALTH_MTD_TEST_FAULTS"


class AuthError(ValueError):
    """A request's MAC, identity or freshness does not check out; the message says which."""


def agent_id(host: str) -> str:
    return f"agent:{host}"


def monitor_id(host: str) -> str:
    return f"monitor:{host}"


def split_identity(identity: str) -> tuple[str, str | None]:
    """``"agent:h3"`` → ``("agent", "h3")``; ``"runner"`` → ``("runner", None)``."""
    kind, _, host = identity.partition(":")
    return kind, (host or None)


# -- keys -----------------------------------------------------------------------------------------
def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def identity_key(secret: bytes, identity: str) -> bytes:
    """The key of one identity, derived from the run secret."""
    return hmac.new(secret, b"stealth-mtd identity\0" + identity.encode(), hashlib.sha256).digest()


def pair_key(caller_key: bytes, server: str) -> bytes:
    """The key a caller uses toward one agent (``server`` is ``agent:<host>``)."""
    return hmac.new(caller_key, b"stealth-mtd to\0" + server.encode(), hashlib.sha256).digest()


def request_key(secret: bytes, caller: str, server: str) -> bytes:
    """The key of requests from ``caller`` to ``server``, for those who hold the secret."""
    k = identity_key(secret, caller)
    return k if server == CONTROLLER else pair_key(k, server)


# -- the private folder ---------------------------------------------------------------------------
def _check_private(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise AuthError(f"{path} is not a plain directory (a symlink or a file?); refusing it")
    if st.st_uid != os.geteuid():
        raise AuthError(f"{path} belongs to uid {st.st_uid}, not to us ({os.geteuid()})")
    if st.st_mode & 0o077:
        raise AuthError(f"{path} has mode {stat.S_IMODE(st.st_mode):o}; it must be 0700")


def private_dir(path: str | Path, *, exist_ok: bool = True) -> Path:
    """Create ``path`` as a 0700 directory of ours (its parent must exist), or check that the
    one there is: a real directory, not a symlink, owned by this user, mode 0700."""
    p = Path(path)
    try:
        os.mkdir(p, 0o700)
    except FileExistsError:
        if not exist_ok:
            raise AuthError(f"{p} exists already; a run folder is never reused") from None
    _check_private(p)
    return p


def unique_private_dir(root: str | Path, prefix: str) -> Path:
    """A fresh 0700 folder under the private folder ``root`` (created if need be)."""
    for parent in reversed(Path(root).parents):  # every ancestor exists and is no symlink
        if str(parent) != "/" and os.path.islink(parent):
            raise AuthError(f"{parent} is a symlink; refusing to put a run folder under it")
    Path(root).parent.mkdir(parents=True, exist_ok=True)
    private_dir(root)
    for _ in range(100):
        try:
            return private_dir(Path(root) / f"{prefix}{secrets.token_hex(6)}", exist_ok=False)
        except AuthError:
            continue
    raise AuthError(f"could not make a unique folder under {root}")


def write_private(path: str | Path, data: bytes) -> None:
    """Write a new 0600 file (never through a symlink, never over an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_private(path: str | Path) -> bytes:
    """Read a 0600 file of ours (refused when others could read it or it is a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise AuthError(f"{path}: key files must be ours and mode 0600")
        return f.read()


# -- client side ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credential:
    """Who a caller is and the key it uses toward each server."""

    identity: str
    key_for: Callable[[str], bytes] = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes, identity: str) -> Credential:
        """For the runner and the controller, which hold the run secret."""
        return cls(identity, lambda server: request_key(secret, identity, server))

    @classmethod
    def from_key(cls, identity: str, key: bytes) -> Credential:
        """For an agent or a monitor, which hold only their own key."""
        return cls(identity, lambda server: key if server == CONTROLLER else pair_key(key, server))


def canonical(msg: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: the request without ``auth``, compact JSON, sorted keys."""
    body = {k: v for k, v in msg.items() if k != "auth"}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _mac(key: bytes, server: str, identity: str, t: float, nonce: str, body: bytes) -> str:
    head = f"stealth-mtd mgmt v1\n{server}\n{identity}\n{t!r}\n{nonce}\n".encode()
    return hmac.new(key, head + body, hashlib.sha256).hexdigest()


def sign(msg: dict[str, Any], cred: Credential, server: str) -> dict[str, Any]:
    """``msg`` with its ``auth`` field for ``server``."""
    t, nonce = time.time(), secrets.token_hex(16)
    mac = _mac(cred.key_for(server), server, cred.identity, t, nonce, canonical(msg))
    return {**msg, "auth": {"id": cred.identity, "t": t, "nonce": nonce, "mac": mac}}


# -- server side ----------------------------------------------------------------------------------
class Verifier:
    """Checks the ``auth`` of requests to one server; ``key_of(identity)`` is the key that
    identity must have used (None: unknown identity). Thread-safe."""

    def __init__(self, server: str, key_of: Callable[[str], bytes | None],
                 max_nonces: int = 100_000) -> None:
        self.server = server
        self.key_of = key_of
        self.max_nonces = max_nonces
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_secret(cls, server: str, secret: bytes) -> Verifier:
        return cls(server, lambda ident: request_key(secret, ident, server))

    def verify(self, msg: dict[str, Any]) -> str:
        """The caller's identity; ``AuthError`` if the request is not authentic and fresh."""
        a = msg.get("auth")
        if not isinstance(a, dict):
            raise AuthError("unauthenticated request (no 'auth')")
        ident, t, nonce, mac = a.get("id"), a.get("t"), a.get("nonce"), a.get("mac")
        if not (isinstance(ident, str) and isinstance(nonce, str) and isinstance(mac, str)
                and isinstance(t, (int, float)) and not isinstance(t, bool)):
            raise AuthError("malformed 'auth'")
        if len(nonce) > 64 or len(ident) > 128:
            raise AuthError("malformed 'auth'")
        key = self.key_of(ident)
        if key is None:
            raise AuthError(f"unknown identity {ident!r}")
        want = _mac(key, self.server, ident, float(t), nonce, canonical(msg))
        if not hmac.compare_digest(want, mac):
            raise AuthError(f"bad MAC for identity {ident!r}")
        now = time.time()
        if abs(now - float(t)) > MAX_SKEW_S:
            raise AuthError(f"stale request ({now - float(t):.0f} s old)")
        with self._lock:
            if len(self._seen) >= self.max_nonces:
                self._seen = {n: exp for n, exp in self._seen.items() if exp > now}
                if len(self._seen) >= self.max_nonces:
                    raise AuthError("too many requests in the replay window")
            if nonce in self._seen:
                raise AuthError("replayed request (nonce seen before)")
            self._seen[nonce] = now + 2 * MAX_SKEW_S
        return ident


# -- an agent's or a monitor's key file -----------------------------------------------------------
@dataclass(frozen=True)
class KeyRing:
    """One process's keys: its own identity and key, and (for an agent) the pair keys of the
    callers it accepts. Written by the runner as a 0600 JSON file, read with ``load``."""

    identity: str
    key: bytes = field(repr=False)
    accept: dict[str, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def for_agent(cls, secret: bytes, host: str,
                  callers: tuple[str, ...] = (CONTROLLER, RUNNER)) -> KeyRing:
        me = agent_id(host)
        return cls(me, identity_key(secret, me),
                   {c: request_key(secret, c, me) for c in callers})

    @classmethod
    def for_monitor(cls, secret: bytes, host: str) -> KeyRing:
        me = monitor_id(host)
        return cls(me, identity_key(secret, me))

    def credential(self) -> Credential:
        return Credential.from_key(self.identity, self.key)

    def verifier(self) -> Verifier:
        return Verifier(self.identity, self.accept.get)

    def save(self, path: str | Path) -> None:
        write_private(path, json.dumps({"identity": self.identity, "key": self.key.hex(),
                                        "accept": {k: v.hex() for k, v in
                                                   self.accept.items()}}).encode())

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        d = json.loads(read_private(path))
        return cls(str(d["identity"]), bytes.fromhex(d["key"]),
                   {str(k): bytes.fromhex(v) for k, v in (d.get("accept") or {}).items()})
