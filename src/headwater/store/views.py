"""What the web pages read that the API answers no other way: each job's last runs (the
strip on the jobs page), the runs a run caused, the runs of a time window (the timeline),
the manifest versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, func, literal, select

from headwater.core.states import RunStatus
from headwater.store.base import StoreBase
from headwater.store.models import DbtCloudWatch, Job, ManifestVersion, Run

R = Run.__table__
J = Job.__table__
M = ManifestVersion.__table__
W = DbtCloudWatch.__table__

STRIP_COLUMNS = (R.c.id, R.c.job_id, R.c.number, R.c.status, R.c.created_at)
TIMELINE_RUNS = 5_000
"""Most runs the timeline draws (a Gantt of more says little and costs the browser)."""


class Views(StoreBase):
    def last_runs_by_job(self, job_ids: Sequence[str], n: int = 20) -> dict[str, list[Any]]:
        """Each job's newest `n` runs (id, number, status, created_at), newest first: runs
        are numbered per job, so these are the numbers above its counter minus `n` (a range
        of the `(job_id, number)` index, whatever the number of runs)."""
        if not job_ids:
            return {}
        stmt = (
            select(*STRIP_COLUMNS)
            .join(J, J.c.id == R.c.job_id)
            .where(R.c.job_id.in_(list(job_ids)), R.c.number > J.c.run_counter - n)
            .order_by(R.c.job_id, R.c.number.desc())
        )
        out: dict[str, list[Any]] = {}
        for row in self._all(stmt):
            out.setdefault(row["job_id"], []).append(row)
        return out

    def caused_runs(self, run_id: str) -> list[dict[str, Any]]:
        """Runs a run triggered (chains name it their previous run), with their job."""
        stmt = (
            select(R, J.c.job_ref)
            .join(J, J.c.id == R.c.job_id)
            .where(R.c.previous_run_id == run_id)
            .order_by(R.c.created_at)
        )
        return self._all(stmt)

    def runs_between(
        self, ws_id: str, start: datetime, end: datetime, limit: int = TIMELINE_RUNS
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """Runs that overlap `[start, end)` (skipped ones aside) as compact rows: (id,
        job_ref, number, status, created, started, finished), each time in milliseconds
        after `start` (negative before it; None: not yet). Answers the rows and whether
        some were left out: past `limit`, the runs that ended first (every run not ended
        yet is kept).

        Two ranges of the index on finished_at: the runs that ended since `start`, newest
        end first, and the runs not ended, however old (a run queued for days shows its
        wait). Times are subtracted in the database: converting thousands of timestamps
        to `datetime` cost more than the query."""
        cols = (
            R.c.id,
            J.c.job_ref,
            R.c.number,
            R.c.status,
            self._ms_after(R.c.created_at, start),
            self._ms_after(R.c.started_at, start),
            self._ms_after(R.c.finished_at, start),
        )
        # SQLite keeps no statistics: it takes an equality for the narrowest term and would
        # read every run of the workspace by (workspace_id, created_at). `|| ''` keeps the
        # workspace out of its index choice (PostgreSQL's planner knows better by itself)
        in_ws = (
            (R.c.workspace_id + "") == ws_id
            if self.engine.dialect.name == "sqlite"
            else R.c.workspace_id == ws_id
        )
        ended = (
            select(*cols)
            .join(J, J.c.id == R.c.job_id)
            .where(in_ws, R.c.finished_at >= start, R.c.status != RunStatus.SKIPPED.value)
            .order_by(R.c.finished_at.desc())
            .limit(limit + 1)
        )
        going = select(*cols).join(J, J.c.id == R.c.job_id).where(in_ws, R.c.finished_at.is_(None))
        window = int((end - start).total_seconds() * 1000)
        with self.reader.connect() as conn:
            rows = [tuple(r) for r in conn.execute(going)]
            done = [tuple(r) for r in conn.execute(ended)]
        more = len(done) > limit
        rows += done[:limit]
        return [r for r in rows if r[4] < window], more

    def _ms_after(self, column: Any, start: datetime) -> ColumnElement[Any]:
        """`column - start` in whole milliseconds, in the database's own arithmetic."""
        at = literal(start, R.c.created_at.type)
        if self.engine.dialect.name == "sqlite":
            ms = (func.julianday(column) - func.julianday(at)) * 86_400_000.0
        else:
            ms = func.extract("epoch", column - at) * 1000
        return cast(func.round(ms), Integer)

    def manifest_versions(self, ws_id: str, limit: int = 50) -> list[dict[str, Any]]:
        stmt = (
            select(M.c.version, M.c.hash, M.c.created_at, M.c.warnings, M.c.code_package_id)
            .where(M.c.workspace_id == ws_id)
            .order_by(M.c.version.desc())
            .limit(limit)
        )
        return self._all(stmt)

    def external_link(self, run_id: str) -> str | None:
        """The run's page in dbt Cloud, for a dbt Cloud job's run."""
        row = self._one(select(W.c.href).where(W.c.run_id == run_id), {})
        return (row or {}).get("href")
