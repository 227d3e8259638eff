"""Timed triggers: `next_tick` and `latest_due_tick` across time zones and DST.

Cron is evaluated on the job's local wall clock (`require.timezone`); ticks go
in and out as UTC-aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from headwater.workspace.triggers import latest_due_tick, next_tick

SETTINGS = settings(max_examples=150, deadline=None)

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
    "UTC",
    "America/Sao_Paulo",
]

# cron -> the longest downtime drawn for it (each tick costs a croniter call)
CRONS: dict[str, timedelta] = {
    "30 2 * * *": timedelta(days=60),
    "30 1 * * *": timedelta(days=60),
    "0 * * * *": timedelta(days=3),
    "*/15 * * * *": timedelta(days=1),
    "0 6 * * 1": timedelta(days=120),
    "0 0 1 * *": timedelta(days=730),
}

EVERY = {
    "every:5m": timedelta(minutes=5),
    "every:1h": timedelta(hours=1),
    "every:90": timedelta(seconds=90),
    "every:1d": timedelta(days=1),
}

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2030, 12, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _dst_transitions(zone: str) -> list[datetime]:
    """UTC instants in 2024-2030 at which `zone` changes its offset."""
    tz = ZoneInfo(zone)
    found = []
    day = START
    while day < END:
        nxt = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            hour = day
            while hour.astimezone(tz).utcoffset() == day.astimezone(tz).utcoffset():
                hour += timedelta(hours=1)
            found.append(hour)
        day = nxt
    return found


TRANSITIONS = {zone: _dst_transitions(zone) for zone in ZONES}
FALL_BACKS = {
    zone: [
        t
        for t in instants
        if t.astimezone(ZoneInfo(zone)).utcoffset()
        < (t - timedelta(hours=1)).astimezone(ZoneInfo(zone)).utcoffset()
    ]
    for zone, instants in TRANSITIONS.items()
}


DST_ZONES = [zone for zone in ZONES if TRANSITIONS[zone]]


def in_repeated_hour(instant: datetime, zone: str) -> bool:
    """Whether `instant` is the second pass of a wall-clock hour repeated by a fall-back."""
    return instant.astimezone(ZoneInfo(zone)).fold == 1


def is_utc_aware(instant: datetime | None) -> bool:
    return instant is not None and instant.utcoffset() == timedelta(0)


def fits_the_cron(cron: str, tick: datetime, zone: str) -> bool:
    """The tick's local wall clock matches the cron, or the tick stands for a
    local time that did not exist (spring forward), run at the pre-gap offset."""
    tz = ZoneInfo(zone)
    if croniter.match(cron, tick.astimezone(tz).replace(tzinfo=None)):
        return True
    offset_before = (tick - timedelta(hours=3)).astimezone(tz).utcoffset()
    assert offset_before is not None
    wall = tick.replace(tzinfo=None) + offset_before
    round_trip = wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return (
        croniter.match(cron, wall)
        and round_trip != wall
        and wall.replace(tzinfo=tz).astimezone(UTC) == tick
    )


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    """A UTC instant in 2024-2030, mostly within a day of one of `zone`'s DST changes."""
    edges = TRANSITIONS[zone]
    if edges and draw(st.integers(0, 3)) > 0:
        base = draw(st.sampled_from(edges))
        # hypothesis favours 0, so 0 means "some time before the change": even a
        # quarter-hourly cron then crosses it within a few ticks
        window = draw(st.sampled_from([(2, 3), (2, 3), (30, 34)]))
        seconds = draw(st.integers(0, window[1] * 3600)) - window[0] * 3600
    else:
        base = START
        seconds = draw(st.integers(0, int((END - START).total_seconds())))
    grain = draw(st.sampled_from([60, 60, 1, 0]))
    if grain == 60:
        seconds -= seconds % 60  # exactly on a minute: ticks land there
    micro = draw(st.integers(0, 999_999)) if grain == 0 else 0
    return base + timedelta(seconds=seconds, microseconds=micro)


