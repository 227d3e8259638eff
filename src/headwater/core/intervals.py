"""Which intervals of an interval job to run now, from what its runs say.

dlt decides what an interval is and which ones are still open (`workspace/intervals.py`
wraps its helpers); this module decides, from the job's runs, which of the open ones to
start: the rules of sequential and parallel mode, failed intervals waiting for the next
tick, and where a backfill stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from headwater.core.states import ACTIVE, LOST_RUN_REASON, RunStatus

Interval = tuple[datetime, datetime]
"""Half-open `[start, end)`, UTC."""

MODES = ("sequential", "parallel")


@dataclass
class IntervalRuns:
    """The intervals of one job as its runs since its last refresh leave them."""

    completed: list[Interval] = field(default_factory=list)
    """Intervals a completed run covered (not coalesced)."""
    active: list[Interval] = field(default_factory=list)
    """Intervals a pending, starting, running or cancelling run is on."""
    failed: dict[Interval, datetime] = field(default_factory=dict)
    """Intervals whose newest run ended without completing, and when it ended; an interval
    a later run completed or is on is not here."""
    runs_per_start: dict[datetime, int] = field(default_factory=dict)
    """How many runs (since ever) each interval start had: the next one's dedupe key."""


def _interval(run: Mapping[str, Any]) -> Interval | None:
    start, end = run.get("interval_start"), run.get("interval_end")
    if start is None or end is None or start >= end:
        return None
    return (start, end)


def summarize(runs: Iterable[Mapping[str, Any]], reset_at: datetime | None) -> IntervalRuns:
    """What `runs` (each with status, interval_start/end, created_at, finished_at) say about
    the job's intervals. Runs created before `reset_at` (a refresh) count only for keys."""
    out = IntervalRuns()
    newest: dict[Interval, Mapping[str, Any]] = {}
    for run in sorted(runs, key=lambda r: (r["created_at"], r.get("number") or 0)):
        iv = _interval(run)
        if iv is None:
            continue
        out.runs_per_start[iv[0]] = out.runs_per_start.get(iv[0], 0) + 1
        if reset_at is not None and run["created_at"] < reset_at:
            continue
        status = RunStatus(run["status"])
        if status is RunStatus.SKIPPED:
            continue
        if status is RunStatus.COMPLETED:
            out.completed.append(iv)
        newest[iv] = run
    covered = set(out.completed)
    for iv, run in newest.items():
        status = RunStatus(run["status"])
        if status in ACTIVE:
            out.active.append(iv)
        elif status is not RunStatus.COMPLETED and iv not in covered:
            out.failed[iv] = run.get("finished_at") or run["created_at"]
    out.active.sort()
    return out


def interval_key(start: datetime, runs_before: int) -> str:
    """The dedupe key of the next run of the interval starting at `start`: a tick, a
    backfill and a trigger racing for it make one run; a retry after a failure another."""
    return f"interval@{start.isoformat()}#{runs_before}"


def held_back(iv: Interval, runs: IntervalRuns, last_tick: datetime) -> bool:
    """A failed interval waits for the next tick (or a backfill): it is not retried in a
    loop, and it is never skipped."""
    failed_at = runs.failed.get(iv)
    return failed_at is not None and failed_at >= last_tick


def plan(
    eligible: Sequence[Interval],
    runs: IntervalRuns,
    mode: str,
    concurrency: int | None,
    last_tick: datetime,
) -> list[Interval]:
    """The open intervals to start now, earliest first.

    Sequential: one at a time, in order; a failed interval holds the ones after it until
    the next tick retries it. Parallel: any open ones, up to `concurrency` active at once.
    """
    active = set(runs.active)
    if mode != "parallel":
        if active or not eligible:
            return []
        first = eligible[0]
        return [] if held_back(first, runs, last_tick) else [first]
    slots = None if concurrency is None else max(0, concurrency - len(active))
    todo = [iv for iv in eligible if iv not in active and not held_back(iv, runs, last_tick)]
    return todo if slots is None else todo[:slots]


def watermark(completed: Sequence[Interval], start: datetime) -> datetime:
    """How far the job has completed without a gap from `start` (its declared start)."""
    mark = start
    for s, e in sorted(completed):
        if s > mark:
            break
        mark = max(mark, e)
    return mark


