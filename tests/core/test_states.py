"""The run state machine, checked over every (from, to) pair and by random walks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.states import (
    ACTIVE,
    INITIAL,
    LIVE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    RunStatus,
    can_transition,
    check_transition,
    outcome_of_exit,
    sources_of,
)

S = RunStatus

# Written out by hand on purpose: a change to TRANSITIONS must be made here too.
EXPECTED_MOVES: dict[RunStatus, set[RunStatus]] = {
    S.PENDING: {S.STARTING, S.CANCELLED, S.FAILED, S.SKIPPED},
    S.STARTING: {S.RUNNING, S.FAILED, S.CANCELLING, S.PENDING},
    S.RUNNING: {S.COMPLETED, S.FAILED, S.CANCELLING, S.PENDING},
    S.CANCELLING: {S.CANCELLED, S.COMPLETED, S.FAILED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
    S.SKIPPED: set(),
}

ALL_PAIRS = list(itertools.product(list(RunStatus), repeat=2))

SETTINGS = settings(max_examples=150, deadline=None)


def test_expected_table_covers_every_state() -> None:
    assert set(EXPECTED_MOVES) == set(RunStatus)
    assert set(TRANSITIONS) == set(RunStatus)
    assert len(ALL_PAIRS) == 64


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_every_pair_is_allowed_or_refused_as_the_table_says(
    current: RunStatus, target: RunStatus
) -> None:
    allowed = target in EXPECTED_MOVES[current]
    assert can_transition(current, target) is allowed
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(current, target)
        assert info.value.current is current
        assert info.value.target is target
        assert repr(current.value) in str(info.value)
        assert repr(target.value) in str(info.value)


def test_state_sets_are_as_documented() -> None:
    assert TERMINAL == {S.COMPLETED, S.FAILED, S.CANCELLED, S.SKIPPED}
    assert ACTIVE == {S.PENDING, S.STARTING, S.RUNNING, S.CANCELLING}
    assert LIVE == {S.STARTING, S.RUNNING, S.CANCELLING}
    assert INITIAL == {S.PENDING, S.SKIPPED}
    assert TERMINAL.isdisjoint(ACTIVE)
    assert TERMINAL | ACTIVE == set(RunStatus)
    assert LIVE <= ACTIVE


@pytest.mark.parametrize("state", sorted(TERMINAL), ids=lambda s: s.value)
def test_terminal_state_has_no_exit(state: RunStatus) -> None:
    assert TRANSITIONS[state] == frozenset()
    assert not any(can_transition(state, target) for target in RunStatus)


@pytest.mark.parametrize("state", sorted(set(RunStatus) - TERMINAL), ids=lambda s: s.value)
def test_every_unfinished_state_can_reach_a_terminal_state(state: RunStatus) -> None:
    seen = {state}
    frontier = [state]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen & TERMINAL


@pytest.mark.parametrize("state", sorted(set(RunStatus) - TERMINAL), ids=lambda s: s.value)
def test_unfinished_state_has_at_least_one_exit(state: RunStatus) -> None:
    assert TRANSITIONS[state]


@pytest.mark.parametrize("target", list(RunStatus), ids=lambda s: s.value)
def test_sources_of_matches_the_expected_table(target: RunStatus) -> None:
    assert sources_of(target) == {s for s, moves in EXPECTED_MOVES.items() if target in moves}


@SETTINGS
@given(st.sampled_from(list(RunStatus)))
def test_sources_of_is_the_inverse_of_transitions(target: RunStatus) -> None:
    assert sources_of(target) == frozenset(s for s in RunStatus if target in TRANSITIONS[s])
    for source in sources_of(target):
        check_transition(source, target)


@SETTINGS
@given(start=st.sampled_from(sorted(INITIAL)), data=st.data())
def test_random_walks_from_an_initial_state_stay_legal(
    start: RunStatus, data: st.DataObject
) -> None:
    state = start
    for _ in range(12):
        if state in TERMINAL:
            # whatever is tried, a finished run stays finished
            target = data.draw(st.sampled_from(list(RunStatus)), label="attempt")
            assert not can_transition(state, target)
            with pytest.raises(IllegalTransition):
                check_transition(state, target)
            continue
        target = data.draw(st.sampled_from(sorted(TRANSITIONS[state])), label="move")
        check_transition(state, target)
        assert state in sources_of(target)
        state = target


@SETTINGS
@given(walk=st.lists(st.sampled_from(list(RunStatus)), max_size=12))
def test_applying_only_legal_moves_never_leaves_a_terminal_state(
    walk: list[RunStatus],
) -> None:
    state = RunStatus.PENDING
    reached_terminal = False
    for target in walk:
        if can_transition(state, target):
            assert not reached_terminal
            state = target
        reached_terminal = reached_terminal or state in TERMINAL
    assert reached_terminal == (state in TERMINAL)


@SETTINGS
@given(cancel_requested=st.booleans())
def test_exit_zero_completes_even_when_cancel_was_requested(cancel_requested: bool) -> None:
    assert outcome_of_exit(0, cancel_requested) is RunStatus.COMPLETED


@SETTINGS
@given(exit_code=st.one_of(st.none(), st.integers().filter(lambda c: c != 0)))
def test_nonzero_exit_after_cancel_request_is_cancelled(exit_code: int | None) -> None:
    assert outcome_of_exit(exit_code, True) is RunStatus.CANCELLED


@SETTINGS
@given(exit_code=st.one_of(st.none(), st.integers().filter(lambda c: c != 0)))
def test_nonzero_exit_without_cancel_request_is_failed(exit_code: int | None) -> None:
    assert outcome_of_exit(exit_code, False) is RunStatus.FAILED


@SETTINGS
@given(exit_code=st.one_of(st.none(), st.integers()), cancel_requested=st.booleans())
def test_exit_outcome_is_terminal_and_reachable_from_a_live_state(
    exit_code: int | None, cancel_requested: bool
) -> None:
    outcome = outcome_of_exit(exit_code, cancel_requested)
    assert outcome in TERMINAL
    # the supervisor records the outcome from `running` (or `cancelling` once asked to stop)
    from_state = RunStatus.CANCELLING if cancel_requested else RunStatus.RUNNING
    assert can_transition(from_state, outcome)