@st.composite
def cron_cases(draw: st.DrawFn) -> tuple[str, str, datetime]:
    zone = draw(st.sampled_from(ZONES + DST_ZONES))  # zones with DST drawn twice as often
    cron = draw(st.sampled_from(sorted(CRONS)))
    return zone, cron, draw(instants(zone))


# -- schedule: next_tick --------------------------------------------------------------------------


@SETTINGS
@given(case=cron_cases())
def test_next_tick_is_strictly_after_and_utc(case: tuple[str, str, datetime]) -> None:
    zone, cron, after = case
    # the repeated hour has its own test below
    assume(not in_repeated_hour(after, zone))
    tick = next_tick(f"schedule:{cron}", after, zone)
    assert is_utc_aware(tick)
    assert tick is not None and tick > after
    assert fits_the_cron(cron, tick, zone)


@st.composite
def repeated_hour_cases(draw: st.DrawFn) -> tuple[str, str, datetime]:
    """An instant in the second pass of a wall-clock hour repeated by a fall-back."""
    zone = draw(st.sampled_from(DST_ZONES))
    cron = draw(st.sampled_from(sorted(CRONS)))
    edge = draw(st.sampled_from(FALL_BACKS[zone]))
    return zone, cron, edge + timedelta(seconds=draw(st.integers(0, 3599)))


@SETTINGS
@given(case=repeated_hour_cases())
@example(case=("America/New_York", "30 1 * * *", utc(2026, 11, 1, 6, 10)))  # 01:10 EST
def test_next_tick_from_the_repeated_hour_is_strictly_after(
    case: tuple[str, str, datetime],
) -> None:
    zone, cron, after = case
    assert in_repeated_hour(after, zone)
    tick = next_tick(f"schedule:{cron}", after, zone)
    # got 2026-11-01 05:30Z (01:30 EDT) for the example, 40 minutes before `after`
    assert tick is not None and tick > after


def test_schedule_first_seen_in_the_repeated_hour_fires_nothing_from_before() -> None:
    # the scheduler sets a new trigger's cursor to `now`: here 01:10 EST, after 01:30 EDT
    last = utc(2026, 11, 1, 6, 10)
    due = latest_due_tick("schedule:30 1 * * *", last, utc(2026, 11, 1, 6, 20), "America/New_York")
    assert due is None  # got 2026-11-01 05:30Z, 40 minutes before the cursor


@SETTINGS
@given(case=cron_cases())
def test_ticks_strictly_increase_and_follow_the_local_wall_clock(
    case: tuple[str, str, datetime],
) -> None:
    zone, cron, start = case
    assume(not in_repeated_hour(start, zone))
    trigger = f"schedule:{cron}"
    previous = start
    seen: set[datetime] = set()
    for _ in range(12):
        tick = next_tick(trigger, previous, zone)
        assert is_utc_aware(tick)
        assert tick is not None and tick > previous
        assert tick not in seen
        assert fits_the_cron(cron, tick, zone), tick.astimezone(ZoneInfo(zone))
        seen.add(tick)
        previous = tick


@pytest.mark.parametrize(
    ("zone", "cron", "day"),
    [
        ("America/New_York", "30 1 * * *", datetime(2026, 11, 1)),
        ("America/New_York", "30 1 * * *", datetime(2024, 11, 3)),
        ("Europe/Berlin", "30 2 * * *", datetime(2026, 10, 25)),
        ("Australia/Sydney", "30 2 * * *", datetime(2026, 4, 5)),
    ],
)
def test_fixed_time_in_a_repeated_hour_runs_once(zone: str, cron: str, day: datetime) -> None:
    tz = ZoneInfo(zone)
    tick = next_tick(f"schedule:{cron}", day.replace(tzinfo=tz) - timedelta(days=1), zone)
    on_that_day = []
    while tick is not None and tick.astimezone(tz).date() <= day.date():
        if tick.astimezone(tz).date() == day.date():
            on_that_day.append(tick)
        tick = next_tick(f"schedule:{cron}", tick, zone)
    assert len(on_that_day) == 1
    local = on_that_day[0].astimezone(tz)
    assert (local.hour, local.minute, local.fold) == (int(cron.split()[1]), 30, 0)


