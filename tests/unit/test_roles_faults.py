"""Fault injection: inert unless a plan asks for it, and out of the protocol code."""

from __future__ import annotations

import json
import pathlib

import pytest

from hosts.roles import faults
from hosts.roles.faults import NO_FAULTS, InjectedFaults, faults_for

ROLES_DIR = pathlib.Path(faults.__file__).parent


class _Exited(Exception):
    pass


@pytest.fixture()
def exits(monkeypatch) -> list[int]:
    """os._exit recorded instead of done."""
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise _Exited(code)

    monkeypatch.setattr(faults.os, "_exit", fake_exit)
    return codes


def test_no_fault_configured_is_inert(exits, monkeypatch, tmp_path) -> None:
    logged: list[tuple] = []
    monkeypatch.setattr(faults.time, "sleep", lambda s: logged.append(("sleep", s)))
    f = faults_for({}, lambda *a, **kw: logged.append((a, kw)))
    assert f is NO_FAULTS
    body = b"chunk body"
    for nth in range(1, 50):
        assert f.on_chunk(body, nth, nth - 1) == (body, 1)
        f.after_chunk(nth)
    assert f.on_share() is True
    f.after_done()
    f.on_key(b"k" * 32, [b"s1", b"s2"])
    assert exits == [] and logged == [] and list(tmp_path.iterdir()) == []


def test_die_after_chunks_exits_at_the_nth(exits) -> None:
    events: list[tuple] = []
    f = faults_for({"die_after_chunks": 3}, lambda ev, **kw: events.append((ev, kw)))
    f.after_chunk(1)
    f.after_chunk(2)
    f.after_chunk(3, copies=0)  # a dropped chunk was not passed on: no exit yet
    assert exits == []
    with pytest.raises(_Exited):
        f.after_chunk(3)
    assert exits == [17]
    assert events == [("fault_injected_exit", {"fault": "die_after_chunks", "at": 3})]


def test_die_on_share_and_after_done(exits) -> None:
    with pytest.raises(_Exited):
        faults_for({"die_on_share": 1}, lambda *a, **kw: None).on_share()
    with pytest.raises(_Exited):
        faults_for({"die_after_done": 1}, lambda *a, **kw: None).after_done()
    assert exits == [17, 17]


def test_misbehaving_relay(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    events: list[str] = []
    f = InjectedFaults({"drop_chunk": 2, "forge_chunk": 3, "replay_chunk": 4, "delay_chunk_s": 0.5},
                       lambda ev, **kw: events.append(ev))
    body = b"\x00\x01\x02"
    assert f.on_chunk(body, 1, 0) == (body, 1)
    assert f.on_chunk(body, 2, 1) == (body, 0)
    assert f.on_chunk(body, 3, 2) == (b"\x00\x01\x03", 1)
    assert f.on_chunk(body, 4, 3) == (body, 2)
    assert slept == [0.5] * 4
    assert events == ["fault_dropped_chunk", "fault_forged_chunk", "fault_replayed_chunk"]
    assert faults_for({"drop_share": True}, lambda ev, **kw: events.append(ev)).on_share() is False
    assert events[-1] == "fault_dropped_share"


def test_record_key(tmp_path) -> None:
    path = tmp_path / "key.json"
    faults_for({"record_key": str(path)}, lambda *a, **kw: None).on_key(b"\x01" * 32, [b"\x02"])
    assert json.loads(path.read_text()) == {"key": "01" * 32, "shares": ["02"]}


@pytest.mark.parametrize("name", ["base", "source", "intermediate", "leader", "destination"])
def test_the_protocol_code_holds_no_fault_injection(name: str) -> None:
    text = (ROLES_DIR / f"{name}.py").read_text()
    for needle in ("os._exit", "die_after", "die_on_share", "drop_share", "drop_chunk",
                   "forge_chunk", "replay_chunk", "delay_chunk", "record_key", "self.fault["):
        assert needle not in text, f"{needle} in hosts/roles/{name}.py"
