"""The HTTP API: the dltHub runtime API's paths and shapes, served by Headwater.

Control plane under `/api/v1`, data plane (logs) under `/logs/v1`; one server
is both, so `dataplane_url` is its own base.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from headwater.api import serialize as ser
from headwater.core.states import TERMINAL, RunStatus
from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace import triggers
from headwater.workspace.launch import fire

MAX_PAGE = 1000


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


@dataclass
class ApiContext:
    """What the API needs from the runtime that serves it."""

    store: Store
    ws_id: str
    base_url: Callable[[], str]
    reload_manifest: Callable[[], dict[str, Any]]
    manifest_status: Callable[[], dict[str, Any]]


class ApiError(HTTPException):
    def __init__(self, status_code: int, detail: str, code: str, extra: Any = None) -> None:
        super().__init__(status_code=status_code, detail=detail)
        self.code = code
        self.extra = extra


def error_body(status: int, detail: str, code: str, extra: Any = None) -> JSONBody:
    return JSONBody(
        {"code": code, "detail": detail, "extra": extra, "status_code": status}, status_code=status
    )


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


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Headwater", version="0.1.0", default_response_class=JSONBody)
    store = ctx.store

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, ex: ApiError) -> Response:
        return error_body(ex.status_code, str(ex.detail), ex.code, ex.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, ex: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(ex.status_code, "error")
        return error_body(ex.status_code, str(ex.detail), code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, ex: RequestValidationError) -> Response:
        extra = [
            {"key": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in ex.errors()
        ]
        detail = "; ".join(f"{x['key']}: {x['message']}" for x in extra) or "invalid request"
        return error_body(400, detail, "invalid_request", extra)

    def check_ws(ws: str) -> None:
        if ws != ctx.ws_id:
            raise ApiError(404, f"no workspace {ws!r} on this server", "workspace_not_found")

    def get_job(ws: str, job_id: str) -> dict[str, Any]:
        check_ws(ws)
        job = store.get_job(job_id)
        if job is None or job["workspace_id"] != ws:
            raise ApiError(404, f"no job {job_id!r} in this workspace", "job_not_found")
        return job

    def get_run(ws: str, run_id: str) -> dict[str, Any]:
        check_ws(ws)
        run = store.get_run(run_id)
        if run is None or run["workspace_id"] != ws:
            raise ApiError(404, f"no job run {run_id!r} in this workspace", "job_run_not_found")
        return run

    def detailed_job(job: dict[str, Any], latest: dict[str, Any] | None) -> dict[str, Any]:
        base = ctx.base_url()
        out = ser.job(job, base)
        out["latest_job_run"] = ser.run(latest, base, job["job_ref"]) if latest else None
        out["current_version"] = None
        out["recent_job_runs"] = None
        out["downstream_job_runs"] = None
        return out

    def detailed_run(run: dict[str, Any], job: dict[str, Any] | None = None) -> dict[str, Any]:
        job = job or store.get_job(run["job_id"])
        assert job is not None
        version = store.get_job_version(run["job_version_id"])
        return ser.detailed_run(run, job, version, ctx.base_url())

    # -- health and workspace ------------------------------------------------------------------

    @app.get("/health", tags=["headwater"])
    def health() -> Any:
        return {"status": "ok", "workspace_id": ctx.ws_id}

    @app.get("/api/v1/workspaces/{ws}", tags=["workspaces"])
    def get_workspace(ws: str) -> Any:
        check_ws(ws)
        row = store.get_workspace(ws)
        assert row is not None
        return ser.workspace(row, ctx.base_url(), ctx.manifest_status())

    @app.post("/api/v1/workspaces/{ws}/-reload", tags=["headwater"])
    def reload_workspace(ws: str) -> Any:
        """Headwater: read the workspace's `__deployment__.py` again and reconcile jobs."""
        check_ws(ws)
        return ctx.reload_manifest()

    # -- jobs ------------------------------------------------------------------------------------

    @app.get("/api/v1/workspaces/{ws}/jobs", tags=["jobs"])
    def list_jobs(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
        ref: str | None = None,
        is_archived: bool | None = None,
    ) -> Any:
        check_ws(ws)
        jobs, total = store.list_jobs(
            ws, ref=ref, is_archived=is_archived, limit=limit, offset=offset
        )
        latest = store.latest_runs([j["id"] for j in jobs])
        return ser.page([detailed_job(j, latest.get(j["id"])) for j in jobs], total, limit, offset)

    @app.get("/api/v1/workspaces/{ws}/jobs/{job_id}", tags=["jobs"])
    def get_job_route(ws: str, job_id: str) -> Any:
        job = get_job(ws, job_id)
        return detailed_job(job, store.latest_runs([job_id]).get(job_id))

    @app.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-pause", tags=["jobs"])
    def pause(ws: str, job_id: str) -> Any:
        job = get_job(ws, job_id)
        if job["is_archived"]:
            raise ApiError(400, "an archived job cannot be paused", "job_archived")
        return ser.job(store.set_paused(job_id, True) or job, ctx.base_url())

    @app.post("/api/v1/workspaces/{ws}/jobs/{job_id}/-resume", tags=["jobs"])
    def resume(ws: str, job_id: str) -> Any:
        job = get_job(ws, job_id)
        return ser.job(store.set_paused(job_id, False) or job, ctx.base_url())

    @app.post("/api/v1/workspaces/{ws}/jobs/-trigger", tags=["jobs"])
    def trigger_jobs(ws: str, body: TriggerJobsRequest) -> Any:
        check_ws(ws)
        if not body.job_ids and not body.selectors:
            raise ApiError(400, "give job_ids or selectors", "invalid_request")
        return trigger_many(body.job_ids or [], body.selectors or [], body)

    def trigger_many(
        job_ids: list[str], selectors: list[str], body: TriggerJobsRequest
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        succeeded: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        picked: list[tuple[dict[str, Any], list[str], str | None]] = []
        for job_id in job_ids:
            job = store.get_job(job_id)
            if job is None or job["workspace_id"] != ctx.ws_id:
                failed.append({"ref": job_id, "detail": f"no job with id {job_id!r}"})
                continue
            hits = triggers.matched(job["definition"], [job["job_ref"]])
            picked.append((job, hits, triggers.select(job["definition"], [job["job_ref"]])))
        if selectors:
            jobs, _ = store.list_jobs(ctx.ws_id, is_archived=False, limit=100_000)
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
            if job["job_type"] != "batch":
                item.update(
                    status="skipped_not_served",
                    reasons=[f"{job['job_type']} jobs are not served by Headwater"],
                )
                skipped.append(item)
                continue
            if trig is None:
                item.update(status="skipped_no_trigger", reasons=["no trigger of the job matches"])
                skipped.append(item)
                continue
            result = fire(
                store,
                job,
                trig,
                now=now,
                profile=body.profile,
                parameters=body.parameters,
                refresh=body.refresh,
                dry_run=body.dry_run,
            )
            item["status"] = result.decision.status.value
            item["reasons"] = result.decision.reasons or None
            if result.run is not None:
                item["job_run_id"] = result.run["id"]
                item["job_run"] = ser.run(result.run, ctx.base_url(), job["job_ref"])
            (succeeded if result.decision.creates_run else skipped).append(item)
        return {"succeeded": succeeded, "skipped": skipped, "failed": failed}

    # -- job runs --------------------------------------------------------------------------------

    @app.get("/api/v1/workspaces/{ws}/job-runs", tags=["job-runs"])
    def list_runs(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
        job_id: str | None = None,
        number: int | None = None,
        status: list[RunStatus] = Query(default=[]),
    ) -> Any:
        check_ws(ws)
        runs, total = store.list_runs(
            ws,
            job_id=job_id,
            statuses=[s.value for s in status],
            number=number,
            limit=limit,
            offset=offset,
        )
        jobs: dict[str, dict[str, Any]] = {}
        items = []
        for r in runs:
            if r["job_id"] not in jobs:
                jobs[r["job_id"]] = store.get_job(r["job_id"]) or {}
            items.append(detailed_run(r, jobs[r["job_id"]]))
        return ser.page(items, total, limit, offset)

    @app.post("/api/v1/workspaces/{ws}/job-runs", tags=["job-runs"])
    def create_run(ws: str, body: CreateJobRunRequest) -> Any:
        job = get_job(ws, body.job_id)
        try:
            trigger = triggers.check_trigger(body.trigger)
        except triggers.TriggerError as ex:
            raise ApiError(400, str(ex), "invalid_trigger") from ex
        if job["job_type"] != "batch":
            raise ApiError(409, f"{job['job_type']} jobs are not served by Headwater", "not_served")
        result = fire(
            store,
            job,
            trigger,
            now=datetime.now(UTC),
            profile=body.profile,
            parameters=body.parameters,
            refresh=body.refresh,
        )
        if not result.decision.creates_run:
            raise ApiError(
                409,
                f"run declined: {result.decision.status.value}",
                result.decision.status.value,
                {"reasons": result.decision.reasons},
            )
        assert result.run is not None
        return detailed_run(result.run, job)

    @app.get("/api/v1/workspaces/{ws}/job-runs/{run_id}", tags=["job-runs"])
    def get_run_route(ws: str, run_id: str) -> Any:
        return detailed_run(get_run(ws, run_id))

    @app.post("/api/v1/workspaces/{ws}/job-runs/{run_id}/-cancel", tags=["job-runs"])
    def cancel_run(ws: str, run_id: str) -> Any:
        run = get_run(ws, run_id)
        if RunStatus(run["status"]) in TERMINAL:
            raise ApiError(409, f"run is already {run['status']}", "job_run_terminal")
        return detailed_run(store.request_cancel(run_id) or run)

    @app.post("/api/v1/workspaces/{ws}/job-runs/-cancel", tags=["job-runs"])
    def cancel_runs(ws: str, body: CancelJobRunsRequest) -> Any:
        check_ws(ws)
        succeeded, skipped, failed = [], [], []
        for run_id in body.job_run_ids:
            run = store.get_run(run_id)
            if run is None or run["workspace_id"] != ws:
                failed.append({"ref": run_id, "detail": f"no job run {run_id!r}"})
                continue
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

    # -- logs (data plane) -------------------------------------------------------------------------

    @app.get("/logs/v1/workspaces/{ws}/job-runs/{run_id}/logs", tags=["logs"])
    def stored_logs(ws: str, run_id: str) -> Any:
        get_run(ws, run_id)
        lines = store.read_logs(run_id, limit=1_000_000)
        body = b"".join(
            orjson.dumps(ser.log_line(line), option=orjson.OPT_UTC_Z) + b"\n" for line in lines
        )
        return Response(body, media_type="application/x-ndjson")

    @app.get("/logs/v1/workspaces/{ws}/job-runs/{run_id}/log-stream", tags=["logs"])
    async def log_stream(ws: str, run_id: str, request: Request) -> Any:
        get_run(ws, run_id)
        return StreamingResponse(
            _follow(store, run_id, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


async def _follow(store: Store, run_id: str, request: Request) -> AsyncIterator[bytes]:
    """Replay the run's log, then follow it; close the stream when the run has ended."""
    after = -1
    idle = 0.0
    loop = asyncio.get_running_loop()
    while True:
        seen = store.notifier.version(notify.LOGS)
        lines = await loop.run_in_executor(None, store.read_logs, run_id, after)
        for line in lines:
            after = line["line_num"]
            data = orjson.dumps(ser.log_line(line), option=orjson.OPT_UTC_Z)
            yield b"event: log\ndata: " + data + b"\n\n"
        if lines:
            continue
        run = await loop.run_in_executor(None, store.get_run, run_id)
        if run is None or RunStatus(run["status"]) in TERMINAL:
            # lines written in the same moment the run ended
            rest = await loop.run_in_executor(None, store.read_logs, run_id, after)
            for line in rest:
                data = orjson.dumps(ser.log_line(line), option=orjson.OPT_UTC_Z)
                yield b"event: log\ndata: " + data + b"\n\n"
            return
        if await request.is_disconnected():
            return
        await loop.run_in_executor(None, store.notifier.wait, notify.LOGS, seen, 0.5)
        idle += 0.5
        if idle >= 15:
            idle = 0.0
            yield b": keep-alive\n\n"
