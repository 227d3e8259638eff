"""The server's side of remote workers (`--executor celery`): dispatch and leases.

In place of the local coordinator: it claims pending runs while a pool has free slots
on live workers (the same claim, pipeline and lock rules as a local worker's; the run
takes `starting` with a dispatch lease and no worker yet) and publishes each on its
pool's Celery queue. Each turn it also looks at the leases that ran out:
- dispatched, never taken (the message was lost, or the broker was down): sent again;
- dispatched, then cancelled before a worker took it: cancelled;
- taken, and its worker stopped renewing (killed, frozen, cut off): `worker lost`,
  failed or retried as its job says, fenced so the worker's late word changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from headwater.core import leases
from headwater.core.states import RunStatus
from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.sql import utcnow
from headwater.store.store import Store
from headwater.worker.recovery import end_lost_run

log = logging.getLogger(__name__)

Publish = Callable[[str, int, str], None]
"""Send one run's dispatch: (run id, attempt, pool); raises when the broker refuses."""

DISPATCH_LEASES = 2
"""A dispatched run no worker took is sent again after this many lease periods."""


class RemoteDispatcher:
    def __init__(
        self,
        store: Store,
        publish: Publish,
        *,
        lease_s: float = leases.LEASE_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.publish = publish
        self.lease_s = lease_s
        self.clock = clock
        self._next_reap = 0.0
        self._loop = SupervisedLoop(
            "remote-dispatcher",
            self.run_once,
            time.monotonic,
            TopicWake(store.notifier, notify.RUNS),
            period=leases.heartbeat_every(lease_s),
            error_wait=1.0,
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)

    def run_once(self, mono: float) -> float:
        now = self.clock()
        if mono >= self._next_reap:
            self._next_reap = mono + leases.heartbeat_every(self.lease_s) / 2
            self.reap(now)
        return self.dispatch(now)

    def dispatch(self, now: datetime) -> float:
        """Claim what the pools' free slots allow and publish it; answers how long to wait
        for a wake-up before the next turn."""
        capacity = self.store.pool_capacity(now, self.lease_s)
        until = leases.lease_until(now, DISPATCH_LEASES * self.lease_s)
        runs = self.store.claim_many(
            None, max(1, sum(capacity.values())), now, pools=capacity, lease_until=until
        )
        for run in runs:
            self._send(run["id"], int(run["attempt"]), run.get("pool") or leases.DEFAULT_POOL)
        # a worker's heartbeat frees nothing it tells us of: look again within a beat
        return 0 if runs else leases.heartbeat_every(self.lease_s)

    def reap(self, now: datetime) -> None:
        for run in self.store.expired_leases(now):
            attempt = int(run.get("attempt") or 1)
            if run["worker_id"] is None:
                if run["status"] == RunStatus.STARTING.value:
                    if self.store.redispatch(
                        run["id"], attempt, lease_s=DISPATCH_LEASES * self.lease_s, now=now
                    ):
                        log.warning(
                            "run %s: no worker took its dispatch; sending it again", run["id"]
                        )
                        self._send(run["id"], attempt, run.get("pool") or leases.DEFAULT_POOL)
                else:  # cancelled before any worker took it
                    self.store.transition(
                        run["id"], RunStatus.CANCELLED, reason=run.get("reason") or "cancelled"
                    )
                continue
            why = (
                f"{leases.WORKER_LOST}: worker {run['worker_id']} stopped renewing the run's lease"
                f" (it ran out at {run['lease_expires_at']:%H:%M:%S} UTC)"
            )
            if end_lost_run(self.store, run, why, fenced=True):
                log.warning("run %s: %s", run["id"], why)

    def _send(self, run_id: str, attempt: int, pool: str) -> None:
        try:
            self.publish(run_id, attempt, pool)
        except Exception as ex:  # the broker is down: the dispatch lease sends it again
            log.error("could not send run %s to pool %r: %s", run_id, pool, ex)
