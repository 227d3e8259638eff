"""`deliver.deadline`: by when a job's run must have completed.

dlt stores the deadline as the words a person wrote ("8am on Mondays"). Headwater reads
the forms people write for a data delivery, and says which ones when it cannot:

- a time of day: `8am`, `8:30 pm`, `08:00`, `17:45`
- a time of day on some days: `8am on Mondays`, `6pm on weekdays`, `9am on Mon, Thu`
- a time after the run was due: `2h`, `90m`, `within 2 hours`, `1h30m after`

A time of day is read in the job's time zone: the deadline of a run is the first such
time after the run was due (its interval's end, or when it was triggered).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from headwater.core.errors import HeadwaterError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FORMS = "'8am', '17:30', '8am on Mondays', '6pm on weekdays', '2h', 'within 90 minutes'"

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_TIME = re.compile(r"^(?:by\s+|at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?(?:\s+(.*))?$")


class DeadlineError(HeadwaterError, ValueError):
    code = "invalid_deadline"
    status = 400


@dataclass(frozen=True)
class Deadline:
    after_s: float | None = None
    """A duration after the run was due."""
    hour: int = 0
    minute: int = 0
    weekdays: frozenset[int] = frozenset(range(7))
    """Monday is 0."""


def parse(text: str) -> Deadline:
    """Read a `deliver.deadline`; `DeadlineError` names the forms understood."""
    s = text.strip().lower().rstrip(".")
    spoken = re.sub(r"^within\s+|\s+after(\s+due)?$|^in\s+", "", s).strip()
    parts = _DURATION.findall(spoken)
    if parts and _DURATION.sub("", spoken).replace("and", "").strip(" ,") == "":
        total = 0.0
        for value, unit in parts:
            if unit not in _UNITS:
                break
            total += float(value) * _UNITS[unit]
        else:
            if total > 0:
                return Deadline(after_s=total)
    m = _TIME.match(s)
    if m is None:
        raise DeadlineError(f"deadline {text!r} is not understood; write it as one of {FORMS}")
    hour, minute, meridiem, rest = int(m[1]), int(m[2] or 0), m[3], (m[4] or "").strip()
    if meridiem:
        if not 1 <= hour <= 12:
            raise DeadlineError(f"deadline {text!r}: {hour}{meridiem} is not a time")
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59:
        raise DeadlineError(f"deadline {text!r}: {m[1]}:{m[2] or '00'} is not a time")
    return Deadline(hour=hour, minute=minute, weekdays=_days(text, rest))


def _days(text: str, rest: str) -> frozenset[int]:
    rest = re.sub(r"^(on|every)\s+", "", rest).strip()
    if rest in ("", "daily", "day", "every day", "each day"):
        return frozenset(range(7))
    if rest in ("weekdays", "weekday", "workdays", "business days"):
        return frozenset(range(5))
    if rest in ("weekends", "weekend"):
        return frozenset({5, 6})
    days = set()
    for word in re.split(r"[,\s]+|\band\b", rest):
        word = word.strip()
        if not word or word == "and":
            continue
        day = next((i for i, d in enumerate(DAYS) if word.startswith(d)), None)
        if day is None:
            raise DeadlineError(
                f"deadline {text!r}: {word!r} is not a day; write it as one of {FORMS}"
            )
        days.add(day)
    return frozenset(days)


def deadline_for(deadline: Deadline, due: datetime, tz: str) -> datetime:
    """When a run that was due at `due` (UTC) must have completed, UTC."""
    if deadline.after_s is not None:
        return due + timedelta(seconds=deadline.after_s)
    zone = ZoneInfo(tz)
    local = due.astimezone(zone)
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        if day.weekday() not in deadline.weekdays:
            continue
        at = datetime(day.year, day.month, day.day, deadline.hour, deadline.minute, tzinfo=zone)
        if at > local:
            return at.astimezone(UTC)
    raise DeadlineError("a deadline names no day of the week")