# -- backfills -----------------------------------------------------------------------------


class Slot:
    """What became of one interval of a backfill."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COVERED = "skipped_already_covered"
    OUT = "skipped_out_of_interval"


@dataclass(frozen=True)
class BackfillSlot:
    interval: Interval
    state: str
    run: Mapping[str, Any] | None = None
    """The backfill's newest run of the interval."""


def backfill_slots(
    intervals: Sequence[Interval],
    window: tuple[datetime | None, datetime | None],
    covered_before: Iterable[Interval],
    runs: IntervalRuns,
    own_runs: Iterable[Mapping[str, Any]],
) -> list[BackfillSlot]:
    """Each interval of a backfill with its state.

    `window` is the job's declared interval window (either end None: open);
    `covered_before` the intervals completed before the backfill was made (they are
    `skipped_already_covered`); `runs` what all the job's runs say now (a tick may run an
    interval of the backfill: it counts); `own_runs` the backfill's runs. A run lost to a
    restart leaves its interval pending: it runs again, so a crash leaves no gap.
    """
    covered = set(covered_before)
    completed = set(runs.completed)
    active = set(runs.active)
    newest: dict[Interval, Mapping[str, Any]] = {}
    for own in sorted(own_runs, key=lambda r: (r["created_at"], r.get("number") or 0)):
        own_iv = _interval(own)
        if own_iv is not None:
            newest[own_iv] = own
    lo, hi = window
    slots = []
    for iv in intervals:
        run = newest.get(iv)
        if (lo is not None and iv[0] < lo) or (hi is not None and iv[1] > hi):
            slots.append(BackfillSlot(iv, Slot.OUT))
        elif iv in covered:
            slots.append(BackfillSlot(iv, Slot.COVERED))
        elif iv in completed:
            slots.append(BackfillSlot(iv, Slot.COMPLETED, run))
        elif iv in active:
            slots.append(BackfillSlot(iv, Slot.RUNNING, run))
        elif run is None or RunStatus(run["status"]) is RunStatus.SKIPPED:
            slots.append(BackfillSlot(iv, Slot.PENDING, run))
        elif str(run.get("reason") or "").startswith(LOST_RUN_REASON):
            slots.append(BackfillSlot(iv, Slot.PENDING, run))
        elif run["status"] == RunStatus.CANCELLED.value:
            slots.append(BackfillSlot(iv, Slot.CANCELLED, run))
        else:
            slots.append(BackfillSlot(iv, Slot.FAILED, run))
    return slots


def backfill_next(
    slots: Sequence[BackfillSlot], job_active: int, mode: str, concurrency: int | None
) -> list[Interval]:
    """The backfill's intervals to start now. Sequential stops at a failed interval (the
    ones after it wait: a gap is never left behind); parallel runs around it."""
    if mode != "parallel":
        if job_active:
            return []
        for slot in slots:
            if slot.state in (Slot.FAILED, Slot.CANCELLED, Slot.RUNNING):
                return []
            if slot.state == Slot.PENDING:
                return [slot.interval]
        return []
    room = None if concurrency is None else max(0, concurrency - job_active)
    todo = [s.interval for s in slots if s.state == Slot.PENDING]
    return todo if room is None else todo[:room]


def backfill_outcome(slots: Sequence[BackfillSlot], mode: str) -> str | None:
    """`completed` or `failed` once nothing is left to run; None while it goes on. A
    sequential backfill ends at its first failed interval; a parallel one runs the rest."""
    settled = (Slot.COMPLETED, Slot.COVERED, Slot.OUT)
    if mode != "parallel":
        for slot in slots:
            if slot.state in settled:
                continue
            return "failed" if slot.state in (Slot.FAILED, Slot.CANCELLED) else None
        return "completed"
    states = {s.state for s in slots}
    if states & {Slot.RUNNING, Slot.PENDING}:
        return None
    return "failed" if states & {Slot.FAILED, Slot.CANCELLED} else "completed"


def backfill_counts(slots: Sequence[BackfillSlot]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for slot in slots:
        counts[slot.state] = counts.get(slot.state, 0) + 1
    return counts
