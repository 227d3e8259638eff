"""The coordinator: claims pending runs while there is capacity and hands them on.

Capacity is two bounds: `max_parallel` runs at once, and `max_starting` runs in their
start-up window (a flood of triggers would otherwise fork `max_parallel` runs at once, and
their start-up CPU would crowd the API off the cores). Claimed runs go to the supervisor,
which starts and supervises them.
"""

from __future__ import annotations

import logging
import os
import time

from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store
from headwater.worker.supervisor import Supervisor

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
"""With nothing to claim, wait this long for a wake-up (a new run) before looking again."""
FULL_WAIT_S = 0.5
"""At capacity, look again after this long at most (an exit wakes it sooner)."""


class Coordinator:
    def __init__(
        self,
        store: Store,
        supervisor: Supervisor,
        worker_id: str,
        *,
        max_parallel: int = 16,
        max_starting: int | None = None,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.worker_id = worker_id
        self.max_parallel = max_parallel
        # one start per core at a time, by default
        self.max_starting = max_starting or len(os.sched_getaffinity(0))
        self._loop = SupervisedLoop(
            "worker-claimer",
            self.run_once,
            time.monotonic,
            TopicWake(store.notifier, notify.RUNS),
            period=IDLE_WAIT_S,
            error_wait=FULL_WAIT_S,
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)

    def free(self, now: float) -> tuple[int, float | None]:
        """How many runs may start now, and when a start-up slot frees (seconds)."""
        starting, next_leaves = self.supervisor.starting(now)
        free = min(self.max_parallel - self.supervisor.active_count, self.max_starting - starting)
        return free, next_leaves

    def run_once(self, now: float) -> float:
        """Claim what capacity allows and start it; answers how long to wait for a wake-up
        before the next turn (0: at once)."""
        free, next_leaves = self.free(now)
        if free <= 0:
            # an exit wakes this (RUNS); a run leaving its start-up window does not
            return FULL_WAIT_S if next_leaves is None else min(FULL_WAIT_S, max(next_leaves, 0.002))
        # what a turn claims it starts together: one transaction to claim, one to mark them
        # running, whatever their number
        runs = self.store.claim_many(self.worker_id, free)
        if not runs:
            return IDLE_WAIT_S
        self.supervisor.start_runs(runs)
        return 0
