"""Job runs: list, create, get and cancel."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.idempotency import idempotent_async
from headwater.api.json_route import JSONRoute
from headwater.api.limits import check_parameters
from headwater.api.metrics import TRIGGER_REJECTIONS
from headwater.api.responses import MAX_INT, ApiError
from headwater.core import dbt_results, policy
from headwater.core.access import Action, Scope
from headwater.core.dbt_results import RUN_RESULTS
from headwater.core.states import TERMINAL, RunStatus
from headwater.workspace import triggers
from headwater.workspace.launch import fire_async

MAX_PAGE = 1000


def _aware(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class CreateJobRunRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    job_id: str
    trigger: str = "manual:"
    profile: str | None = None
    refresh: bool = False
    skip_freshness: bool = False
    parameters: dict[str, Any] | None = None


class CancelJobRunsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    job_run_ids: list[str]
    dry_run: bool = False


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["job-runs"], route_class=JSONRoute)
    store = ctx.store

    @r.get("/api/v1/workspaces/{ws}/job-runs")
    def list_runs(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_INT),
        job_id: str | None = None,
        number: int | None = Query(None, ge=0, le=MAX_INT),
        status: list[RunStatus] = Query(default=[]),
        trigger_kind: list[str] = Query(default=[], max_length=20),
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = Query(None, max_length=400),
        p: Principal = Depends(auth.require(Action.READ_RUNS)),
    ) -> Any:
        """Newest first. `cursor` (the previous page's `next_cursor`) pages by key: as fast
        on the thousandth page as on the first, and runs created meanwhile shift nothing."""
        ctx.check_ws(ws)
        after = ser.decode_cursor(cursor) if cursor else None
        runs, total = store.list_runs(
            ws,
            job_id=job_id,
            statuses=[s.value for s in status],
            number=number,
            # a trigger key sees the runs it created
            triggered_by=p.key_id if p.scope is Scope.TRIGGER else None,
            limit=limit + 1,
            offset=offset,
            trigger_kinds=trigger_kind,
            start=_aware(start),
            end=_aware(end),
            after=after,
        )
        more = len(runs) > limit
        runs = runs[:limit]
        jobs: dict[str, dict[str, Any]] = {}
        items = []
        for run in ctx.with_summaries(runs):
            if run["job_id"] not in jobs:
                jobs[run["job_id"]] = store.get_job(run["job_id"]) or {}
            items.append(ctx.detailed_run(run, jobs[run["job_id"]]))
        next_cursor = ser.encode_cursor(runs[-1]) if more and runs else None
        return ser.page(items, total, limit, offset, next_cursor)

    @r.post("/api/v1/workspaces/{ws}/job-runs")
    async def create_run(
        ws: str,
        body: CreateJobRunRequest,
        request: Request,
        p: Principal = Depends(auth.require(Action.TRIGGER)),
    ) -> Any:
        # async, as the trigger route: the run is recorded by `fire_async`
        job = ctx.job(ws, body.job_id, cached=True)
        check_parameters(body.parameters)
        return await idempotent_async(
            store, request, p, body.model_dump(), lambda: start(job, body, p)
        )

    async def start(job: dict[str, Any], body: CreateJobRunRequest, p: Principal) -> Any:
        trigger = triggers.check_trigger(body.trigger)  # `TriggerError`: a 400
        if trigger == "manual:":  # the SDK's default: record whose manual run it is
            trigger = triggers.manual_trigger(job["definition"])
        if not policy.is_served(job["job_type"]):
            raise ApiError(409, policy.not_served_reason(job["job_type"]), "not_served")
        result = await fire_async(
            store,
            job,
            trigger,
            now=datetime.now(UTC),
            profile=body.profile,
            parameters=body.parameters,
            refresh=body.refresh,
            skip_freshness=body.skip_freshness,
            triggered_by=p.key_id,
        )
        if not result.decision.creates_run:
            TRIGGER_REJECTIONS.labels(job["job_ref"], result.decision.status.value).inc()
            raise ApiError(
                409,
                f"run declined: {result.decision.status.value}"
                + "".join(f"; {reason}" for reason in result.decision.reasons),
                result.decision.status.value,
                {"reasons": result.decision.reasons},
            )
        assert result.run is not None
        return ctx.detailed_run(result.run, job)

    @r.get("/api/v1/workspaces/{ws}/job-runs/{run_id}")
    def get_run(
        ws: str, run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        run = ctx.run(ws, run_id)
        auth.check_run(p, run)
        return ctx.detailed_run(run)

    @r.post("/api/v1/workspaces/{ws}/job-runs/{run_id}/-cancel")
    def cancel_run(
        ws: str, run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        run = ctx.run(ws, run_id)
        check_cancel(auth, p, run)
        if RunStatus(run["status"]) in TERMINAL:
            raise ApiError(409, f"run is already {run['status']}", "job_run_terminal")
        return ctx.detailed_run(store.request_cancel(run_id) or run)

    @r.post("/api/v1/workspaces/{ws}/job-runs/-cancel")
    def cancel_runs(
        ws: str, body: CancelJobRunsRequest, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        ctx.check_ws(ws)
        succeeded, skipped, failed = [], [], []
        found: list[dict[str, Any]] = []
        for run_id in body.job_run_ids:
            run = store.get_run(run_id)
            if run is None or run["workspace_id"] != ws:
                failed.append({"ref": run_id, "detail": f"no job run {run_id!r}"})
                continue
            found.append(run)
        # all or nothing: a run this key may not cancel refuses the whole request first
        for run in found:
            check_cancel(auth, p, run)
        for run in found:
            run_id = run["id"]
            job = store.get_job(run["job_id"]) or {}
            item = {
                "job_ref": job.get("job_ref"),
                "job_run_id": run_id,
                "job_run_number": run["number"],
                "previous_status": run["status"],
            }
            if RunStatus(run["status"]) in TERMINAL:
                skipped.append(item)
                continue
            if not body.dry_run:
                store.request_cancel(run_id)
            succeeded.append(item)
        return {"succeeded": succeeded, "skipped": skipped, "failed": failed}

    @r.get("/api/v1/workspaces/{ws}/job-runs/{run_id}/artifacts", tags=["headwater"])
    def list_artifacts(
        ws: str, run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        """Headwater's own: the files the run left (dbt's run_results.json, manifest.json)
        and, when it ran dbt, one row per model and test (status, time, rows, message)."""
        run = ctx.run(ws, run_id)
        auth.check_run(p, run)
        base = f"{ctx.base_url()}/api/v1/workspaces/{ws}/job-runs/{run_id}/artifacts"
        items = [
            {
                "name": a["name"],
                "source": a["source"],
                "size_bytes": a["size"],
                "created_at": a["created_at"],
                "url": f"{base}/{a['name']}",
            }
            for a in store.list_artifacts(run_id)
        ]
        return {"items": items, "dbt": dbt_view(store.get_artifact(run_id, RUN_RESULTS))}

    @r.get("/api/v1/workspaces/{ws}/job-runs/{run_id}/artifacts/{name}", tags=["headwater"])
    def get_artifact(
        ws: str, run_id: str, name: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        """Headwater's own: one artifact file of the run, as the run wrote it."""
        run = ctx.run(ws, run_id)
        auth.check_run(p, run)
        found = store.get_artifact(run_id, name)
        if found is None:
            raise ApiError(404, f"run {run_id} has no artifact {name!r}", "artifact_not_found")
        return Response(bytes(found["content"]), media_type="application/json")

    return r


def dbt_view(run_results: dict[str, Any] | None) -> dict[str, Any] | None:
    """The per-model and per-test table of a stored `run_results.json`; None: no dbt."""
    if run_results is None:
        return None
    try:
        rows = dbt_results.node_results(json.loads(bytes(run_results["content"])))
    except ValueError:
        return None
    return {
        "source": run_results["source"],
        "counts": dbt_results.counts(rows),
        "failures": dbt_results.failure_summary(rows),
        "results": [row.as_dict() for row in rows],
    }


def check_cancel(auth: Authenticator, p: Principal, run: dict[str, Any]) -> None:
    """Admins cancel any run; a trigger key the runs it created; a read key none."""
    if p.scope is Scope.ADMIN or (p.scope is Scope.TRIGGER and p.owns(run)):
        return
    auth.check_run(p, run)
    raise ApiError(403, f"a {p.scope.value} key may not cancel this run", "not_authorized")
