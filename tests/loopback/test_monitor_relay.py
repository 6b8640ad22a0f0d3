"""Abnormal migrations (issue 6, item 5): a relay that tampers with, drops or holds back chunks
is named, and the migration routes around it (tamper) or aborts cleanly with the source's VM
running (drop, delay past the stall timeout). Real agent processes on 127.0.0.x, no root."""

from __future__ import annotations

from controllers.migrations import suspect_relays
from experiments.loopback import LoopbackBed
from hosts.vm import ask_service

from .conftest import SOURCE_IP
from .test_migration import DEST, _assert_migrated, _assert_source_kept, _stealth

PACED = {"kind": "fixed", "size": 16384, "gap_s": 0.002}


def _suspects(plan, res) -> list[dict]:
    return suspect_relays(res.to_dict(), {e.pubkey: e.host for e in plan.intermediates})


def test_tampering_relay_is_named_and_routed_around(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-forge", chunk_policy=PACED, faults={"h3": {"forge_chunk": 4}})
    res = bed.migrate(plan)
    _assert_migrated(bed, res, before)  # the other two relays carried the rest
    assert res.failed_intermediates == ["h3"]
    sus = _suspects(plan, res)
    assert [s["host"] for s in sus] == ["h3"] and "forged" in sus[0]["why"]


def test_dropping_relay_is_named_and_the_migration_aborts_cleanly(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-drop", chunk_policy=PACED, stall_timeout_s=3.0,
                    faults={"h2": {"drop_chunk": 5}})
    res = bed.migrate(plan)
    _assert_source_kept(bed, res, before)  # aborted, the VM runs at the source, not at DEST
    sus = _suspects(plan, res)
    assert [s["host"] for s in sus] == ["h2"], (sus, res.reason)
    assert "never reached the leader" in sus[0]["why"]
    assert bed.status(DEST)["vm"] is None


def test_relay_holding_chunks_back_past_the_stall_timeout_is_named(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-delay", chunk_policy=PACED, stall_timeout_s=2.0,
                    faults={"h4": {"delay_chunk_s": 6}})
    res = bed.migrate(plan)
    _assert_source_kept(bed, res, before)
    assert [s["host"] for s in _suspects(plan, res)] == ["h4"], res.reason


def test_honest_migration_names_nobody(bed: LoopbackBed) -> None:
    before = ask_service(SOURCE_IP, 7000)["counter"]
    plan = _stealth(bed, "m-honest", chunk_policy=PACED)
    res = bed.migrate(plan)
    _assert_migrated(bed, res, before)
    assert _suspects(plan, res) == []
