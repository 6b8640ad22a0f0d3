"""The migration plan: JSON round trip, checks, and what each role is (not) told."""

from __future__ import annotations

import json

import pytest

from hosts.protocol.plan import Endpoint, MigrationPlan


def _plan(mode: str = "stealth", **kw) -> MigrationPlan:
    ep = lambda h, i: Endpoint(h, f"10.0.0.{i}", f"/run/{h}.sock", 9000 + i, f"{i:02x}" * 32)  # noqa: E731
    return MigrationPlan(
        migration="m7",
        mode=mode,
        source=ep("h1", 1),
        destination=ep("h6", 6),
        intermediates=[ep("h2", 2), ep("h3", 3), ep("h4", 4)],
        leader=ep("h5", 5),
        k=2,
        dest_address="10.9.9.9",
        **kw,
    )


def test_round_trip() -> None:
    p = _plan()
    again = MigrationPlan.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p and again.n == 3 and again.dest_port == 9006


def test_checks() -> None:
    with pytest.raises(ValueError):
        _plan(mode="teleport")
    with pytest.raises(ValueError):
        _plan(n=4)
    p = _plan()
    with pytest.raises(ValueError):
        MigrationPlan(
            migration="x",
            mode="stealth",
            source=p.source,
            destination=p.destination,
            intermediates=p.intermediates,
            leader=p.leader,
            k=4,
        )


def test_intermediates_and_leader_never_see_the_destination() -> None:
    p = _plan()
    for role, ep in p.roles():
        text = json.dumps(p.view_for(role, ep))
        if role in ("intermediate", "leader"):
            assert "10.9.9.9" not in text and "10.0.0.6" not in text and "h6" not in text
    src = p.view_for("source", p.source)
    assert src["dest_address"] == "10.9.9.9"
    assert [r for r, _ in p.roles()] == [
        "destination",
        "leader",
        "intermediate",
        "intermediate",
        "intermediate",
        "source",
    ]
