"""How a run ended, decided from the facts of its end, over every case."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.core.outcomes import ExitFacts, decide, last_line, with_lost_lines
from headwater.core.states import TERMINAL, RunStatus

S = RunStatus


def test_exit_zero_completes_without_a_reason() -> None:
    assert decide(ExitFacts(0)) == (S.COMPLETED, None)


def test_a_cancelled_run_that_succeeded_first_completes() -> None:
    assert decide(ExitFacts(0, cancelled=True)) == (S.COMPLETED, None)


@pytest.mark.parametrize(
    ("killed", "reason"), [(False, "cancelled"), (True, "cancelled; killed after the grace period")]
)
def test_a_cancelled_run_ends_cancelled(killed: bool, reason: str) -> None:
    assert decide(ExitFacts(-15, cancelled=True, killed=killed)) == (S.CANCELLED, reason)


def test_a_timed_out_run_fails_naming_its_timeout() -> None:
    facts = ExitFacts(-15, timed_out=True, timeout_s=2.5, grace_period_s=1)
    assert decide(facts) == (S.FAILED, "timed out after 2.5s")


def test_a_timed_out_run_killed_after_its_grace_says_so() -> None:
    facts = ExitFacts(-9, timed_out=True, killed=True, timeout_s=2, grace_period_s=1.5)
    assert decide(facts) == (S.FAILED, "timed out after 2s; killed after the 1.5s grace period")


def test_a_timeout_wins_over_a_cancel_and_a_clean_exit() -> None:
    facts = ExitFacts(0, timed_out=True, cancelled=True, timeout_s=1)
    assert decide(facts) == (S.FAILED, "timed out after 1s")


def test_a_run_ended_by_a_signal_names_it() -> None:
    assert decide(ExitFacts(-signal.SIGSEGV)) == (S.FAILED, "killed by signal SIGSEGV")


def test_an_unknown_signal_is_named_by_its_number() -> None:
    assert decide(ExitFacts(-200)) == (S.FAILED, "killed by signal 200")


def test_a_failed_runs_reason_names_the_exception_it_died_of() -> None:
    facts = ExitFacts(1, exception="ValueError: boom")
    assert decide(facts) == (S.FAILED, "ValueError: boom (exit code 1)")


def test_a_failed_run_without_an_exception_names_its_exit_code() -> None:
    assert decide(ExitFacts(3)) == (S.FAILED, "exit code 3")


@given(
    code=st.integers(-64, 255),
    timed_out=st.booleans(),
    cancelled=st.booleans(),
    killed=st.booleans(),
    exception=st.none() | st.text(min_size=1, max_size=20),
)
def test_every_end_is_terminal_and_only_a_clean_exit_lacks_a_reason(
    code: int, timed_out: bool, cancelled: bool, killed: bool, exception: str | None
) -> None:
    facts = ExitFacts(code, timed_out, cancelled, killed, 1.0, 1.0, exception)
    status, reason = decide(facts)
    assert status in TERMINAL
    assert (reason is None) == (status is S.COMPLETED)
    assert (status is S.COMPLETED) == (code == 0 and not timed_out)
    if status is S.CANCELLED:
        assert cancelled and not timed_out


def test_the_last_line_says_how_the_run_ended_and_what_the_cap_left_out() -> None:
    assert last_line(2, S.COMPLETED, 0, None, 15) == (
        "run #2 completed (exit code 0); 15 lines over the log cap were not stored"
    )
    assert last_line(3, S.FAILED, 1, "exit code 1", 0) == "run #3 failed (exit code 1): exit code 1"


@pytest.mark.parametrize(
    ("reason", "lost", "expected"),
    [
        (None, 0, None),
        ("exit code 1", 0, "exit code 1"),
        (None, 240, "240 log lines lost (the store could not write them)"),
        ("exit code 1", 1234, "exit code 1; 1,234 log lines lost (the store could not write them)"),
    ],
)
def test_lost_lines_are_added_to_the_reason(reason: str | None, lost: int, expected: str) -> None:
    assert with_lost_lines(reason, lost) == expected
