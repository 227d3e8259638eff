"""What the web pages read that the API answers no other way: each job's last runs (the
strip on the jobs page), the runs a run caused, the runs of a time window (the timeline),
the manifest versions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from headwater.core.states import LIVE
from headwater.store.base import StoreBase
from headwater.store.models import DbtCloudWatch, Job, ManifestVersion, Run

R = Run.__table__
J = Job.__table__
M = ManifestVersion.__table__
W = DbtCloudWatch.__table__

STRIP_COLUMNS = (R.c.id, R.c.job_id, R.c.number, R.c.status, R.c.created_at)


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
        self, ws_id: str, start: datetime, end: datetime, limit: int = 20_000
    ) -> list[dict[str, Any]]:
        """Runs that overlap `[start, end)`, with their job: the timeline. Two index ranges:
        runs created in the window (or a day before it), and runs still live."""
        cols = (
            R.c.id,
            R.c.number,
            R.c.status,
            R.c.created_at,
            R.c.started_at,
            R.c.finished_at,
            J.c.job_ref,
        )
        recent = (
            select(*cols)
            .join(J, J.c.id == R.c.job_id)
            .where(
                R.c.workspace_id == ws_id,
                R.c.created_at >= start - timedelta(days=1),
                R.c.created_at < end,
                R.c.status != "skipped",
            )
            .order_by(R.c.created_at.desc())
            .limit(limit)
        )
        live = (
            select(*cols)
            .join(J, J.c.id == R.c.job_id)
            .where(R.c.workspace_id == ws_id, R.c.status.in_([s.value for s in LIVE]))
        )
        rows = {r["id"]: r for r in self._all(recent)}
        rows.update((r["id"], r) for r in self._all(live))
        return [r for r in rows.values() if r["finished_at"] is None or r["finished_at"] >= start]

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
