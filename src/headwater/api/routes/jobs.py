"""Jobs: list, get, trigger, pause and resume."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.idempotency import idempotent_async
from headwater.api.json_route import JSONRoute
from headwater.api.limits import check_parameters
from headwater.api.metrics import TRIGGER_REJECTIONS
from headwater.api.responses import MAX_INT, ApiError
from headwater.core import policy
from headwater.core.access import Action
from headwater.workspace import triggers
from headwater.workspace.intervals import IntervalError
from headwater.workspace.launch import fire_async

MAX_PAGE = 1000


class TriggerJobsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    job_ids: list[str] | None = None
    selectors: list[str] | None = None
    profile: str | None = None
    refresh: bool = False
    dry_run: bool = False
    parameters: dict[str, Any] | None = Field(
        default=None, description="Headwater: values for the job's config arguments"
    )


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["jobs"], route_class=JSONRoute)
    store = ctx.store

    # first: a request is matched against the routes in order, and this is the hot one
    @r.post("/api/v1/workspaces/{ws}/jobs/-trigger")
    async def trigger_jobs(
        ws: str,
        body: TriggerJobsRequest,
        request: Request,
        p: Principal = Depends(auth.require(Action.TRIGGER)),
    ) -> Any:
        # async: the hot path of a trigger flood costs no thread hop (see `fire_async`)
        ctx.check_ws(ws)
        if not body.job_ids and not body.selectors:
            raise ApiError(400, "give job_ids or selectors", "invalid_request")
        check_parameters(body.parameters)
        return await idempotent_async(
            store,
            request,
            p,
            body.model_dump(),
            lambda: trigger_many(ctx, body.job_ids or [], body.selectors or [], body, p),
        )

    @r.get("/api/v1/workspaces/{ws}/jobs")
    def list_jobs(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_INT),
        ref: str | None = None,
        is_archived: bool | None = None,
        p: Principal = Depends(auth.require(Action.SEE_JOBS)),
    ) -> Any:
        ctx.check_ws(ws)
        jobs, total = store.list_jobs(
            ws, ref=ref, is_archived=is_archived, limit=limit, offset=offset
        )
        latest = readable_latest_runs(p, [j["id"] for j in jobs])
        return ser.page(
            [ctx.detailed_job(j, latest.get(j["id"])) for j in jobs], total, limit, offset
        )

    @r.get("/api/v1/workspaces/{ws}/jobs/{job_id}")
    def get_job(ws: str, job_id: str, p: Principal = Depends(auth.require(Action.SEE_JOBS))) -> Any:
        job = ctx.job(ws, job_id)
        return ctx.detailed_job(job, readable_latest_runs(p, [job_id]).get(job_id))

    def readable_latest_runs(p: Principal, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each job's newest run, where this key may read it (as `GET job-runs/{id}` decides):
        a trigger key does not see others' runs, nor their parameters, through a job."""
        latest = ctx.latest_runs(job_ids)
        return {job_id: run for job_id, run in latest.items() if auth.can_read_run(p, run)}

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-pause")
    def pause(ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        """Suspend the job's timed triggers; pausing a paused job changes nothing."""
        job = ctx.job(ws, job_id)
        if job["is_archived"]:
            raise ApiError(400, "an archived job cannot be paused", "job_archived")
        if not job["is_paused"] and not has_schedule(job):
            raise ApiError(
                400,
                f"job {job['job_ref']} has no next scheduled run to pause (no schedule:,"
                " every: or future once: trigger); its other triggers cannot be paused",
                "job_not_scheduled",
            )
        return ctx.job_view(store.set_paused(job_id, True) or job)

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-resume")
    def resume(ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        job = ctx.job(ws, job_id)
        return ctx.job_view(store.set_paused(job_id, False) or job)

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-archive")
    def archive(ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        ctx.job(ws, job_id)
        return ctx.job_view(store.set_archived(job_id, True) or {})

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-unarchive")
    def unarchive(ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        ctx.job(ws, job_id)
        return ctx.job_view(store.set_archived(job_id, False) or {})

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-publish")
    def publish(ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        """Give an interactive job a public link (`public_secret`, `public_url`); a
        published job keeps its link."""
        job = ctx.job(ws, job_id)
        if job["job_type"] != "interactive":
            raise ApiError(
                400,
                f"only interactive jobs (notebooks, apps) can be published; {job['job_ref']}"
                f" is a {job['job_type']} job",
                "job_not_interactive",
            )
        if job["is_archived"]:
            raise ApiError(400, "an archived job cannot be published", "job_archived")
        return ctx.job_view(store.set_published(job_id, True) or job)

    @r.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-unpublish")
    def unpublish(ws: str, job_id: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        """Withdraw the job's public link; an unpublished job stays unpublished."""
        job = ctx.job(ws, job_id)
        return ctx.job_view(store.set_published(job_id, False) or job)

    @r.get("/p/{public_secret}", include_in_schema=False)
    def public_page(public_secret: str) -> Any:
        """A published job's public link. Headwater does not serve interactive jobs yet,
        so a link that names a job says so; any other answers 404."""
        job = store.published_job(public_secret)
        if job is None or job["workspace_id"] != ctx.ws_id:
            raise ApiError(404, "no published job at this link", "not_found")
        raise ApiError(
            501,
            f"{job['job_ref']} is published, but Headwater does not serve interactive jobs yet",
            "not_served",
        )

    return r


def has_schedule(job: dict[str, Any]) -> bool:
    """Whether the job has a next scheduled run (what a pause suspends)."""
    return job["next_run_at"] is not None or triggers.has_next_tick(
        job["definition"], datetime.now(UTC)
    )


async def trigger_many(
    ctx: ApiContext,
    job_ids: list[str],
    selectors: list[str],
    body: TriggerJobsRequest,
    principal: Principal,
) -> dict[str, Any]:
    """Fire jobs named by id (their default trigger) and jobs matched by selectors.

    Runs on the event loop: jobs named by id come from the store's job cache, and
    only a selector's job list is read in a thread.
    """
    store = ctx.store
    now = datetime.now(UTC)
    succeeded: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    picked: list[tuple[dict[str, Any], list[str], str | None]] = []
    for job_id in job_ids:
        job = store.get_job_cached(job_id)
        if job is None or job["workspace_id"] != ctx.ws_id:
            failed.append({"ref": job_id, "detail": f"no job with id {job_id!r}"})
            continue
        # by id, a person or a key asks for a run: it is manual (a pause does not stop
        # it), and it still gets its default trigger's interval (`launch.run_request`)
        manual = triggers.manual_trigger(job["definition"])
        picked.append((job, [manual], manual))
    if selectors:
        jobs, _ = await run_in_threadpool(
            store.list_jobs, ctx.ws_id, is_archived=False, limit=100_000
        )
        for job in jobs:
            trig = triggers.select(job["definition"], selectors)
            if trig is not None:
                picked.append((job, triggers.matched(job["definition"], selectors), trig))
    for job, hits, trig in picked:
        item: dict[str, Any] = {
            "job_id": job["id"],
            "job_ref": job["job_ref"],
            "matched_triggers": hits,
            "trigger": trig or "",
            "job_run_id": None,
            "job_run": None,
            "reasons": None,
        }
        if not policy.is_served(job["job_type"]):
            item.update(
                status=policy.TriggerStatus.SKIPPED_NOT_SERVED.value,
                reasons=[policy.not_served_reason(job["job_type"])],
            )
            skipped.append(item)
            continue
        assert trig is not None
        try:
            result = await fire_async(
                store,
                job,
                trig,
                now=now,
                profile=body.profile,
                parameters=body.parameters,
                refresh=body.refresh,
                triggered_by=principal.key_id,
                dry_run=body.dry_run,
            )
        except IntervalError as ex:
            # one job's broken interval spec must not fail the others' triggers
            failed.append({"ref": job["job_ref"], "detail": str(ex)})
            continue
        item["status"] = result.decision.status.value
        item["reasons"] = result.decision.reasons or None
        if not result.decision.creates_run and not body.dry_run:
            TRIGGER_REJECTIONS.labels(job["job_ref"], item["status"]).inc()
        if result.run is not None:
            item["job_run_id"] = result.run["id"]
            item["job_run"] = ctx.run_view(result.run, job)
        (succeeded if result.decision.creates_run else skipped).append(item)
    return {"succeeded": succeeded, "skipped": skipped, "failed": failed}
