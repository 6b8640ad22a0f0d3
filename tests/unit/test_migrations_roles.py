"""Role choice for a migration (pure part of Alg 2)."""

import random

import pytest

from controllers.migrations import Migrations

AGENTS = {f"h{i}": {"vm": "vm1" if i == 1 else None, "ip": f"10.0.0.{i}"} for i in range(1, 9)}


def test_stealth_roles_are_distinct_and_seeded():
    a = Migrations.choose_roles(AGENTS, "h1", "stealth", 3, random.Random(4))
    b = Migrations.choose_roles(AGENTS, "h1", "stealth", 3, random.Random(4))
    assert a == b
    hosts = [a["destination"], a["leader"], *a["intermediates"]]
    assert len(set(hosts)) == 5 and "h1" not in hosts
    seen = {Migrations.choose_roles(AGENTS, "h1", "stealth", 3, random.Random(s))["destination"]
            for s in range(40)}
    assert len(seen) > 3  # the destination moves


def test_direct_needs_only_a_destination():
    r = Migrations.choose_roles(AGENTS, "h1", "direct", 3, random.Random(1))
    assert r["leader"] is None and r["intermediates"] == [] and r["destination"] != "h1"


def test_destination_never_already_runs_a_vm():
    agents = {**AGENTS, "h2": {"vm": "vm2"}}
    for s in range(30):
        assert Migrations.choose_roles(agents, "h1", "direct", 0, random.Random(s))[
            "destination"] != "h2"


@pytest.mark.parametrize("kw,match", [
    ({"source": "h9"}, "no registered agent"),
    ({"source": "h2"}, "runs no VM"),
    ({"n": 7}, "need 7 intermediates"),
    ({"destination": "h1"}, "not a registered host without a VM"),
    ({"leader": "h1"}, "leader h1"),
    ({"intermediates": ["h2", "h2", "h3"]}, "distinct"),
])
def test_impossible_requests(kw, match):
    args = {"source": "h1", "n": 3, **kw}
    with pytest.raises(ValueError, match=match):
        Migrations.choose_roles(AGENTS, args.pop("source"), "stealth", args.pop("n"),
                                random.Random(0), **args)
