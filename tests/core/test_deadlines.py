"""When a run is due its SIGTERM (timeout) and its SIGKILL (grace over), over every case."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.core.deadlines import Deadlines, Signal, due, kill_at


def test_a_run_without_a_timeout_is_never_signalled() -> None:
    assert due(Deadlines(started=0.0), 10**9) is Signal.NONE


def test_a_run_before_its_timeout_is_left_alone() -> None:
    assert due(Deadlines(started=10.0, timeout_s=5), 14.9) is Signal.NONE


def test_a_run_at_its_timeout_is_sent_sigterm() -> None:
    assert due(Deadlines(started=10.0, timeout_s=5), 15.0) is Signal.TERM


def test_sigterm_is_sent_once() -> None:
    d = Deadlines(started=10.0, timeout_s=5, term_sent_at=15.0, kill_at=20.0)
    assert due(d, 16.0) is Signal.NONE


def test_sigkill_follows_when_the_grace_period_is_over() -> None:
    d = Deadlines(started=10.0, timeout_s=5, term_sent_at=15.0, kill_at=20.0)
    assert due(d, 20.0) is Signal.KILL


def test_sigkill_is_sent_once() -> None:
    d = Deadlines(started=10.0, term_sent_at=15.0, kill_at=20.0, killed=True)
    assert due(d, 30.0) is Signal.NONE


def test_a_cancelled_run_is_killed_after_its_grace_without_a_timeout() -> None:
    d = Deadlines(started=10.0, term_sent_at=11.0, kill_at=12.0)
    assert due(d, 11.5) is Signal.NONE
    assert due(d, 12.0) is Signal.KILL


def test_an_exited_run_is_never_signalled() -> None:
    d = Deadlines(started=0.0, timeout_s=1, term_sent_at=1.0, kill_at=2.0, exited=True)
    assert due(d, 100.0) is Signal.NONE


def test_no_grace_period_kills_at_once() -> None:
    assert kill_at(5.0, None) == 5.0
    assert kill_at(5.0, 0) == 5.0
    assert kill_at(5.0, 2.5) == 7.5


@given(
    started=st.floats(0, 1e6),
    timeout_s=st.none() | st.floats(0, 1e4),
    grace=st.none() | st.floats(0, 1e3),
    steps=st.integers(3, 200),
)
def test_a_timed_out_run_is_sent_sigterm_then_sigkill_each_once(
    started: float, timeout_s: float | None, grace: float | None, steps: int
) -> None:
    """Walk a run's clock forward, applying each signal as the supervisor does."""
    d = Deadlines(started=started, timeout_s=timeout_s)
    sent: list[Signal] = []
    span = (timeout_s or 0) + (grace or 0) + 1.0
    step = span / steps
    now = started
    for _ in range(steps + 2):
        s = due(d, now)
        if s is Signal.TERM:
            d = Deadlines(started, timeout_s, term_sent_at=now, kill_at=kill_at(now, grace))
        elif s is Signal.KILL:
            d = Deadlines(started, timeout_s, d.term_sent_at, d.kill_at, killed=True)
        if s is not Signal.NONE:
            sent.append(s)
        now += step
    if timeout_s is None:
        assert sent == []
    else:
        assert sent == [Signal.TERM, Signal.KILL]
