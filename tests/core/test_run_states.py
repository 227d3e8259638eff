"""The run state machine, checked over every pair of states and over random walks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.states import (
    ACTIVE,
    INITIAL,
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
# written out by hand: a change to the machine must change this table too
LEGAL = {
    (S.PENDING, S.STARTING),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.CANCELLING),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLING),
    (S.CANCELLING, S.CANCELLED),
    (S.CANCELLING, S.COMPLETED),
    (S.CANCELLING, S.FAILED),
}


@pytest.mark.parametrize("current,target", list(itertools.product(S, S)))
def test_every_pair_of_states_is_legal_exactly_when_the_table_says(
    current: RunStatus, target: RunStatus
) -> None:
    legal = (current, target) in LEGAL
    assert can_transition(current, target) is legal
    if legal:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()


def test_every_state_can_reach_a_terminal_state() -> None:
    for start in S:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL, start


def test_active_states_are_exactly_the_non_terminal_ones() -> None:
    assert ACTIVE == frozenset(S) - TERMINAL


@given(st.sampled_from(sorted(S)))
def test_sources_of_a_state_are_the_states_that_may_move_to_it(target: RunStatus) -> None:
    assert sources_of(target) == {s for s in S if target in TRANSITIONS[s]}


@settings(max_examples=300, deadline=None)
@given(start=st.sampled_from(sorted(INITIAL)), choices=st.lists(st.integers(0, 10), max_size=12))
def test_random_walks_stay_legal_and_never_leave_a_terminal_state(
    start: RunStatus, choices: list[int]
) -> None:
    state = start
    for choice in choices:
        options = sorted(TRANSITIONS[state])
        if not options:
            assert state in TERMINAL
            break
        nxt = options[choice % len(options)]
        check_transition(state, nxt)
        state = nxt
    if state in TERMINAL:
        assert all(not can_transition(state, t) for t in S)


@given(code=st.integers(-64, 255), cancel=st.booleans())
def test_exit_code_decides_the_outcome(code: int, cancel: bool) -> None:
    outcome = outcome_of_exit(code, cancel)
    if code == 0:
        assert outcome is S.COMPLETED  # a run that finished first succeeded, cancel or not
    elif cancel:
        assert outcome is S.CANCELLED
    else:
        assert outcome is S.FAILED
