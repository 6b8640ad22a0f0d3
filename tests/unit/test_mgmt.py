"""The management plane over a real Unix socket: replies, errors, survival of bad input, and the
transport's checks — MAC, peer uid, size cap, deadline, connection cap, idle timeout."""

import json
import os
import socket
import threading
import time

import pytest

from hosts.protocol import auth
from hosts.protocol import mgmt as M
from hosts.protocol.mgmt import MgmtError, MgmtServer, call, decode, dispatch

SECRET = b"\x07" * 32
ME = auth.Credential.from_secret(SECRET, auth.RUNNER)


def allow_all(server, op, caller, msg):
    """A policy for the transport tests: every authenticated caller may call every op."""


def _handler(seen):
    def handler(msg, caller):
        seen.append((msg, caller))
        if msg["op"] == "boom":
            raise RuntimeError("handler failed")
        if msg["op"] == "echo":
            return {"echo": msg.get("x")}
        if msg["op"] == "slow":
            time.sleep(float(msg["s"]))
            return {}
        return {"ok": False, "error": f"unknown op {msg['op']}"}
    return handler


def _server(tmp_path, **kw):
    seen = []
    srv = MgmtServer(str(tmp_path / "m.sock"), _handler(seen),
                     auth.Verifier.from_secret(auth.CONTROLLER, SECRET),
                     policy=kw.pop("policy", allow_all), **kw)
    srv.start()
    return srv, seen


@pytest.fixture
def server(tmp_path):
    srv, seen = _server(tmp_path)
    yield srv, seen
    srv.close()


def test_round_trip_and_errors(server):
    srv, seen = server
    assert call(srv.path, {"op": "echo", "x": [1, 2]}, ME) == {"ok": True, "echo": [1, 2]}
    assert seen[-1] == ({"op": "echo", "x": [1, 2]}, "runner")  # auth stripped, caller given
    with pytest.raises(MgmtError, match="unknown op nope"):
        call(srv.path, {"op": "nope"}, ME)
    with pytest.raises(MgmtError, match="RuntimeError: handler failed"):
        call(srv.path, {"op": "boom"}, ME)
    assert call(srv.path, {"op": "echo", "x": 3}, ME)["echo"] == 3  # still alive


def test_garbage_lines_get_error_replies_on_the_same_connection(server):
    srv, _ = server
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(srv.path)
        f = s.makefile("rwb")
        for bad in (b"{not json\n", b"[1,2]\n", b'{"no_op": 1}\n', b"\xff\xfe\n",
                    b'{"op":"echo","x":"unsigned"}\n'):
            f.write(bad)
            f.flush()
            assert b'"ok":false' in f.readline()
        f.write(M.encode(auth.sign({"op": "echo", "x": "still here"}, ME, auth.CONTROLLER)))
        f.flush()
        assert b"still here" in f.readline()


