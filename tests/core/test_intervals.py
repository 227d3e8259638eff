"""Which open intervals to start: sequential and parallel mode, failures, backfill slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.core.intervals import (
    IntervalRuns,
    Slot,
    backfill_next,
    backfill_outcome,
    backfill_slots,
    plan,
    summarize,
    watermark,
)

T = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def iv(i: int) -> tuple[datetime, datetime]:
    return (T + i * H, T + (i + 1) * H)


def run(i: int, status: str, n: int, reason: str | None = None) -> dict[str, Any]:
    s, e = iv(i)
    return {
        "interval_start": s,
        "interval_end": e,
        "status": status,
        "created_at": T + n * timedelta(minutes=1),
        "finished_at": T + n * timedelta(minutes=1),
        "number": n,
        "reason": reason,
    }


def test_summarize_reads_completed_active_failed_and_keys() -> None:
    runs = [run(0, "completed", 1), run(1, "failed", 2), run(1, "pending", 3), run(2, "failed", 4)]
    s = summarize(runs, None)
    assert s.completed == [iv(0)]
    assert s.active == [iv(1)]
    assert list(s.failed) == [iv(2)]
    assert s.runs_per_start == {iv(0)[0]: 1, iv(1)[0]: 2, iv(2)[0]: 1}


def test_a_reset_forgets_what_ran_before_it_but_keeps_the_keys_unique() -> None:
    s = summarize([run(0, "completed", 1)], reset_at=T + timedelta(minutes=5))
    assert s.completed == [] and s.runs_per_start == {iv(0)[0]: 1}


def test_sequential_starts_one_and_waits_for_a_failed_one_until_the_next_tick() -> None:
    eligible = [iv(0), iv(1), iv(2)]
    assert plan(eligible, IntervalRuns(), "sequential", 1, T) == [iv(0)]
    busy = IntervalRuns(active=[iv(0)])
    assert plan(eligible, busy, "sequential", 5, T) == []
    failed = IntervalRuns(failed={iv(0): T + 5 * H})
    assert plan(eligible, failed, "sequential", 1, last_tick=T + 4 * H) == []
    assert plan(eligible, failed, "sequential", 1, last_tick=T + 6 * H) == [iv(0)]


def test_parallel_fills_concurrency_around_active_and_held_back_intervals() -> None:
    eligible = [iv(i) for i in range(6)]
    state = IntervalRuns(active=[iv(1)], failed={iv(0): T + 9 * H})
    assert plan(eligible, state, "parallel", 3, last_tick=T) == [iv(2), iv(3)]
    assert plan(eligible, state, "parallel", None, last_tick=T) == [iv(i) for i in range(2, 6)]


def test_watermark_stops_at_the_first_gap() -> None:
    assert watermark([iv(0), iv(1), iv(3)], T) == iv(1)[1]
    assert watermark([iv(1)], T) == T


def test_backfill_slots_and_outcome() -> None:
    ivs = [iv(i) for i in range(5)]
    own = [run(1, "completed", 1), run(2, "failed", 2, "runtime lost: gone"), run(3, "failed", 3)]
    state = summarize(own, None)
    slots = backfill_slots(ivs, (T, iv(3)[1]), [iv(0)], state, own)
    assert [s.state for s in slots] == [
        Slot.COVERED,
        Slot.COMPLETED,
        Slot.PENDING,  # lost to a restart: runs again
        Slot.FAILED,
        Slot.OUT,
    ]
    assert backfill_next(slots, 0, "sequential", 1) == [iv(2)]
    assert backfill_next(slots, 0, "parallel", 4) == [iv(2)]
    assert backfill_outcome(slots, "sequential") is None
    done = backfill_slots(
        ivs[:2],
        (None, None),
        [iv(0)],
        summarize([run(1, "completed", 1)], None),
        [run(1, "completed", 1)],
    )
    assert backfill_outcome(done, "sequential") == "completed"
