"""Run states and the legal moves between them.

The names are the `RunStatus` values of the dltHub runtime API, so a run's
state can be answered to the official clients unchanged.
"""

from __future__ import annotations

from enum import StrEnum

from headwater.core.errors import HeadwaterError


class RunStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED}
)
"""States a run never leaves; what the clients' `wait()` stops on."""

ACTIVE: frozenset[RunStatus] = frozenset(
    {RunStatus.PENDING, RunStatus.STARTING, RunStatus.RUNNING, RunStatus.CANCELLING}
)
"""States that count against a job's concurrency."""

LIVE: frozenset[RunStatus] = frozenset(
    {RunStatus.STARTING, RunStatus.RUNNING, RunStatus.CANCELLING}
)
"""States in which a run may own an operating-system process."""

LOST_RUN_REASON = "runtime lost"
"""How the reason of a run begins that ended because Headwater stopped under it (a crash,
a SIGKILL): it did not fail on its own, so a backfill runs its interval again."""

INITIAL: frozenset[RunStatus] = frozenset({RunStatus.PENDING, RunStatus.SKIPPED})
"""States a run may be created in: queued, or recorded as declined."""

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # a pending run can be cancelled or failed (archived job, launch refused) before it
    # starts, or declined when it fires (a dbt Cloud job whose mode skips)
    RunStatus.PENDING: frozenset(
        {RunStatus.STARTING, RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.SKIPPED}
    ),
    # a failed attempt with a retry left goes back to pending (`core/retries.py`)
    RunStatus.STARTING: frozenset(
        {RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLING, RunStatus.PENDING}
    ),
    RunStatus.RUNNING: frozenset(
        {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLING, RunStatus.PENDING}
    ),
    # the process may finish on its own while it is being stopped
    RunStatus.CANCELLING: frozenset({RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.SKIPPED: frozenset(),
}


class IllegalTransition(HeadwaterError, ValueError):
    """A move the state machine forbids, with both ends named."""

    code = "illegal_transition"

    def __init__(self, current: RunStatus, target: RunStatus) -> None:
        super().__init__(f"a run cannot go from {current.value!r} to {target.value!r}")
        self.current = current
        self.target = target


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: RunStatus, target: RunStatus) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


def sources_of(target: RunStatus) -> frozenset[RunStatus]:
    """Every state from which `target` may be reached: the guard of an UPDATE."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def outcome_of_exit(exit_code: int | None, cancel_requested: bool) -> RunStatus:
    """The terminal state of a run whose process ended with `exit_code`.

    A run that was asked to stop ends `cancelled` unless it succeeded first.
    """
    if exit_code == 0:
        return RunStatus.COMPLETED
    if cancel_requested:
        return RunStatus.CANCELLED
    return RunStatus.FAILED
