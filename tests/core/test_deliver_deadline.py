"""`deliver.deadline` as people write it, to an instant in the job's time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.core.deliver_deadline import DeadlineError, deadline_for, parse

SAT_NOON = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", SAT_NOON + timedelta(hours=2)),
        ("within 90 minutes", SAT_NOON + timedelta(minutes=90)),
        ("1h30m after", SAT_NOON + timedelta(minutes=90)),
        ("17:30", datetime(2026, 3, 7, 17, 30, tzinfo=UTC)),
        ("8am", datetime(2026, 3, 8, 8, 0, tzinfo=UTC)),
        ("8am on Mondays", datetime(2026, 3, 9, 8, 0, tzinfo=UTC)),
        ("6pm on weekdays", datetime(2026, 3, 9, 18, 0, tzinfo=UTC)),
        ("9am on Mon, Thu", datetime(2026, 3, 9, 9, 0, tzinfo=UTC)),
        ("by 12pm", datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
    ],
)
def test_forms_people_write(text: str, expected: datetime) -> None:
    assert deadline_for(parse(text), SAT_NOON, "UTC") == expected


def test_a_time_of_day_is_read_in_the_jobs_time_zone_across_dst() -> None:
    # New York moves its clocks on Sunday March 8: 8am is 13:00Z before, 12:00Z after
    assert deadline_for(parse("8am"), SAT_NOON, "America/New_York") == datetime(
        2026, 3, 7, 13, 0, tzinfo=UTC
    )
    sunday = datetime(2026, 3, 8, 14, 0, tzinfo=UTC)
    assert deadline_for(parse("8am"), sunday, "America/New_York") == datetime(
        2026, 3, 9, 12, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("text", ["noonish", "25:00", "13pm", "8am on Funday", ""])
def test_what_is_not_understood_says_which_forms_are(text: str) -> None:
    with pytest.raises(DeadlineError, match="8am|not a"):
        parse(text)


@given(
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    due=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "Australia/Sydney", "America/New_York"]),
)
def test_a_deadline_is_always_after_the_run_was_due_and_within_a_week(
    hour: int, minute: int, due: datetime, tz: str
) -> None:
    at = deadline_for(parse(f"{hour}:{minute:02d}"), due.replace(tzinfo=UTC), tz)
    assert due.replace(tzinfo=UTC) < at <= due.replace(tzinfo=UTC) + timedelta(days=7)