def test_concurrent_clients(server):
    srv, _ = server
    out = []

    def worker(i):
        out.append(call(srv.path, {"op": "echo", "x": i}, ME)["echo"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(20))


def test_missing_socket_says_what_to_do(tmp_path):
    with pytest.raises(MgmtError, match="is the controller running"):
        call(str(tmp_path / "absent.sock"), {"op": "status"}, ME)


def test_decode_and_dispatch():
    v = auth.Verifier.from_secret(auth.CONTROLLER, SECRET)
    assert decode(b'{"op": "x"}') == {"op": "x"}
    with pytest.raises(ValueError, match="'op'"):
        decode(b'{"op": 3}')
    signed = M.encode(auth.sign({"op": "x"}, ME, auth.CONTROLLER))
    assert dispatch(lambda m, c: {"a": 1}, signed, v, allow_all) == {"a": 1, "ok": True}
    signed = M.encode(auth.sign({"op": "x"}, ME, auth.CONTROLLER))
    assert dispatch(lambda m, c: None, signed, v, allow_all)["ok"] is False


# -- authentication -------------------------------------------------------------------------------
def test_every_unauthentic_request_is_refused_and_logged(server, caplog):
    srv, seen = server
    other = auth.Credential.from_secret(b"\x08" * 32, auth.RUNNER)  # another run's secret
    for cred, server_name in ((None, auth.CONTROLLER), (other, auth.CONTROLLER),
                              (ME, "agent:h1")):  # a MAC meant for another server
        r = call(srv.path, {"op": "echo", "x": 1}, cred, server=server_name, check=False)
        assert r["ok"] is False and r["error"].startswith("refused:"), r
    line = M.encode(auth.sign({"op": "echo", "x": 1}, ME, auth.CONTROLLER))
    tampered = line.replace(b'"x":1', b'"x":2')
    for raw in (line, line, tampered):  # the second is a replay
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(srv.path)
            s.sendall(raw)
            seen_reply = json.loads(s.makefile("rb").readline())
        print(seen_reply)
    assert seen_reply["ok"] is False and "bad MAC" in seen_reply["error"]
    assert [m for m, _ in seen] == [{"op": "echo", "x": 1}]  # only the first, genuine one ran
    refusals = [r for r in caplog.records if "event=mgmt_refused" in r.getMessage()]
    assert len(refusals) == 5
    assert any("replayed" in r.getMessage() for r in refusals)


def test_stale_and_malformed_auth(monkeypatch):
    v = auth.Verifier.from_secret(auth.CONTROLLER, SECRET)
    old = auth.sign({"op": "echo"}, ME, auth.CONTROLLER)
    monkeypatch.setattr(auth.time, "time", lambda: old["auth"]["t"] + auth.MAX_SKEW_S + 1)
    with pytest.raises(auth.AuthError, match="stale"):
        v.verify(old)
    for bad in ({"op": "x"}, {"op": "x", "auth": "nope"}, {"op": "x", "auth": {"id": 1}},
                {"op": "x", "auth": {"id": "runner", "t": True, "nonce": "n", "mac": "m"}}):
        with pytest.raises(auth.AuthError):
            v.verify(bad)


def test_unknown_identity_is_refused(tmp_path):
    known = {"runner": auth.identity_key(SECRET, "runner")}
    srv = MgmtServer(str(tmp_path / "m.sock"), _handler([]),
                     auth.Verifier(auth.CONTROLLER, known.get), policy=allow_all)
    srv.start()
    try:
        x1 = auth.Credential.from_secret(SECRET, "agent:x1")
        r = call(srv.path, {"op": "echo"}, x1, check=False)
        assert r["ok"] is False and "unknown identity 'agent:x1'" in r["error"]
        assert call(srv.path, {"op": "echo", "x": 5}, ME)["echo"] == 5
    finally:
        srv.close()


def test_agent_keyring_speaks_only_as_itself(tmp_path):
    ring = auth.KeyRing.for_agent(SECRET, "h3")
    ring.save(tmp_path / "k.json")
    assert oct(os.stat(tmp_path / "k.json").st_mode & 0o777) == "0o600"
    loaded = auth.KeyRing.load(tmp_path / "k.json")
    assert loaded == ring and loaded.identity == "agent:h3"
    # the controller (holding the secret) verifies the agent's own requests ...
    ctl = auth.Verifier.from_secret(auth.CONTROLLER, SECRET)
    assert ctl.verify(auth.sign({"op": "register"}, ring.credential(), auth.CONTROLLER)) \
        == "agent:h3"
    # ... the agent verifies the controller's, and its keys cannot forge the controller's to
    # another agent
    h3 = ring.verifier()
    ctl_cred = auth.Credential.from_secret(SECRET, auth.CONTROLLER)
    assert h3.verify(auth.sign({"op": "start"}, ctl_cred, "agent:h3")) == "controller"
    h4 = auth.KeyRing.for_agent(SECRET, "h4").verifier()
    forged = auth.Credential.from_key(auth.CONTROLLER, ring.accept["controller"])
    with pytest.raises(auth.AuthError, match="bad MAC"):
        h4.verify(auth.sign({"op": "start"}, forged, "agent:h4"))
    with pytest.raises(auth.AuthError, match="unknown identity"):
        h3.verify(auth.sign({"op": "start"}, auth.Credential.from_secret(SECRET, "monitor:h3"),
                            "agent:h3"))


# -- peer credentials, size, deadline, connections ------------------------------------------------
def test_a_peer_of_another_uid_is_refused_before_anything_is_read(tmp_path, caplog):
    me = os.geteuid()
    srv, seen = _server(tmp_path, allowed_uids={me + 12345})  # not us: we are "another uid"
    try:
        r = call(srv.path, {"op": "echo", "x": 1}, ME, check=False)
        assert r["ok"] is False and f"peer uid {me}" in r["error"], r
        assert seen == []
        assert any(f"peer_uid={me}" in rec.getMessage() for rec in caplog.records)
    finally:
        srv.close()


def test_oversized_requests_are_refused(server):
    srv, seen = server
    with pytest.raises(MgmtError, match="exceeds"):  # the client refuses to send it
        call(srv.path, {"op": "echo", "x": "a" * M.MAX_LINE}, ME)
    with socket.socket(socket.AF_UNIX) as s:  # a raw client that does send it
        s.connect(srv.path)
        s.settimeout(10)
        try:
            s.sendall(b"a" * (M.MAX_LINE + 70000))
        except OSError:
            pass
        reply = s.makefile("rb").readline()
    assert b"exceeds" in reply
    assert seen == [] and call(srv.path, {"op": "echo", "x": 1}, ME)["echo"] == 1


def test_a_call_has_one_deadline(server):
    srv, _ = server
    t0 = time.monotonic()
    with pytest.raises(MgmtError, match="timed out|no reply within"):
        call(srv.path, {"op": "slow", "s": 3}, ME, timeout=0.5)
    assert time.monotonic() - t0 < 1.5
    with socket.socket(socket.AF_UNIX) as quiet:  # a server that accepts and never answers
        path = str(srv.path) + ".quiet"
        quiet.bind(path)
        quiet.listen(1)
        t0 = time.monotonic()
        with pytest.raises(MgmtError):
            call(path, {"op": "echo"}, ME, timeout=0.5)
        assert time.monotonic() - t0 < 1.5


def _threads() -> int:
    return threading.active_count()


def test_200_idle_clients_hold_a_bounded_number_of_threads(tmp_path):
    srv, _ = _server(tmp_path, max_conns=16, idle_timeout_s=1.0, read_timeout_s=1.0)
    before = _threads()
    idle = []
    try:
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(srv.path)
            except (BlockingIOError, InterruptedError):
                pass  # the backlog is full: the kernel holds it, no thread does
            idle.append(s)
        for s in idle[::3]:
            try:
                s.send(b'{"op":')  # a request begun and never finished
            except OSError:
                pass
        time.sleep(0.5)
        during = _threads()
        print(f"threads before={before} with 200 idle clients={during} "
              f"served at once={srv.active} (cap {srv.max_conns})")
        assert srv.active <= 16 and during - before <= 16 + 1
        # the idle ones time out and a genuine caller gets through
        t0 = time.monotonic()
        assert call(srv.path, {"op": "echo", "x": "through"}, ME, timeout=30)["echo"] == \
            "through"
        print(f"a genuine call answered after {time.monotonic() - t0:.1f} s")
    finally:
        for s in idle:
            s.close()
        srv.close()
    time.sleep(2.5)
    print(f"threads after the clients left={_threads()}")
    assert _threads() <= before + 1


def test_a_slow_sender_is_cut_off(tmp_path):
    srv, seen = _server(tmp_path, idle_timeout_s=5.0, read_timeout_s=0.5)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(srv.path)
            s.settimeout(5)
            t0 = time.monotonic()
            for ch in b'{"op":"echo"':  # one byte at a time, 0.1 s apart
                try:
                    s.send(bytes([ch]))
                except OSError:
                    break
                time.sleep(0.1)
            assert s.recv(10) == b""  # closed by the server, no reply
            assert time.monotonic() - t0 < 2.5
        assert seen == []
    finally:
        srv.close()


# -- the private folder ---------------------------------------------------------------------------
def test_private_dirs_are_ours_0700_and_never_a_symlink(tmp_path):
    d = auth.private_dir(tmp_path / "p")
    assert oct(os.stat(d).st_mode & 0o777) == "0o700"
    os.symlink(d, tmp_path / "link")
    with pytest.raises(auth.AuthError, match="symlink"):
        auth.private_dir(tmp_path / "link")
    (tmp_path / "open").mkdir(mode=0o755)
    os.chmod(tmp_path / "open", 0o755)
    with pytest.raises(auth.AuthError, match="0700"):
        auth.private_dir(tmp_path / "open")
    a = auth.unique_private_dir(tmp_path / "root", "run-")
    b = auth.unique_private_dir(tmp_path / "root", "run-")
    assert a != b and a.parent == b.parent == tmp_path / "root"
    auth.write_private(a / "secret", b"s")
    with pytest.raises(FileExistsError):
        auth.write_private(a / "secret", b"again")
    os.symlink(a / "secret", a / "alias")
    with pytest.raises(OSError):
        auth.read_private(a / "alias")
    assert auth.read_private(a / "secret") == b"s"
