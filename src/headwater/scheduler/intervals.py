"""The interval planner: what moves without a tick.

- Interval jobs catch up: whenever an interval job has open intervals and room (one at a
  time in sequential mode), the next ones start, in order, so after downtime a job runs
  every missed interval, not only the newest. A failed interval waits for the next tick.
- Backfills run their intervals, respecting the job's mode and concurrency, and end
  `completed` or `failed` (a sequential backfill stops at a failed interval).
- Triggers that waited for fresh upstreams (`skipped_upstream_pending`) fire once fresh.
- Runs past their `deliver.deadline` raise `deadline.missed`.

It wakes on every event (a run ending is one) and at the next deadline; its state is
the store's, so a restart resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from headwater.core import intervals as core_intervals
from headwater.core.policy import is_served
from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace import intervals
from headwater.workspace.interval_reports import backfill_view
from headwater.workspace.launch import (
    fire,
    fire_next_intervals,
    run_request,
    stale_reasons,
)
from headwater.workspace.triggers import concurrency_of, manual_trigger

log = logging.getLogger(__name__)

MAX_SLEEP_S = 30.0


def schedule_trigger(job_def: dict[str, Any], cron: str) -> str:
    """The job's `schedule:` trigger whose cron cuts its intervals (as the manifest wrote it)."""
    for trigger in job_def.get("triggers") or []:
        if str(trigger).startswith("schedule:"):
            return str(trigger)
    return f"schedule:{cron}"


class IntervalPlanner:
    def __init__(
        self, store: Store, ws_id: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.clock = clock
        self._loop = SupervisedLoop(
            "intervals",
            self._step,
            clock,
            TopicWake(store.notifier, notify.EVENTS),
            period=MAX_SLEEP_S,
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _step(self, now: datetime) -> float:
        nxt = self.run_once(now)
        if nxt is None:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (nxt - self.clock()).total_seconds()) + 0.001)

    def run_once(self, now: datetime) -> datetime | None:
        """One pass at `now`; answers when the next deadline falls due (None: none)."""
        jobs = self.store.active_jobs_cached(self.ws_id)
        for job in jobs:
            try:
                self.catch_up(job, now)
            except Exception:
                log.exception("intervals of %s", job["job_ref"])
        for backfill in self.store.list_backfills(self.ws_id, running=True):
            try:
                self.advance_backfill(backfill, now)
            except Exception:
                log.exception("backfill %s", backfill["number"])
        self.fire_fresh(jobs, now)
        for run in self.store.raise_missed_deadlines(self.ws_id, now):
            log.warning(
                "run %s of %s missed its deadline %s",
                run["number"],
                run["job_ref"],
                run["deadline_at"].isoformat(),
            )
        return self.store.next_deadline(self.ws_id, now)

    # -- interval jobs ----------------------------------------------------------------------

    def catch_up(self, job: dict[str, Any], now: datetime) -> None:
        """Start the interval job's next open intervals when it has room and is fresh."""
        basis = intervals.interval_job(job["definition"])
        if basis is None or job["is_paused"] or not is_served(job["job_type"]):
            return
        if stale_reasons(self.store, job, now):
            return  # the upstreams' completions wake this loop again
        result = fire_next_intervals(
            self.store,
            job,
            basis,
            schedule_trigger(job["definition"], basis.cron),
            now=now,
            last_tick=basis.last_tick(now),
            refresh=bool(job.get("intervals_reset_at"))
            and self.store.first_run_since_reset(job["id"]),
        )
        if result.run is not None and not result.existing:
            log.info(
                "%s runs interval [%s, %s)",
                job["job_ref"],
                result.run["interval_start"],
                result.run["interval_end"],
            )

    # -- backfills ---------------------------------------------------------------------------

    def advance_backfill(self, backfill: dict[str, Any], now: datetime) -> None:
        job = self.store.get_job(backfill["job_id"])
        basis = intervals.backfill_basis(job["definition"]) if job else None
        if job is None or basis is None or job["is_archived"]:
            self.store.finish_backfill(
                backfill, "failed", "the job is gone, archived or no longer scheduled", now
            )
            return
        view = backfill_view(self.store, backfill, job, basis)
        slots: list[core_intervals.BackfillSlot] = view["slots"]
        outcome = core_intervals.backfill_outcome(slots, basis.mode)
        if outcome is not None:
            failed = [s for s in slots if s.state in ("failed", "cancelled")]
            reason = (
                f"{len(failed)} interval(s) failed, the first"
                f" [{failed[0].interval[0].isoformat()}, {failed[0].interval[1].isoformat()})"
                if failed
                else None
            )
            self.store.finish_backfill(backfill, outcome, reason, now)
            return
        state: core_intervals.IntervalRuns = view["state"]
        todo = core_intervals.backfill_next(
            slots, len(state.active), basis.mode, concurrency_of(job["definition"])
        )
        first = not view["own_runs"]
        # a person asked for the backfill: its runs are manual (a paused schedule does not
        # hold them back) and carry the backfill's id
        trigger = manual_trigger(job["definition"])
        for iv in todo:
            req = run_request(
                job,
                trigger,
                now=now,
                interval=iv,
                refresh=bool(backfill["refresh"]) and first,
                dedupe_key=core_intervals.interval_key(iv[0], state.runs_per_start.get(iv[0], 0)),
                backfill_id=backfill["id"],
                triggered_by=backfill.get("created_by"),
            )
            self.store.create_run(req, now=now)
            first = False

    # -- freshness waits ---------------------------------------------------------------------

    def fire_fresh(self, jobs: list[dict[str, Any]], now: datetime) -> None:
        by_id = {j["id"]: j for j in jobs}
        for wait in self.store.freshness_waits(self.ws_id):
            job = by_id.get(wait["job_id"])
            if job is None:
                self.store.end_freshness_wait(wait["job_id"])
                continue
            if stale_reasons(self.store, job, now):
                continue
            self.store.end_freshness_wait(job["id"])
            asked = dict(wait["request"])
            trigger = asked.pop("trigger")
            result = fire(
                self.store,
                job,
                trigger,
                now=now,
                dedupe_key=f"fresh@{wait['since'].isoformat()}",
                **{k: v for k, v in asked.items() if v is not None},
            )
            log.info(
                "%s: upstreams fresh, fired %s: %s",
                job["job_ref"],
                trigger,
                result.decision.status.value,
            )
