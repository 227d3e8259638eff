"""What `/metrics` reads of the store at each scrape: runs by job and outcome, run
durations and schedule delays as histogram buckets, the queue, active runs. Read from the
database, so one scrape answers for the whole server, however many processes serve it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func, select

from headwater.core.states import LIVE, RunStatus
from headwater.store.base import StoreBase
from headwater.store.models import Job, Run

R = Run.__table__
J = Job.__table__

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics(StoreBase):
    def _seconds(self, start: Any, end: Any) -> ColumnElement[Any]:
        """`end - start` in seconds, in the database's own arithmetic."""
        if self.engine.dialect.name == "sqlite":
            return (func.julianday(end) - func.julianday(start)) * 86400.0
        return cast(func.extract("epoch", end - start), Float)

    def run_counts(self, ws_id: str) -> list[dict[str, Any]]:
        """Runs by job and status (terminal and live), and how many ever started."""
        stmt = (
            select(
                J.c.job_ref,
                R.c.status,
                func.count().label("n"),
                func.count(R.c.started_at).label("started"),
            )
            .join(J, J.c.id == R.c.job_id)
            .where(R.c.workspace_id == ws_id)
            .group_by(J.c.job_ref, R.c.status)
        )
        return self._all(stmt)

    def histogram(self, ws_id: str, what: str, bounds: Sequence[float]) -> list[dict[str, Any]]:
        """Per job: how many runs fall under each bound, their count and sum. `what` is
        `duration` (started to finished, ended runs) or `schedule_delay` (tick to start,
        runs of `schedule:`/`every:` triggers, which are created at their tick)."""
        if what == "duration":
            seconds = self._seconds(R.c.started_at, R.c.finished_at)
            where = [R.c.started_at.is_not(None), R.c.finished_at.is_not(None)]
        else:
            seconds = self._seconds(R.c.created_at, R.c.started_at)
            where = [
                R.c.started_at.is_not(None),
                R.c.trigger.like("schedule:%") | R.c.trigger.like("every:%"),
            ]
        cols = [
            func.sum(case((seconds <= b, 1), else_=0)).label(f"le_{i}")
            for i, b in enumerate(bounds)
        ]
        stmt = (
            select(J.c.job_ref, func.count().label("count"), func.sum(seconds).label("sum"), *cols)
            .join(J, J.c.id == R.c.job_id)
            .where(R.c.workspace_id == ws_id, *where)
            .group_by(J.c.job_ref)
        )
        return self._all(stmt)

    def queue(self, ws_id: str) -> tuple[int, datetime | None]:
        """Pending runs, and when the oldest of them was created."""
        stmt = select(func.count(), func.min(R.c.created_at)).where(
            R.c.workspace_id == ws_id, R.c.status == RunStatus.PENDING.value
        )
        with self.reader.connect() as conn:
            n, oldest = conn.execute(stmt).one()
        if isinstance(oldest, str):  # an aggregate skips the column's type on SQLite
            oldest = datetime.fromisoformat(oldest)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return int(n), oldest

    def live_counts(self, ws_id: str) -> list[dict[str, Any]]:
        stmt = (
            select(J.c.job_ref, func.count().label("n"))
            .join(J, J.c.id == R.c.job_id)
            .where(R.c.workspace_id == ws_id, R.c.status.in_([s.value for s in LIVE]))
            .group_by(J.c.job_ref)
        )
        return self._all(stmt)
