"""The source's pause threshold over cover (``hosts.roles.source.pause_threshold``): pure."""

from __future__ import annotations

from hosts.roles.source import MIN_PAUSE_PAGES, PAUSE_BUDGET_S, pause_threshold


def test_the_budget_is_what_the_first_round_moved_in_the_pause_budget() -> None:
    # 2048 pages in 32 s: 64 pages/s, 16 pages in 0.25 s
    assert pause_threshold([2048], 32.0, 64) == int(64 * PAUSE_BUDGET_S)
    assert pause_threshold([2048, 57], 32.0, 64) == 16  # a shrinking round changes nothing


def test_the_budget_is_clamped_to_min_and_default() -> None:
    assert pause_threshold([2048], 1000.0, 64) == MIN_PAUSE_PAGES  # a slow relay
    assert pause_threshold([2048], 0.5, 64) == 64  # a fast one: no more than the default
    assert pause_threshold([2048], 0.0, 64) == 64  # nothing measured: the default


def test_a_round_that_did_not_shrink_the_dirty_set_lets_the_vm_pause_with_it() -> None:
    # 0.25x cover: 2048 pages in 120 s gives a budget of 4; the drain leaves 5 every round
    assert pause_threshold([2048, 222, 23, 9, 5], 120.0, 64) == MIN_PAUSE_PAGES
    assert pause_threshold([2048, 222, 23, 9, 5, 5], 120.0, 64) == 5
    assert pause_threshold([2048, 222, 23, 9, 5, 7], 120.0, 64) == 7
    # not capped by the default: rounds that grow would end the same way at max_rounds
    assert pause_threshold([2048, 300, 300], 120.0, 64) == 300
