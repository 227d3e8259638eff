"""The timer of debounced jobs (`run_interval` in headwater.toml): it fires each scheduled
fire when it is due, lands fires whose run has started (firing a queued follow-up), and at
start applies R1 (`trigger_on_start`) and R6 (a pending fire restored).

A scheduled fire is read from the store as a wall time, and waited for on the monotonic
clock from the moment this loop first sees it: a wall-clock jump or a DST change never
moves it (R7).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from headwater.core import debounce
from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace.launch import carry_out, run_interval

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0
IN_FLIGHT_WAIT_S = 1.0
"""A run starting wakes nobody: while a fire is in flight, look again this often."""


class Debouncer:
    def __init__(
        self,
        store: Store,
        ws_id: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.clock = clock
        self.monotonic = monotonic
        self._deadlines: dict[str, tuple[datetime, float]] = {}
        """Job id -> (the due wall time as read, when it is due on the monotonic clock)."""
        self._started: set[str] = set()
        """Jobs whose start (R1/R6) was applied in this process."""
        # new runs and ended ones wake it; a fire in flight is looked at every second
        self._loop = SupervisedLoop(
            "debouncer",
            self._step,
            clock,
            TopicWake(store.notifier, notify.RUNS),
            period=MAX_WAIT_S,
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def run_once(self, now: datetime | None = None) -> float:
        """One turn: start new debounced jobs, land fires, fire what is due. Answers the
        seconds until the next scheduled fire (at most MAX_WAIT_S)."""
        now = now or self.clock()
        mono = self.monotonic()
        wait = MAX_WAIT_S
        jobs = [j for j in self.store.active_jobs_cached(self.ws_id) if run_interval(j) is not None]
        if not jobs:
            return wait
        states = self.store.debounce_states([j["id"] for j in jobs])
        for job in jobs:
            interval = run_interval(job)
            assert interval is not None
            t = now.timestamp()
            if job["id"] not in self._started:
                self._started.add(job["id"])
                on_start = (job.get("settings") or {}).get("trigger_on_start", True)
                self._apply(
                    job,
                    now,
                    interval,
                    partial(debounce.start, now=t, interval=interval, trigger_on_start=on_start),
                )
                continue
            state = states.get(job["id"])
            if state is None:
                continue
            if state["in_flight"]:
                # lands it if its run has started; a follow-up may fire
                self._apply(job, now, interval, lambda s: debounce.Step(s, debounce.Action.WAIT))
                wait = min(wait, IN_FLIGHT_WAIT_S)
            due = state["due_at"]
            if due is None:
                self._deadlines.pop(job["id"], None)
                continue
            seen = self._deadlines.get(job["id"])
            if seen is None or seen[0] != due:
                seen = (due, mono + max(0.0, (due - now).total_seconds()))
                self._deadlines[job["id"]] = seen
            left = seen[1] - mono
            if left > 0:
                wait = min(wait, left)
                continue
            # due on the monotonic clock: tick at the due time or later on the wall clock
            at = max(now, due).timestamp()
            self._deadlines.pop(job["id"], None)
            self._apply(job, max(now, due), interval, partial(debounce.tick, now=at))
        return wait

    def _apply(
        self,
        job: dict[str, Any],
        now: datetime,
        interval: float,
        decide: Callable[[debounce.DebounceState], debounce.Step],
    ) -> None:
        out = self.store.debounce_step(job["id"], now, interval, decide)
        if out.step.action is debounce.Action.FIRE:
            result = carry_out(self.store, job, out, now, interval)
            run = result.run
            log.info(
                "%s debounced fire %s: %s",
                job["job_ref"],
                out.fire_count,
                f"run {run['number']}" if run else result.decision.status.value,
            )

    def _step(self, now: datetime) -> float:
        return self.run_once(now) + 0.001
