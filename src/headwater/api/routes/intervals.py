"""Headwater's own: a job's intervals, and backfills (create, list, show, cancel)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import ApiError
from headwater.core.access import Action
from headwater.store import notify
from headwater.workspace.interval_reports import (
    BackfillError,
    backfill_report,
    interval_report,
    plan_backfill,
    slot_view,
)
from headwater.workspace.launch import refresh_jobs


class BackfillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: datetime = Field(description="First instant (ISO; a date alone is midnight UTC)")
    end: datetime = Field(description="End instant, exclusive; clamped to the last elapsed tick")
    dry_run: bool = False
    refresh: bool = Field(
        default=False,
        description="Clear the job's completed intervals (and cascade) and reload from start",
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["headwater"], route_class=JSONRoute)
    store = ctx.store

    @r.get("/api/v1/workspaces/{ws}/jobs/{job_id}/intervals")
    def job_intervals(
        ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.SEE_JOBS))
    ) -> Any:
        """The job's intervals: watermark, next due, running, failed; freshness; deadline."""
        job = ctx.job(ws, job_id)
        try:
            return interval_report(store, job, datetime.now(UTC))
        except ValueError as ex:
            raise ApiError(400, str(ex), "invalid_interval") from ex

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-backfill")
    async def create_backfill(
        ws: str,
        job_id: str,
        body: BackfillRequest,
        p: Principal = Depends(auth.require(Action.ADMIN)),
    ) -> Any:
        """Run the job's missing intervals in `[start, end)`, in order; covered ones are
        skipped. The server goes on with it whatever becomes of the caller."""
        job = ctx.job(ws, job_id)
        if job["is_archived"]:
            raise ApiError(400, "an archived job cannot be backfilled", "job_archived")
        now = datetime.now(UTC)
        start, end = _utc(body.start), _utc(body.end)
        try:
            basis, slots = await run_in_threadpool(plan_backfill, store, job, start, end, now)
        except BackfillError as ex:
            raise ApiError(400, str(ex), ex.code) from ex
        actual_end = slots[-1].interval[1]
        if body.dry_run:
            return {
                "dry_run": True,
                "job_id": job["id"],
                "job_ref": job["job_ref"],
                "start": slots[0].interval[0].isoformat(),
                "end": actual_end.isoformat(),
                "mode": basis.mode,
                "refresh": body.refresh,
                "intervals": [slot_view(s) for s in slots],
            }

        def create() -> dict[str, Any]:
            refreshed = refresh_jobs(store, job, now) if body.refresh else []
            row = store.create_backfill(
                job, start, actual_end, refresh=body.refresh, created_by=p.key_id, now=now
            )
            out = backfill_report(store, {**row, "job_ref": job["job_ref"]})
            out["refreshed_downstream"] = refreshed
            return out

        return await run_in_threadpool(create)

    @r.get("/api/v1/workspaces/{ws}/backfills")
    def list_backfills(
        ws: str,
        job_id: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        _p: Principal = Depends(auth.require(Action.SEE_JOBS)),
    ) -> Any:
        ctx.check_ws(ws)
        rows = store.list_backfills(ws, job_id=job_id, limit=limit)
        return {"items": [backfill_report(store, b) for b in rows]}

    @r.get("/api/v1/workspaces/{ws}/backfills/{ref}")
    def get_backfill(
        ws: str, ref: str, _p: Principal = Depends(auth.require(Action.SEE_JOBS))
    ) -> Any:
        return backfill_report(store, _backfill(ws, ref))

    @r.post("/api/v1/workspaces/{ws}/backfills/{ref}/-cancel")
    def cancel_backfill(
        ws: str, ref: str, _p: Principal = Depends(auth.require(Action.ADMIN))
    ) -> Any:
        """No interval starts any more; the backfill's active runs are cancelled."""
        backfill = _backfill(ws, ref)
        if backfill["status"] == "running":
            store.cancel_backfill(backfill, "backfill cancelled by request")
            store.notifier.notify(notify.EVENTS)
        return backfill_report(store, _backfill(ws, ref))

    def _backfill(ws: str, ref: str) -> dict[str, Any]:
        ctx.check_ws(ws)
        found = store.get_backfill(ws, ref)
        if found is None:
            raise ApiError(404, f"no backfill {ref!r} in this workspace", "backfill_not_found")
        return found

    return r