def test_new_york_half_past_one_runs_once_on_the_fall_back_day() -> None:
    trigger, zone = "schedule:30 1 * * *", "America/New_York"
    first = next_tick(trigger, utc(2026, 10, 31, 5, 30), zone)
    assert first == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert next_tick(trigger, first, zone) == utc(2026, 11, 2, 6, 30)  # 01:30 EST next day
    # an hour later the wall clock reads 01:30 again (EST): nothing is due
    assert latest_due_tick(trigger, first, utc(2026, 11, 1, 6, 45), zone) is None


def test_new_york_half_past_two_runs_at_three_thirty_on_the_spring_forward_day() -> None:
    trigger, zone = "schedule:30 2 * * *", "America/New_York"
    tick = next_tick(trigger, utc(2026, 3, 7, 7, 30), zone)
    assert tick == utc(2026, 3, 8, 7, 30)  # 02:30 does not exist: 03:30 EDT
    assert next_tick(trigger, utc(2026, 3, 8, 0, 0), zone) == tick
    assert next_tick(trigger, tick, zone) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        ("UTC", utc(2026, 6, 1, 12, 0), utc(2026, 6, 2, 2, 30)),
        ("Asia/Kolkata", utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 21, 0)),  # 02:30 IST
        ("Europe/Berlin", utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 1, 30)),  # gap -> 03:30
        ("Australia/Sydney", utc(2026, 10, 3, 0, 0), utc(2026, 10, 3, 16, 30)),  # gap -> 03:30
        ("America/Sao_Paulo", utc(2026, 6, 1, 12, 0), utc(2026, 6, 2, 5, 30)),  # no DST
    ],
)
def test_half_past_two_in_each_zone(zone: str, after: datetime, expected: datetime) -> None:
    assert next_tick("schedule:30 2 * * *", after, zone) == expected


