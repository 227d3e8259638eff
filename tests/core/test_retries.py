"""Retries: which outcomes get another attempt, and the backoff between them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.core.retries import RetryPolicy, outcome_kind, retry_delay

POLICY = RetryPolicy(retries=3, delay_s=30, backoff=2.0)


def test_outcomes_are_told_apart_by_their_reason() -> None:
    assert outcome_kind("failed", "ValueError: x (exit code 1)") == "failed"
    assert outcome_kind("failed", "runtime lost: its process is gone") == "crashed"
    assert outcome_kind("failed", "timed out after 5s") == "timed_out"
    assert outcome_kind("cancelled", "cancelled") is None
    assert outcome_kind("completed", None) is None


def test_waits_grow_by_the_backoff_and_stop_after_the_last_retry() -> None:
    waits = [retry_delay(POLICY, attempt, "failed", "exit code 1", 0.5) for attempt in (1, 2, 3, 4)]
    assert waits == [30.0, 60.0, 120.0, None]


def test_only_the_outcomes_asked_for_are_retried() -> None:
    crashes_only = RetryPolicy(retries=2, retry_on=("crashed",))
    assert retry_delay(crashes_only, 1, "failed", "exit code 1", 0.5) is None
    assert retry_delay(crashes_only, 1, "failed", "runtime lost: gone", 0.5) == 30.0
    assert retry_delay(POLICY, 1, "cancelled", "cancelled", 0.5) is None
    assert retry_delay(None, 1, "failed", "exit code 1", 0.5) is None


def test_settings_make_a_policy() -> None:
    assert RetryPolicy.from_settings({}) is None
    assert RetryPolicy.from_settings({"retries": 0}) is None
    policy = RetryPolicy.from_settings({"retries": 2, "retry_delay": 5.0, "retry_on": ["failed"]})
    assert policy == RetryPolicy(2, 5.0, 2.0, ("failed",))
    assert RetryPolicy.from_dict(policy.as_dict()) == policy


@given(
    retries=st.integers(0, 6),
    delay=st.floats(0.1, 600),
    backoff=st.floats(1.0, 4.0),
    draws=st.lists(st.floats(0, 0.999), min_size=8, max_size=8),
)
def test_a_run_gets_exactly_retries_more_attempts_with_jittered_growing_waits(
    retries: int, delay: float, backoff: float, draws: list[float]
) -> None:
    policy = RetryPolicy(retries, delay, backoff)
    waits = []
    attempt = 1
    while (
        wait := retry_delay(policy, attempt, "failed", "exit code 1", draws[attempt])
    ) is not None:
        step = delay * backoff ** (attempt - 1)
        assert 0.75 * step <= wait <= 1.25 * step
        waits.append(wait)
        attempt += 1
    assert len(waits) == retries
