"""When a run's supervisor signals it: timeout, then SIGKILL after the grace period.

Pure: times are the caller's monotonic seconds, `now` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Signal(StrEnum):
    NONE = "none"
    TERM = "term"
    """SIGTERM the run: its timeout is reached (dlt asks the job to stop cleanly)."""
    KILL = "kill"
    """SIGKILL the run: the grace period after its SIGTERM is over."""


@dataclass(frozen=True)
class Deadlines:
    """What the supervisor tracks of one live run's signals."""

    started: float
    timeout_s: float | None = None
    term_sent_at: float | None = None
    kill_at: float | None = None
    killed: bool = False
    exited: bool = False

    @property
    def timeout_at(self) -> float | None:
        return None if self.timeout_s is None else self.started + float(self.timeout_s)


def due(d: Deadlines, now: float) -> Signal:
    """The signal a run is due at `now`: at most one per turn, each once."""
    if d.exited:
        return Signal.NONE
    timeout_at = d.timeout_at
    if timeout_at is not None and now >= timeout_at and d.term_sent_at is None:
        return Signal.TERM
    if d.kill_at is not None and now >= d.kill_at and not d.killed:
        return Signal.KILL
    return Signal.NONE


def kill_at(now: float, grace_period_s: float | None) -> float:
    """When SIGKILL follows a SIGTERM sent at `now` (no grace period: at once)."""
    return now + float(grace_period_s or 0)
