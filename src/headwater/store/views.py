"""What the web pages read that the API answers no other way: each job's last runs (the
strip on the jobs page), the runs a run caused, the runs of a time window (the timeline),
the manifest versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from headwater.store.base import StoreBase
from headwater.store.models import DbtCloudWatch, Job, ManifestVersion, Run

R = Run.__table__
J = Job.__table__
M = ManifestVersion.__table__
W = DbtCloudWatch.__table__

STRIP_COLUMNS = (R.c.id, R.c.job_id, R.c.number, R.c.status, R.c.created_at)


class Views(StoreBase):
    def last_runs_by_job(self, job_ids: Sequence[str], n: int = 20) -> dict[str, list[Any]]:
        """Each job's newest `n` runs (id, number, status, created_at), newest first: one
        query, a window over the runs of those jobs."""
        if not job_ids:
            return {}
        ranked = (
            select(
                *STRIP_COLUMNS,
                func.row_number()
                .over(partition_by=R.c.job_id, order_by=(R.c.created_at.desc(), R.c.number.desc()))
                .label("rank"),
            )
            .where(R.c.job_id.in_(list(job_ids)))
            .subquery()
        )
        stmt = select(ranked).where(ranked.c.rank <= n).order_by(ranked.c.job_id, ranked.c.rank)
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
        self, ws_id: str, start: datetime, end: datetime, limit: int = 5000
    ) -> list[dict[str, Any]]:
        """Runs that overlap `[start, end)` (started before its end, not finished before its
        start), with their job: the timeline."""
        stmt = (
            select(
                R.c.id,
                R.c.number,
                R.c.status,
                R.c.created_at,
                R.c.started_at,
                R.c.finished_at,
                J.c.job_ref,
            )
            .join(J, J.c.id == R.c.job_id)
            .where(
                R.c.workspace_id == ws_id,
                R.c.created_at < end,
                (R.c.finished_at.is_(None)) | (R.c.finished_at >= start),
                R.c.status != "skipped",
            )
            .order_by(R.c.created_at.desc())
            .limit(limit)
        )
        return self._all(stmt)

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
