"""Schedule computation (dlt's own helpers behind `workspace.triggers`) across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.workspace.triggers import latest_due_tick, next_tick

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Sao_Paulo",
]
CRONS = ["30 2 * * *", "30 1 * * *", "0 * * * *", "*/15 * * * *", "0 6 * * 1", "0 0 1 * *"]
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


def _matches_local(cron: str, tick: datetime, tz: str) -> bool:
    local = tick.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return croniter.match(cron, local)


@settings(max_examples=150, deadline=None)
@given(after=instants, cron=st.sampled_from(CRONS), tz=st.sampled_from(ZONES))
def test_ticks_increase_never_repeat_and_fall_on_the_cron_in_local_time(
    after: datetime, cron: str, tz: str
) -> None:
    trigger = f"schedule:{cron}"
    ticks = []
    t = after
    for _ in range(8):
        t = next_tick(trigger, t, tz)
        assert t is not None and t.tzinfo is not None
        ticks.append(t)
    assert all(a < b for a, b in zip([after, *ticks], ticks, strict=False))
    for tick in ticks:
        # a tick is on the cron in local time, or a local time that did not exist
        # (spring forward) moved to the first instant after the gap
        on_cron = _matches_local(cron, tick, tz)
        shifted = _matches_local(cron, tick - timedelta(hours=1), tz) or _matches_local(
            cron, tick - timedelta(minutes=30), tz
        )
        assert on_cron or shifted, (tick, tick.astimezone(ZoneInfo(tz)))


def test_new_york_spring_forward_runs_the_missing_hour_after_the_gap() -> None:
    before = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    tick = next_tick("schedule:30 2 * * *", before, "America/New_York")
    assert tick == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_new_york_fall_back_runs_the_repeated_hour_once() -> None:
    t = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
    ticks = []
    while t < datetime(2026, 11, 2, 12, 0, tzinfo=UTC):
        t = next_tick("schedule:30 1 * * *", t, "America/New_York")
        ticks.append(t)
    on_first = [x for x in ticks if x.astimezone(ZoneInfo("America/New_York")).day == 1]
    assert len(on_first) == 1


@settings(max_examples=150, deadline=None)
@given(
    last=instants,
    gap=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)),
    cron=st.sampled_from(CRONS),
    tz=st.sampled_from(ZONES),
)
def test_latest_due_tick_is_the_newest_tick_so_downtime_runs_once(
    last: datetime, gap: timedelta, cron: str, tz: str
) -> None:
    trigger = f"schedule:{cron}"
    now = last + gap
    due = latest_due_tick(trigger, last, now, tz)
    first = next_tick(trigger, last, tz)
    assert first is not None
    if first > now:
        assert due is None
    else:
        assert due is not None and last < due <= now
        following = next_tick(trigger, due, tz)
        assert following is not None and following > now


@settings(max_examples=100, deadline=None)
@given(last=instants, period=st.sampled_from([60, 300, 3600, 86400]), steps=st.integers(0, 500))
def test_every_ticks_are_exactly_one_period_apart(last: datetime, period: int, steps: int) -> None:
    trigger = f"every:{period}"
    assert next_tick(trigger, last, "UTC") == last + timedelta(seconds=period)
    now = last + timedelta(seconds=period * steps + period // 2)
    due = latest_due_tick(trigger, last, now, "UTC")
    if steps == 0:
        assert due is None
    else:
        assert due == last + timedelta(seconds=period * steps)


@pytest.mark.parametrize("tz", ZONES)
def test_once_fires_once(tz: str) -> None:
    at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    trigger = f"once:{at.isoformat()}"
    assert next_tick(trigger, at - timedelta(days=1), tz) == at
    assert next_tick(trigger, at, tz) is None
    assert latest_due_tick(trigger, at - timedelta(days=1), at + timedelta(days=3), tz) == at
