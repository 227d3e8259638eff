"""Intervals of jobs: the runs that cover them, refreshes that clear them, backfills,
jobs waiting for fresh upstreams, and runs that missed their `deliver.deadline`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update

from headwater.core.states import ACTIVE, RunStatus
from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import Backfill, FreshnessWait, Job, Run
from headwater.store.sql import new_id, row_dict, utcnow

R = Run.__table__
J = Job.__table__
B = Backfill.__table__
F = FreshnessWait.__table__

DEADLINE_LOOKBACK = timedelta(days=7)
"""Deadlines older than this are not looked at again (a server down for longer misses
their events rather than raising a flood of them)."""

INTERVAL_RUNS = (
    select(
        R.c.id,
        R.c.number,
        R.c.status,
        R.c.trigger,
        R.c.interval_start,
        R.c.interval_end,
        R.c.created_at,
        R.c.finished_at,
        R.c.reason,
        R.c.backfill_id,
        R.c.refresh,
    )
    .where(R.c.job_id == bindparam("b_job_id"), R.c.interval_start.is_not(None))
    .order_by(R.c.created_at, R.c.number)
)
LAST_COMPLETED = (
    select(R.c.job_id, func.max(func.coalesce(R.c.interval_end, R.c.finished_at)).label("last"))
    .join(J, J.c.id == R.c.job_id)
    .where(
        R.c.job_id.in_(bindparam("b_job_ids", expanding=True)),
        R.c.status == RunStatus.COMPLETED.value,
        or_(J.c.intervals_reset_at.is_(None), R.c.created_at >= J.c.intervals_reset_at),
    )
    .group_by(R.c.job_id)
)
RUNS_SINCE = select(func.count()).where(
    R.c.job_id == bindparam("b_job_id"), R.c.created_at >= bindparam("b_since")
)
RESET_OF = select(J.c.intervals_reset_at).where(J.c.id == bindparam("b_job_id"))

MISSED = (
    select(
        R.c.id, R.c.workspace_id, R.c.job_id, R.c.number, R.c.status, R.c.deadline_at, J.c.job_ref
    )
    .join(J, J.c.id == R.c.job_id)
    .where(
        R.c.workspace_id == bindparam("b_ws_id"),
        R.c.deadline_at <= bindparam("b_now"),
        R.c.deadline_at >= bindparam("b_since"),
        R.c.deadline_missed_at.is_(None),
        R.c.status != RunStatus.SKIPPED.value,
        ~and_(
            R.c.status == RunStatus.COMPLETED.value,
            R.c.finished_at <= R.c.deadline_at,
        ),
    )
)
NEXT_DEADLINE = select(func.min(R.c.deadline_at)).where(
    R.c.workspace_id == bindparam("b_ws_id"),
    R.c.deadline_at > bindparam("b_now"),
    R.c.deadline_missed_at.is_(None),
    R.c.status.in_([s.value for s in ACTIVE]),
)
MARK_MISSED = (
    update(R)
    .where(R.c.id == bindparam("b_id"), R.c.deadline_missed_at.is_(None))
    .values(deadline_missed_at=bindparam("b_now"))
)
MISSED_OF_JOBS = (
    select(R.c.job_id, func.max(R.c.deadline_missed_at).label("missed"))
    .where(R.c.job_id.in_(bindparam("b_job_ids", expanding=True)))
    .group_by(R.c.job_id)
)


class Intervals(StoreBase):
    # -- what runs cover ------------------------------------------------------------------------

    def interval_runs(self, job_id: str) -> tuple[list[dict[str, Any]], datetime | None]:
        """Every run of the job that had an interval, oldest first, and when the job's
        completed intervals were last cleared (a refresh)."""
        with self.reader.connect() as conn:
            reset = conn.execute(RESET_OF, {"b_job_id": job_id}).scalar()
            runs = [dict(r._mapping) for r in conn.execute(INTERVAL_RUNS, {"b_job_id": job_id})]
        return runs, reset

    def last_completed(self, job_ids: Sequence[str]) -> dict[str, datetime | None]:
        """Each job's last completed interval end (its finish, for a run without an
        interval), since its last refresh: what freshness is judged on."""
        if not job_ids:
            return {}
        rows = self._all(LAST_COMPLETED, {"b_job_ids": list(job_ids)})
        found = {r["job_id"]: r["last"] for r in rows}
        return {job_id: found.get(job_id) for job_id in job_ids}

    def first_run_since_reset(self, job_id: str) -> bool:
        """The job's completed intervals were cleared and no run was made since: its next
        run carries the refresh to dlt (a refresh cascaded to it)."""
        with self.reader.connect() as conn:
            reset = conn.execute(RESET_OF, {"b_job_id": job_id}).scalar()
            if reset is None:
                return False
            return not conn.execute(RUNS_SINCE, {"b_job_id": job_id, "b_since": reset}).scalar()

    def reset_intervals(self, jobs: Sequence[dict[str, Any]], now: datetime, *, cause: str) -> None:
        """Clear the completed intervals of `jobs` (a refresh): they run again from their
        declared start, and are not fresh for their downstreams until they do."""
        if not jobs:
            return
        with write(self.engine) as conn:
            for job in jobs:
                conn.execute(update(J).where(J.c.id == job["id"]).values(intervals_reset_at=now))
                self._event(
                    conn,
                    job["workspace_id"],
                    "intervals.reset",
                    job_id=job["id"],
                    payload={"job_ref": job["job_ref"], "cause": cause},
                    now=now,
                )
        self.notifier.notify(notify.JOBS, notify.EVENTS)

    # -- backfills ------------------------------------------------------------------------------

    def create_backfill(
        self,
        job: dict[str, Any],
        start: datetime,
        end: datetime,
        *,
        refresh: bool,
        created_by: str | None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        now = now or utcnow()
        with write(self.engine) as conn:
            number = (
                conn.execute(
                    select(func.max(B.c.number)).where(B.c.workspace_id == job["workspace_id"])
                ).scalar()
                or 0
            ) + 1
            row = dict(
                id=new_id(),
                workspace_id=job["workspace_id"],
                job_id=job["id"],
                number=number,
                start_at=start,
                end_at=end,
                refresh=refresh,
                status="running",
                reason=None,
                created_by=created_by,
                created_at=now,
                updated_at=now,
                finished_at=None,
            )
            conn.execute(insert(B), row)
            self._event(
                conn,
                job["workspace_id"],
                "backfill.created",
                job_id=job["id"],
                payload={
                    "backfill": number,
                    "job_ref": job["job_ref"],
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "refresh": refresh,
                },
                now=now,
            )
        self.notifier.notify(notify.EVENTS)
        return row

    def get_backfill(self, ws_id: str, ref: str) -> dict[str, Any] | None:
        """A backfill by id or number."""
        cond = B.c.id == ref
        if ref.isdigit():
            cond = or_(cond, B.c.number == int(ref))
        return self._one(
            select(B, J.c.job_ref)
            .join(J, J.c.id == B.c.job_id)
            .where(B.c.workspace_id == ws_id, cond),
            {},
        )

    def list_backfills(
        self, ws_id: str, *, job_id: str | None = None, running: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        stmt = select(B, J.c.job_ref).join(J, J.c.id == B.c.job_id).where(B.c.workspace_id == ws_id)
        if job_id is not None:
            stmt = stmt.where(B.c.job_id == job_id)
        if running:
            stmt = stmt.where(B.c.status == "running")
        return self._all(stmt.order_by(B.c.number.desc()).limit(limit))

    def backfill_runs(self, backfill_id: str) -> list[dict[str, Any]]:
        return self._all(
            select(R).where(R.c.backfill_id == backfill_id).order_by(R.c.created_at, R.c.number)
        )

    def finish_backfill(
        self, backfill: dict[str, Any], status: str, reason: str | None, now: datetime
    ) -> bool:
        """End a running backfill; False when it had ended already."""
        with write(self.engine) as conn:
            done = conn.execute(
                update(B)
                .where(B.c.id == backfill["id"], B.c.status == "running")
                .values(status=status, reason=reason, updated_at=now, finished_at=now)
            ).rowcount
            if done:
                self._event(
                    conn,
                    backfill["workspace_id"],
                    f"backfill.{status}",
                    job_id=backfill["job_id"],
                    payload={
                        "backfill": backfill["number"],
                        "job_ref": backfill.get("job_ref"),
                        "reason": reason,
                    },
                    now=now,
                )
        if done:
            self.notifier.notify(notify.EVENTS)
        return bool(done)

    def cancel_backfill(self, backfill: dict[str, Any], reason: str) -> list[dict[str, Any]]:
        """Stop a backfill: no interval starts any more, its active runs are cancelled."""
        self.finish_backfill(backfill, "cancelled", reason, utcnow())
        cancelled = []
        for run in self.backfill_runs(backfill["id"]):
            if RunStatus(run["status"]) in ACTIVE:
                if done := self.request_cancel(run["id"], reason):  # type: ignore[attr-defined]
                    cancelled.append(done)
        return cancelled

    # -- freshness waits ------------------------------------------------------------------------

    def wait_for_freshness(
        self, job_id: str, request: dict[str, Any], reasons: list[str], now: datetime
    ) -> dict[str, Any]:
        """Keep a trigger whose upstreams are not fresh: it fires when they are. A job has
        one such wait; a later trigger updates what it asks, the wait keeps its start."""
        with write(self.engine) as conn:
            current = row_dict(conn.execute(select(F).where(F.c.job_id == job_id)).first())
            if current is None:
                current = dict(job_id=job_id, request=request, reasons=reasons, since=now)
                conn.execute(insert(F), current)
            else:
                conn.execute(
                    update(F).where(F.c.job_id == job_id).values(request=request, reasons=reasons)
                )
                current = {**current, "request": request, "reasons": reasons}
        return current

    def freshness_waits(self, ws_id: str) -> list[dict[str, Any]]:
        return self._all(select(F).join(J, J.c.id == F.c.job_id).where(J.c.workspace_id == ws_id))

    def end_freshness_wait(self, job_id: str) -> None:
        with write(self.engine) as conn:
            conn.execute(F.delete().where(F.c.job_id == job_id))

    # -- deliver deadlines ----------------------------------------------------------------------

    def raise_missed_deadlines(self, ws_id: str, now: datetime) -> list[dict[str, Any]]:
        """Mark the runs whose deadline passed before they completed, each with one
        `deadline.missed` event (automations act on it)."""
        params = {"b_ws_id": ws_id, "b_now": now, "b_since": now - DEADLINE_LOOKBACK}
        missed = self._all(MISSED, params)
        marked: list[dict[str, Any]] = []
        if not missed:
            return marked
        with write(self.engine) as conn:
            for run in missed:
                if conn.execute(MARK_MISSED, {"b_id": run["id"], "b_now": now}).rowcount:
                    self._event(
                        conn,
                        ws_id,
                        "deadline.missed",
                        job_id=run["job_id"],
                        run_id=run["id"],
                        payload={
                            "job_ref": run["job_ref"],
                            "number": run["number"],
                            "status": run["status"],
                            "deadline_at": run["deadline_at"].isoformat(),
                        },
                        now=now,
                    )
                    marked.append(run)
        self.notifier.notify(notify.EVENTS)
        return marked

    def next_deadline(self, ws_id: str, now: datetime) -> datetime | None:
        with self.reader.connect() as conn:
            value = conn.execute(NEXT_DEADLINE, {"b_ws_id": ws_id, "b_now": now}).scalar()
        return value  # type: ignore[no-any-return]

    def deadlines_missed(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        """Each job's newest missed deadline (jobs that never missed one are absent)."""
        if not job_ids:
            return {}
        rows = self._all(MISSED_OF_JOBS, {"b_job_ids": list(job_ids)})
        return {r["job_id"]: r["missed"] for r in rows if r["missed"] is not None}
