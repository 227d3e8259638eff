"""How a run ended: its terminal state and the reason a user reads, from the facts of its end.

Pure: the supervisor gathers the facts (exit code, whether it timed out, was cancelled or
killed, the last exception it printed, the log lines it lost) and asks these functions.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from headwater.core.states import RunStatus, outcome_of_exit


@dataclass(frozen=True)
class ExitFacts:
    """What the supervisor knows when a run's process has ended."""

    exit_code: int
    """The process's exit code; negative: the signal that ended it."""
    timed_out: bool = False
    """The run's timeout sent it SIGTERM."""
    cancelled: bool = False
    """A cancel (or Headwater shutting down) sent it SIGTERM."""
    killed: bool = False
    """Its grace period ran out and it was sent SIGKILL."""
    timeout_s: float | None = None
    grace_period_s: float | None = None
    exception: str | None = None
    """The last exception the job printed (`ValueError: boom`), if any."""


def decide(facts: ExitFacts) -> tuple[RunStatus, str | None]:
    """The run's terminal state and its reason (None for a run that completed)."""
    code = facts.exit_code
    if facts.timed_out:
        reason = f"timed out after {facts.timeout_s or 0:g}s"
        if facts.killed:
            reason += f"; killed after the {facts.grace_period_s or 0:g}s grace period"
        return RunStatus.FAILED, reason
    status = outcome_of_exit(code, facts.cancelled)
    if status is RunStatus.COMPLETED:
        return status, None
    if status is RunStatus.CANCELLED:
        return status, "cancelled" + ("; killed after the grace period" if facts.killed else "")
    if code < 0:
        return status, f"killed by signal {_signal_name(-code)}"
    # the exception the job died of (dlt's launcher lets it end the process)
    exc = facts.exception
    return status, f"{exc} (exit code {code})" if exc else f"exit code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def last_line(
    number: int, status: RunStatus, exit_code: int, reason: str | None, over_cap: int
) -> str:
    """The runner's last line in a run's log: how it ended and what its log left out."""
    return (
        f"run #{number} {status.value} (exit code {exit_code})"
        + (f": {reason}" if reason else "")
        + (f"; {over_cap:,} lines over the log cap were not stored" if over_cap else "")
    )


def with_lost_lines(reason: str | None, lost: int) -> str | None:
    """The reason, saying how many log lines the store never got (if any)."""
    if not lost:
        return reason
    note = f"{lost:,} log lines lost (the store could not write them)"
    return f"{reason}; {note}" if reason else note
