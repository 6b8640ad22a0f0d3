"""The migration plan and the per-role views: JSON round trips, checks that name the bad field,
and what each role is (not) told."""

from __future__ import annotations

import json

import pytest

from hosts.protocol.plan import (
    DEFAULTS,
    VIEWS,
    DestinationView,
    Endpoint,
    IntermediateView,
    LeaderView,
    MigrationPlan,
    PlanError,
    SourceView,
    view_from_dict,
)


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
        text = json.dumps(p.view_for(role, ep).to_dict())
        if role in ("intermediate", "leader"):
            assert "10.9.9.9" not in text and "10.0.0.6" not in text and "h6" not in text
    src = p.view_for("source", p.source)
    assert isinstance(src, SourceView) and src.dest_address == "10.9.9.9"
    assert [r for r, _ in p.roles()] == [
        "destination",
        "leader",
        "intermediate",
        "intermediate",
        "intermediate",
        "source",
    ]


def _wire(view) -> dict:
    """A view as the agent receives it: through JSON."""
    return json.loads(json.dumps(view.to_dict()))


@pytest.mark.parametrize("mode", ["stealth", "direct"])
def test_every_view_round_trips(mode: str) -> None:
    p = _plan(mode, faults={"h1": {"record_key": "/tmp/k"}}, seed=9, window=8,
              vm_ip="10.0.200.1", vm_mac="02:00:0a:00:c8:01")
    kinds = {"source": SourceView, "intermediate": IntermediateView, "leader": LeaderView,
             "destination": DestinationView}
    seen = set()
    for role, ep in p.roles():
        view = p.view_for(role, ep)
        assert type(view) is kinds[role] and view.role == role and view.me == ep
        d = _wire(view)
        assert d["role"] == role
        assert type(view).from_dict(d) == view
        assert view_from_dict(d) == view
        seen.add(role)
    assert seen == ({"source", "destination"} if mode == "direct" else set(kinds))
    src = p.view_for("source", p.source)
    assert src.fault == {"record_key": "/tmp/k"} and src.seed == 9 and src.window == 8
    assert src.intermediates == (p.intermediates if mode == "stealth" else [])
    dst = p.view_for("destination", p.destination)
    assert dst.fault == {} and (dst.vm_ip, dst.vm_mac) == ("10.0.200.1", "02:00:0a:00:c8:01")
    assert MigrationPlan.from_dict(p.to_dict()).vm_ip == "10.0.200.1"


def test_a_view_does_not_share_the_plans_endpoints() -> None:
    p = _plan()
    view = p.view_for("source", p.source)
    p.source.port = 1  # the orchestration fills in ports as the roles answer
    p.intermediates[0].port = 1
    assert view.me.port == 9001 and view.intermediates[0].port == 9002


def test_optional_fields_take_the_defaults() -> None:
    p = _plan()
    d = _wire(p.view_for("leader", p.leader))
    for name in ("fault", "window", "stall_timeout_s"):
        del d[name]
    v = view_from_dict(d)
    assert v.fault == {} and v.window == DEFAULTS.window
    assert v.stall_timeout_s == DEFAULTS.stall_timeout_s


@pytest.mark.parametrize("role", list(VIEWS))
def test_a_missing_field_is_named(role: str) -> None:
    p = _plan()
    ep = {"source": p.source, "intermediate": p.intermediates[0], "leader": p.leader,
          "destination": p.destination}[role]
    full = _wire(p.view_for(role, ep))
    optional = {"fault", "window", "stall_timeout_s", "chunk_policy", "precopy", "seed",
                "transport", "decided_at"}
    for name in sorted(set(full) - optional - {"role"}):
        d = dict(full)
        del d[name]
        with pytest.raises(PlanError, match=f"^{role} view: field '{name}' is missing$"):
            view_from_dict(d)


