"""The management plane over a real Unix socket: replies, errors, survival of bad input."""

import socket
import threading

import pytest

from hosts.protocol.mgmt import MgmtError, MgmtServer, call, decode, dispatch


@pytest.fixture
def server(tmp_path):
    seen = []

    def handler(msg):
        seen.append(msg)
        if msg["op"] == "boom":
            raise RuntimeError("handler failed")
        if msg["op"] == "echo":
            return {"echo": msg.get("x")}
        return {"ok": False, "error": f"unknown op {msg['op']}"}

    srv = MgmtServer(str(tmp_path / "m.sock"), handler)
    srv.start()
    yield srv, seen
    srv.close()


def test_round_trip_and_errors(server):
    srv, seen = server
    assert call(srv.path, {"op": "echo", "x": [1, 2]}) == {"ok": True, "echo": [1, 2]}
    with pytest.raises(MgmtError, match="unknown op nope"):
        call(srv.path, {"op": "nope"})
    with pytest.raises(MgmtError, match="RuntimeError: handler failed"):
        call(srv.path, {"op": "boom"})
    assert call(srv.path, {"op": "echo", "x": 3})["echo"] == 3  # still alive


def test_garbage_lines_get_error_replies_on_the_same_connection(server):
    srv, _ = server
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(srv.path)
        f = s.makefile("rwb")
        for bad in (b"{not json\n", b"[1,2]\n", b'{"no_op": 1}\n', b"\xff\xfe\n"):
            f.write(bad)
            f.flush()
            assert b'"ok":false' in f.readline()
        f.write(b'{"op":"echo","x":"still here"}\n')
        f.flush()
        assert b"still here" in f.readline()


def test_concurrent_clients(server):
    srv, _ = server
    out = []

    def worker(i):
        out.append(call(srv.path, {"op": "echo", "x": i})["echo"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(20))


def test_missing_socket_says_what_to_do(tmp_path):
    with pytest.raises(MgmtError, match="is the controller running"):
        call(str(tmp_path / "absent.sock"), {"op": "status"})


def test_decode_and_dispatch():
    assert decode(b'{"op": "x"}') == {"op": "x"}
    with pytest.raises(ValueError, match="'op'"):
        decode(b'{"op": 3}')
    assert dispatch(lambda m: {"a": 1}, b'{"op":"x"}') == {"a": 1, "ok": True}
    assert dispatch(lambda m: None, b'{"op":"x"}')["ok"] is False
