"""Remote workers' leases, liveness and pool capacity. Pure.

With `--executor celery` a run's attempt is held by a lease in the store: the server
sets one when it dispatches the run (not yet taken: when it runs out, the dispatch is
sent again), the worker that takes the run renews it with every heartbeat, and a lease
that runs out means the worker is lost (killed, frozen, cut off): the run fails with
reason `worker lost`, or is retried as its job says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from headwater.core import retries

LEASE_S = 15.0
"""How long an attempt's lease lasts without a renewal."""
HEARTBEATS_PER_LEASE = 3
"""A worker renews its leases this many times per lease period: one lost heartbeat
(a slow query, a pause) never costs a run."""
DEFAULT_POOL = "default"
WORKER_LOST = retries.WORKER_LOST


def lease_until(now: datetime, lease_s: float = LEASE_S) -> datetime:
    return now + timedelta(seconds=lease_s)


def heartbeat_every(lease_s: float = LEASE_S) -> float:
    return lease_s / HEARTBEATS_PER_LEASE


@dataclass(frozen=True)
class WorkerState:
    """What the store knows of one worker."""

    name: str
    pools: tuple[str, ...]
    slots: int
    in_use: int
    heartbeat_at: datetime
    stopped_at: datetime | None = None

    def is_live(self, now: datetime, lease_s: float = LEASE_S) -> bool:
        """Heard from within a lease period and not stopped."""
        return self.stopped_at is None and now - self.heartbeat_at <= timedelta(seconds=lease_s)


def pool_capacity(
    workers: Iterable[WorkerState],
    load: Mapping[str, int],
    now: datetime,
    lease_s: float = LEASE_S,
) -> dict[str, int]:
    """Free slots per pool that a live worker serves: its live workers' slots less the
    pool's runs already dispatched or running (`load`). A worker serving several pools
    counts in each: its Celery consumer takes no more than its slots whatever was sent,
    so the surplus only waits in the broker."""
    slots: dict[str, int] = {}
    for w in workers:
        if w.is_live(now, lease_s):
            for pool in w.pools:
                slots[pool] = slots.get(pool, 0) + w.slots
    return {pool: max(0, n - load.get(pool, 0)) for pool, n in slots.items()}


def pool_wait_reason(pool: str, capacity: Mapping[str, int]) -> str | None:
    """Why a pending run of `pool` is not dispatched now; None: it may be."""
    if pool not in capacity:
        return (
            f"waiting for a worker: no live worker serves pool {pool!r}"
            f" (start one with `headwater worker --pool {pool}`)"
        )
    if capacity[pool] <= 0:
        return f"waiting for a free slot in pool {pool!r}: every live worker's slots are in use"
    return None


def pool_of(settings: Mapping[str, Any], job_def: Mapping[str, Any]) -> str:
    """The pool a job's runs go to: `pool` of headwater.toml, else dlt's
    `require.instance`, else the default pool."""
    pool = settings.get("pool")
    if not pool:
        require = job_def.get("require") or {}
        pool = require.get("instance") if isinstance(require, dict) else None
    return str(pool) if pool else DEFAULT_POOL
