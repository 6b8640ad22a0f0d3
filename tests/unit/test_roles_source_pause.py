"""The source's pause over cover (``hosts.roles.source``): pause_threshold, RoundBook; pure."""

from __future__ import annotations

from hosts.roles.source import (
    HOLD_CAP,
    MIN_PAUSE_PAGES,
    PAUSE_BUDGET_S,
    RoundBook,
    pause_threshold,
)


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


def test_holding_rounds_do_not_count_toward_max_rounds() -> None:
    book = RoundBook(max_rounds=2, round_from=32)  # a round of 32 chunks, 3 of them arrived
    for i in range(10):  # drains cut short while the relay still carries that round
        assert not book.last() and not book.up()
        book.ended(upto=33 + i, delivered=3 + i)
    assert book.counted() == 0
    book.ended(upto=43, delivered=42)  # the backlog is gone, this round's chunk is not
    assert not book.up() and book.last()  # one more round may count, its drain waits for all
    assert not book.emptied  # and the VM may not pause yet: pages are still on the way
    book.ended(upto=44, delivered=44)
    assert book.up() and book.emptied


def test_an_emptied_drain_is_a_steady_round() -> None:
    book = RoundBook(max_rounds=8, round_from=10)
    book.ended(upto=12, delivered=12)  # all arrived, so every earlier round had too
    assert book.steady == [True] and book.emptied


def test_holding_rounds_are_capped() -> None:
    book = RoundBook(max_rounds=8, steady=[False] * (HOLD_CAP - 1), round_from=100)
    assert book.last() and not book.up()
    book.ended(upto=101, delivered=50)
    assert book.up()


def test_only_rounds_after_a_steady_one_measure_convergence() -> None:
    # 0.25x cover: round 0 left a backlog; rounds 1-3 were sized by the cut (threshold + 1),
    # round 4 followed the first steady round, round 5 the second
    book = RoundBook(max_rounds=8, steady=[False, False, False, True, True])
    pages = [2048, 5, 6, 7, 11, 10]
    assert book.converging(pages) == [2048, 11, 10]
    # the old rule read 5, 6, 7 as "not shrinking" and raised the threshold to 7 mid-backlog
    assert pause_threshold(pages[:4], 120.0, 64) == 7
    assert pause_threshold(book.converging(pages[:4]), 120.0, 64) == MIN_PAUSE_PAGES
