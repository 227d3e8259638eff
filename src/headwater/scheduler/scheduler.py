"""Timed triggers: `schedule:`, `every:` and `once:`.

Each (job, trigger) keeps a cursor, the last tick handled, in the store. An
iteration fires the newest tick in `(cursor, now]` (so a server that was down
runs a missed schedule once, not once per missed tick) with the unique key
`<trigger>@<tick>`, then moves the cursor. A restart between the two finds
the run by its key: a tick becomes one run, exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace import triggers
from headwater.workspace.launch import fire

log = logging.getLogger(__name__)

MAX_SLEEP_S = 30.0


def tick_key(trigger: str, tick: datetime) -> str:
    return f"{trigger}@{tick.astimezone(UTC).isoformat()}"


class Scheduler:
    def __init__(
        self, store: Store, ws_id: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.clock = clock
        # a deploy, pause or resume wakes the loop early: the next tick may have moved
        self._loop = SupervisedLoop(
            "scheduler",
            self._step,
            clock,
            TopicWake(store.notifier, notify.JOBS),
            period=MAX_SLEEP_S,
        )

    def run_once(self, now: datetime) -> datetime | None:
        """Fire what is due at `now`; answers when the next tick is due (None: nothing timed)."""
        cursors = self.store.schedule_cursors()
        soonest: datetime | None = None
        next_runs: dict[str, datetime | None] = {}
        # cursors move together at the end: a crash before that finds each fired tick's
        # run by its key, so a tick still becomes one run
        advances: list[tuple[str, str, datetime]] = []
        for job in self.store.active_jobs(self.ws_id):
            job_def = job["definition"]
            timed = triggers.timed_triggers(job_def)
            tz = triggers.timezone_of(job_def)
            if any(jid == job["id"] and t not in timed for jid, t in cursors):
                # a redeploy removed or changed a timed trigger: forget its cursor
                self.store.drop_schedule(job["id"], keep=timed)
            job_next: datetime | None = None
            for trigger in timed:
                last = cursors.get((job["id"], trigger))
                if last is None:
                    # first sight: schedules start now, nothing is made up for the past
                    advances.append((job["id"], trigger, now))
                    last = now
                if not job["is_paused"]:
                    due = triggers.latest_due_tick(trigger, last, now, tz)
                    if due is not None:
                        result = fire(
                            self.store, job, trigger, now=due, dedupe_key=tick_key(trigger, due)
                        )
                        log.info(
                            "%s fired %s for %s: %s",
                            job["job_ref"],
                            trigger,
                            due.isoformat(),
                            result.decision.status.value,
                        )
                        advances.append((job["id"], trigger, due))
                        last = due
                upcoming = triggers.next_tick(trigger, last, tz)
                if upcoming is not None and (job_next is None or upcoming < job_next):
                    job_next = upcoming
            if job["is_paused"]:
                job_next = None
            if job_next != job["next_run_at"]:
                next_runs[job["id"]] = job_next
            if job_next is not None and (soonest is None or job_next < soonest):
                soonest = job_next
        self.store.advance_schedules(advances)
        self.store.set_next_run(next_runs)
        return soonest

    # -- background loop -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _step(self, now: datetime) -> float:
        """One iteration: the seconds to sleep until the next tick is due."""
        soonest = self.run_once(now)
        if soonest is None:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (soonest - self.clock()).total_seconds()) + 0.001)