def test_naive_or_offset_input_is_read_as_the_instant_it_names() -> None:
    after = datetime(2026, 6, 1, 14, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 12:00Z
    tick = next_tick("schedule:0 * * * *", after, "UTC")
    assert tick == utc(2026, 6, 1, 13, 0)
    assert tick is not None and tick.tzinfo is UTC


# -- schedule: latest_due_tick --------------------------------------------------------------------


@SETTINGS
@given(case=cron_cases(), data=st.data())
def test_latest_due_tick_is_the_newest_tick_in_the_window(
    case: tuple[str, str, datetime], data: st.DataObject
) -> None:
    zone, cron, last = case
    assume(not in_repeated_hour(last, zone))
    max_gap = int(CRONS[cron].total_seconds())
    now = last + timedelta(seconds=data.draw(st.integers(0, max_gap), label="downtime"))
    trigger = f"schedule:{cron}"
    due = latest_due_tick(trigger, last, now, zone)
    first = next_tick(trigger, last, zone)
    assert first is not None
    assert (due is None) == (first > now)
    if due is not None:
        assert is_utc_aware(due)
        assert last < due <= now
        assert first <= due
        following = next_tick(trigger, due, zone)
        assert following is not None and following > now
        assert fits_the_cron(cron, due, zone)


def test_downtime_collapses_missed_ticks_into_the_newest() -> None:
    due = latest_due_tick("schedule:0 * * * *", utc(2026, 1, 1), utc(2026, 1, 3, 5, 30), "UTC")
    assert due == utc(2026, 1, 3, 5, 0)


def test_tick_at_exactly_now_is_due() -> None:
    trigger, zone = "schedule:0 6 * * 1", "Europe/Berlin"
    tick = next_tick(trigger, utc(2026, 1, 1), zone)
    assert tick is not None
    assert latest_due_tick(trigger, utc(2026, 1, 1), tick, zone) == tick
    assert latest_due_tick(trigger, utc(2026, 1, 1), tick - timedelta(microseconds=1), zone) is None
    assert latest_due_tick(trigger, tick, tick, zone) is None


def test_long_downtime_of_a_frequent_schedule_collapses_to_the_newest_tick() -> None:
    # three months of an every-minute schedule: one step to the newest tick, not 130 000
    last, now = utc(2024, 1, 1), utc(2024, 4, 1)
    assert latest_due_tick("schedule:* * * * *", last, now, "UTC") == now
    assert latest_due_tick("schedule:*/15 * * * *", last, now + timedelta(minutes=7), "UTC") == now


# -- every: ---------------------------------------------------------------------------------------


@SETTINGS
@given(
    trigger=st.sampled_from(sorted(EVERY)),
    zone=st.sampled_from(ZONES),
    last=instants("America/New_York"),
    steps=st.integers(1, 20),
)
def test_every_ticks_are_exactly_one_period_apart(
    trigger: str, zone: str, last: datetime, steps: int
) -> None:
    period = EVERY[trigger]
    tick = last
    for n in range(1, steps + 1):
        following = next_tick(trigger, tick, zone)
        assert is_utc_aware(following)
        assert following == last + n * period
        assert following is not None
        tick = following


@SETTINGS
@given(
    trigger=st.sampled_from(sorted(EVERY)),
    zone=st.sampled_from(ZONES),
    last=instants("Europe/Berlin"),
    downtime=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
)
def test_every_due_tick_is_a_whole_number_of_periods_after_last(
    trigger: str, zone: str, last: datetime, downtime: timedelta
) -> None:
    period = EVERY[trigger]
    now = last + downtime
    due = latest_due_tick(trigger, last, now, zone)
    assert (due is None) == (downtime < period)
    if due is not None:
        assert is_utc_aware(due)
        periods, rest = divmod(due - last, period)
        assert periods >= 1 and rest == timedelta(0)
        assert last < due <= now < due + period
        following = next_tick(trigger, due, zone)
        assert following is not None and following > now


# -- once: ----------------------------------------------------------------------------------------

ONCE = {
    "once:2026-05-01T10:00:00+00:00": utc(2026, 5, 1, 10),
    "once:2026-05-01T12:00:00+02:00": utc(2026, 5, 1, 10),
    "once:2026-05-01": utc(2026, 5, 1),  # a date alone is UTC midnight
}


@SETTINGS
@given(
    trigger=st.sampled_from(sorted(ONCE)),
    zone=st.sampled_from(ZONES),
    offset=st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400)),
)
def test_once_fires_at_its_instant_and_never_again(
    trigger: str, zone: str, offset: timedelta
) -> None:
    at = ONCE[trigger]
    after = at + offset
    tick = next_tick(trigger, after, zone)
    if after < at:
        assert tick == at
        assert is_utc_aware(tick)
    else:
        assert tick is None
    assert next_tick(trigger, at, zone) is None


@SETTINGS
@given(
    trigger=st.sampled_from(sorted(ONCE)),
    zone=st.sampled_from(ZONES),
    before=st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400)),
    downtime=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
def test_once_is_due_exactly_when_its_instant_is_in_the_window(
    trigger: str, zone: str, before: timedelta, downtime: timedelta
) -> None:
    at = ONCE[trigger]
    last = at + before
    now = last + downtime
    due = latest_due_tick(trigger, last, now, zone)
    assert due == (at if last < at <= now else None)


def test_untimed_trigger_has_no_tick() -> None:
    assert next_tick("manual:jobs.a.b", utc(2026, 1, 1), "UTC") is None
    assert latest_due_tick("tag:nightly", utc(2026, 1, 1), utc(2027, 1, 1), "UTC") is None
