"""Remote workers and the leases of the runs they hold (`--executor celery`).

The store is the one truth: a worker takes a dispatched run with a guarded update (one
worker per attempt, whatever the broker delivered), renews its leases with each heartbeat,
and learns from the heartbeat which runs it no longer holds. The server ends or re-sends
the runs whose lease ran out (`core/leases`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update

from headwater.core import leases
from headwater.core.policy import MONITOR_ID
from headwater.core.states import LIVE, RunStatus
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import Run, WorkerRow
from headwater.store.sql import dialect_insert, utcnow

R = Run.__table__
W = WorkerRow.__table__
LIVE_STATES = [s.value for s in LIVE]

TAKE_RUN = (
    update(R)
    .where(
        R.c.id == bindparam("b_id"),
        R.c.attempt == bindparam("b_attempt"),
        R.c.status == RunStatus.STARTING.value,
        R.c.worker_id.is_(None),
    )
    .returning(*R.c)
)
"""A worker takes a dispatched run: only the attempt dispatched, only once."""
RENEW_LEASE = (
    update(R)
    .where(
        R.c.id == bindparam("b_id"),
        R.c.attempt == bindparam("b_attempt"),
        R.c.worker_id == bindparam("b_worker"),
        R.c.status.in_(LIVE_STATES),
        # a lease that ran out stays lost: the server may be ending the run right now
        R.c.lease_expires_at >= bindparam("b_now"),
    )
    .values(lease_expires_at=bindparam("b_until"))
    .returning(R.c.id)
)
EXPIRED_LEASES = select(R).where(
    R.c.status.in_(LIVE_STATES),
    R.c.lease_expires_at.is_not(None),
    or_(
        R.c.lease_expires_at < bindparam("b_now"),
        # cancelled before a worker took it: nothing will end it but the server
        and_(R.c.status == RunStatus.CANCELLING.value, R.c.worker_id.is_(None)),
    ),
    # dbt Cloud runs hold no lease; said here so they never could be ended as lost
    or_(R.c.worker_id.is_(None), R.c.worker_id != MONITOR_ID),
)
"""Live runs whose lease ran out (dispatched and never taken, or their worker is lost), and
dispatched runs cancelled before any worker took them."""
REDISPATCH = (
    update(R)
    .where(
        R.c.id == bindparam("b_id"),
        R.c.attempt == bindparam("b_attempt"),
        R.c.status == RunStatus.STARTING.value,
        R.c.worker_id.is_(None),
    )
    .values(lease_expires_at=bindparam("b_until"))
    .returning(R.c.id)
)
POOL_LOAD = (
    select(R.c.pool, func.count().label("n"))
    .where(R.c.status.in_(LIVE_STATES), R.c.lease_expires_at.is_not(None))
    .group_by(R.c.pool)
)
"""Runs per pool that hold a slot: dispatched (taken or not) and not yet ended."""
RUNS_STARTED_BY = select(R).where(
    R.c.worker_id == bindparam("b_worker"),
    R.c.pid.is_not(None),
    or_(R.c.status.in_(LIVE_STATES), R.c.finished_at >= bindparam("b_since")),
)


class Workers(StoreBase):
    # -- the worker's side ---------------------------------------------------------------

    def register_worker(
        self,
        name: str,
        *,
        host: str,
        pid: int,
        pools: list[str],
        slots: int,
        now: datetime | None = None,
    ) -> None:
        """A worker starts (or starts again under the same name)."""
        now = now or utcnow()
        values = dict(
            name=name,
            host=host,
            pid=pid,
            pools=list(pools),
            slots=slots,
            in_use=0,
            started_at=now,
            heartbeat_at=now,
            stopped_at=None,
        )
        with write(self.engine) as conn:
            stmt = dialect_insert(conn, W).values(**values)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[W.c.name],
                    set_={k: v for k, v in values.items() if k != "name"},
                )
            )

    def heartbeat(
        self,
        name: str,
        held: list[tuple[str, int]],
        *,
        lease_s: float = leases.LEASE_S,
        now: datetime | None = None,
    ) -> list[str]:
        """Renew the leases of the attempts `held` (run id, attempt) and the worker's
        heartbeat; answers the run ids it no longer holds (their lease ran out and the
        server ended or retried them, or they were never its own)."""
        now = now or utcnow()
        until = leases.lease_until(now, lease_s)
        lost = []
        with write(self.engine) as conn:
            for run_id, attempt in held:
                renewed = conn.execute(
                    RENEW_LEASE,
                    {
                        "b_id": run_id,
                        "b_attempt": attempt,
                        "b_worker": name,
                        "b_until": until,
                        "b_now": now,
                    },
                ).first()
                if renewed is None:
                    lost.append(run_id)
            conn.execute(
                update(W)
                .where(W.c.name == name)
                .values(heartbeat_at=now, in_use=len(held) - len(lost), stopped_at=None)
            )
        return lost

    def worker_stopped(self, name: str, now: datetime | None = None) -> None:
        with write(self.engine) as conn:
            conn.execute(update(W).where(W.c.name == name).values(stopped_at=now or utcnow()))

    def take_run(
        self,
        run_id: str,
        attempt: int,
        worker: str,
        *,
        lease_s: float = leases.LEASE_S,
        now: datetime | None = None,
    ) -> dict[str, Any] | None:
        """Take a dispatched run for `worker`; None when it is not there to take (taken
        by another delivery of the same message, cancelled, or a later attempt)."""
        now = now or utcnow()
        with write(self.engine) as conn:
            row = conn.execute(
                TAKE_RUN.values(
                    worker_id=worker,
                    lease_expires_at=leases.lease_until(now, lease_s),
                    updated_at=now,
                ),
                {"b_id": run_id, "b_attempt": attempt},
            ).first()
        return None if row is None else dict(row._mapping)

    def runs_started_by(self, worker: str, since: datetime) -> list[dict[str, Any]]:
        """Runs `worker` started that are live or ended after `since`: what a worker
        starting again under its name may have left running."""
        return self._all(RUNS_STARTED_BY, {"b_worker": worker, "b_since": since})

    # -- the server's side -----------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        return self._all(select(W).order_by(W.c.name))

    def worker_states(self) -> list[leases.WorkerState]:
        return [
            leases.WorkerState(
                name=w["name"],
                pools=tuple(w["pools"] or ()),
                slots=int(w["slots"]),
                in_use=int(w["in_use"]),
                heartbeat_at=w["heartbeat_at"],
                stopped_at=w["stopped_at"],
            )
            for w in self.workers()
        ]

    def pool_load(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            load: dict[str, int] = {}
            for r in conn.execute(POOL_LOAD):
                pool = r.pool or leases.DEFAULT_POOL
                load[pool] = load.get(pool, 0) + int(r.n)
            return load

    def pool_capacity(
        self, now: datetime | None = None, lease_s: float = leases.LEASE_S
    ) -> dict[str, int]:
        """Free slots per pool a live worker serves."""
        return leases.pool_capacity(
            self.worker_states(), self.pool_load(), now or utcnow(), lease_s
        )

    def expired_leases(self, now: datetime | None = None) -> list[dict[str, Any]]:
        return self._all(EXPIRED_LEASES, {"b_now": now or utcnow()})

    def redispatch(
        self,
        run_id: str,
        attempt: int,
        *,
        lease_s: float = leases.LEASE_S,
        now: datetime | None = None,
    ) -> bool:
        """Extend the lease of a dispatched run no worker took, before sending it again;
        False when a worker took it (or it ended) meanwhile."""
        until = leases.lease_until(now or utcnow(), lease_s)
        with write(self.engine) as conn:
            row = conn.execute(
                REDISPATCH, {"b_id": run_id, "b_attempt": attempt, "b_until": until}
            ).first()
        return row is not None