@pytest.mark.parametrize("role,name,value,kind", [
    ("source", "k", "two", "an int"),
    ("source", "dest_port", 9.5, "an int"),
    ("source", "dest_address", 10, "a string"),
    ("source", "chunk_policy", "fixed", "an object"),
    ("source", "intermediates", {"h2": 1}, "a list"),
    ("leader", "n", True, "an int"),
    ("leader", "intermediate_pubkeys", ["ab", 3], "a list of strings"),
    ("intermediate", "leader", "10.0.0.5", "an object"),
    ("destination", "stall_timeout_s", "15", "a number"),
    ("destination", "window", None, "an int"),
    ("destination", "max_image_bytes", "4 MiB", "an int"),
    ("destination", "max_image_bytes", 2.5, "an int"),
])
def test_a_mistyped_field_is_named(role: str, name: str, value, kind: str) -> None:
    p = _plan()
    ep = {"source": p.source, "intermediate": p.intermediates[0], "leader": p.leader,
          "destination": p.destination}[role]
    d = _wire(p.view_for(role, ep))
    d[name] = value
    with pytest.raises(PlanError) as err:
        view_from_dict(d)
    assert str(err.value).startswith(f"{role} view: field '{name}' must be {kind}, got ")
    assert isinstance(err.value, ValueError)


def test_the_example_of_the_issue() -> None:
    p = _plan()
    d = _wire(p.view_for("source", p.source))
    d["k"] = "two"
    with pytest.raises(PlanError, match=r"^source view: field 'k' must be an int, got 'two'$"):
        view_from_dict(d)


def test_nested_fields_are_named_by_their_path() -> None:
    p = _plan()
    d = _wire(p.view_for("source", p.source))
    d["me"]["port"] = "80"
    with pytest.raises(PlanError, match=r"field 'me\.port' must be an int, got '80'"):
        view_from_dict(d)
    d = _wire(p.view_for("source", p.source))
    del d["intermediates"][1]["pubkey"]
    d["intermediates"][1]["ip"] = 7
    with pytest.raises(PlanError, match=r"field 'intermediates\[1\]\.ip' must be a string"):
        view_from_dict(d)
    d = _wire(p.view_for("intermediate", p.intermediates[0]))
    del d["leader"]["pubkey"]
    with pytest.raises(PlanError, match=r"^intermediate view: field 'leader\.pubkey' is missing$"):
        view_from_dict(d)


def test_a_direct_source_needs_no_intermediates_a_stealth_one_does() -> None:
    p = _plan("direct")
    d = _wire(p.view_for("source", p.source))
    del d["intermediates"]
    assert view_from_dict(d).intermediates == []
    p = _plan()
    d = _wire(p.view_for("source", p.source))
    del d["intermediates"]
    with pytest.raises(PlanError, match="'intermediates' is missing"):
        view_from_dict(d)


@pytest.mark.parametrize("bad,match", [
    (None, r"^view must be an object, got None$"),
    ({}, r"^view: field 'role' is missing$"),
    ({"role": "teleporter"}, r"^view: field 'role' must be one of source, intermediate, leader, "
                             r"destination, got 'teleporter'$"),
    ({"role": "source", "migration": "x", "me": {}}, r"^source view: field 'mode' is missing$"),
    ({"role": "leader", "mode": "warp"}, r"^leader view: field 'mode' must be one of stealth, "
                                         r"direct, got 'warp'$"),
])
def test_view_from_dict_refuses_what_is_no_view(bad, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        view_from_dict(bad)


def test_a_view_of_another_role_is_refused() -> None:
    p = _plan()
    d = _wire(p.view_for("leader", p.leader))
    with pytest.raises(PlanError, match=r"^source view: field 'role' must be 'source', got 'lea"):
        SourceView.from_dict(d)


def test_limits_must_be_positive() -> None:
    p = _plan()
    for name, value in (("window", 0), ("stall_timeout_s", -1)):
        d = _wire(p.view_for("destination", p.destination))
        d[name] = value
        with pytest.raises(PlanError, match=f"field '{name}' must be"):
            view_from_dict(d)


def test_endpoint_from_dict_names_the_field() -> None:
    with pytest.raises(PlanError, match=r"^endpoint: field 'ip' is missing$"):
        Endpoint.from_dict({"host": "h1", "agent": "/s"})


def test_the_destination_is_told_the_image_limit_and_nobody_else() -> None:
    p = _plan()
    p.max_image_bytes = 4 << 20
    v = view_from_dict(_wire(p.view_for("destination", p.destination)))
    assert v.max_image_bytes == 4 << 20
    assert MigrationPlan.from_dict(p.to_dict()).max_image_bytes == 4 << 20
    for role, ep in (("source", p.source), ("leader", p.leader),
                     ("intermediate", p.intermediates[0])):
        assert "max_image_bytes" not in _wire(p.view_for(role, ep))
    d = _wire(p.view_for("destination", p.destination))
    d["max_image_bytes"] = -1
    with pytest.raises(PlanError, match="field 'max_image_bytes' must be at least 0"):
        view_from_dict(d)
