"""Worked example: a new chunk policy is one class plus one line in ``hosts.chunk_policy.POLICIES``.

The class below is what would go into ``hosts/chunk_policy.py``: the four ``ChunkPolicy``
methods and a ``from_settings`` factory. The test adds its registry line, then draws the policy
through ``policy_from_settings`` from the plan's ``chunk_policy`` dict, as the source role does.
"""

from __future__ import annotations

from typing import Any

import pytest

from hosts import chunk_policy
from hosts.chunk_policy import POLICIES, ChunkPolicy, Pacer, policy_from_settings


class ConstantChunkPolicy:
    """Every chunk 4 KiB, one every ``gap_s`` seconds, whatever the sender's share."""

    def __init__(self, gap_s: float = 0.01) -> None:
        self.gap_s = gap_s

    @classmethod
    def from_settings(cls, settings: dict[str, Any], seed: int, share: float,
                      ip: str | None) -> ConstantChunkPolicy:
        return cls(float(settings.get("gap_s", 0.01)))

    def next_size(self) -> int:
        return 4096

    def next_gap(self, size: int) -> float:
        return self.gap_s

    def for_sender(self, share: float, seed: int) -> ConstantChunkPolicy:
        return ConstantChunkPolicy(self.gap_s)

    def describe(self) -> dict[str, Any]:
        return {"kind": "constant", "size": 4096, "gap_s": self.gap_s}


@pytest.fixture
def with_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    # the one registry line: "constant": ConstantChunkPolicy.from_settings,
    monkeypatch.setitem(POLICIES, "constant", ConstantChunkPolicy.from_settings)


def test_a_registered_policy_is_drawn_from_the_plan_settings(with_constant: None) -> None:
    policy: ChunkPolicy = policy_from_settings({"kind": "constant", "gap_s": 0.005}, seed=3,
                                               share=0.5, ip="10.0.0.1")
    assert isinstance(policy, ConstantChunkPolicy)
    assert [policy.next_size() for _ in range(3)] == [4096] * 3
    assert policy.next_gap(4096) == 0.005
    assert policy.describe() == {"kind": "constant", "size": 4096, "gap_s": 0.005}
    sender = policy.for_sender(share=1 / 3, seed=7)  # what each of the parallel senders uses
    assert sender.next_size() == 4096 and sender.next_gap(4096) == 0.005


def test_the_source_paces_a_registered_policy(with_constant: None) -> None:
    import time

    policy = policy_from_settings({"kind": "constant", "gap_s": 0.01})
    pacer, t0, sent = Pacer(), time.monotonic(), 0
    for _ in range(5):
        pacer.wait(policy.next_gap(policy.next_size()))
        sent += policy.next_size()
    assert sent == 5 * 4096 and time.monotonic() - t0 >= 0.05 - 1e-3


def test_unregistered_kind_is_an_error_naming_the_registered_ones(with_constant: None) -> None:
    with pytest.raises(ValueError, match="known kinds are constant, cover, fixed, profile"):
        policy_from_settings({"kind": "constnat"})
    assert chunk_policy.POLICIES is POLICIES  # the lookup reads this very dict
