"""Run telemetry on the data plane: the beacon runs report to, and what clients read of it.

A run's dlt PUTs its pipeline traces, schemas and job result to the run's beacon
(`RUNTIME__DLTHUB_DSN`, see `core/beacon.py`); the routes under
`/telemetry/v1/workspaces/{ws}` answer the job result, the result envelope
(`dlthub job runs result`), and the pipeline runs derived from the traces.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.limits import MAX_BEACON
from headwater.api.responses import MAX_INT, ApiError
from headwater.core import beacon
from headwater.core.access import Action, Scope
from headwater.core.states import TERMINAL, RunStatus
from headwater.core.traces import TraceError
from headwater.store.telemetry import (
    KINDS,
    SORTABLE,
    PipelineRunFilter,
    TelemetryStore,
    TooManyPayloads,
)

T = "/telemetry/v1/workspaces/{ws}"
MAX_PAYLOAD = MAX_BEACON
"""The largest payload a beacon takes (a state holds every schema of its pipeline)."""
LATE_PAYLOADS = timedelta(minutes=10)
"""How long after its run ended a beacon still takes payloads (dlt sends them as it exits)."""
MAX_PAGE = 1000
MAX_OFFSET = 10_000
DEFAULT_WINDOW = timedelta(days=7)


class PipelineRunStatus(StrEnum):
    succeeded = "succeeded"
    failed = "failed"


class Order(StrEnum):
    asc = "asc"
    desc = "desc"


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["telemetry"])
    tele = ctx.telemetry or TelemetryStore(ctx.store.engine)

    # -- the beacon -------------------------------------------------------------------------

    @r.put(T + "/job-runs/{run_id}/-beacon/{kind}", include_in_schema=False)
    async def beacon_put(ws: str, run_id: str, kind: str, request: Request) -> Any:
        """What dlt's `send_payload` PUTs: no API key, the run's own secret instead."""
        if kind not in KINDS:
            raise ApiError(404, f"no beacon payload type {kind!r}", "not_found")
        secret = beacon.secret_from_header(request.headers.get("authorization", ""))
        if secret is None:
            raise ApiError(401, "the run's beacon secret is required", "not_authenticated")
        if ctx.beacon_key is None or not beacon.check(ctx.beacon_key, run_id, secret):
            raise ApiError(401, "not this run's beacon secret", "invalid_beacon_secret")
        body = await request.body()
        if len(body) > MAX_PAYLOAD:
            raise ApiError(413, f"payload larger than {MAX_PAYLOAD} bytes", "payload_too_large")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as ex:
            raise ApiError(400, f"the payload is not JSON: {ex}", "invalid_payload") from ex
        if not isinstance(payload, dict):
            raise ApiError(400, "the payload is a JSON object", "invalid_payload")
        if kind == "job_result" and not isinstance(payload.get("type"), str):
            raise ApiError(400, "a job result names its `type`", "invalid_payload")
        return await run_in_threadpool(accept, ws, run_id, kind, payload, len(body))

    def accept(ws: str, run_id: str, kind: str, payload: dict[str, Any], size: int) -> Any:
        run = ctx.run(ws, run_id)
        finished = run.get("finished_at")
        if (
            RunStatus(run["status"]) in TERMINAL
            and finished is not None
            and datetime.now(UTC) - finished > LATE_PAYLOADS
        ):
            raise ApiError(409, f"run {run_id} ended at {finished.isoformat()}", "job_run_ended")
        try:
            pipeline_run = tele.record(run, kind, payload, size)
        except TraceError as ex:
            raise ApiError(400, str(ex), "invalid_payload") from ex
        except TooManyPayloads as ex:
            raise ApiError(409, str(ex), "too_many_payloads") from ex
        return {"ok": True, "pipeline_run_id": pipeline_run["id"] if pipeline_run else None}

    # -- what clients read ------------------------------------------------------------------

    def readable_run(ws: str, run_id: str, p: Principal) -> dict[str, Any]:
        run = ctx.run(ws, run_id)
        auth.check_run(p, run)
        return run

    def job_result_of(ws: str, run_id: str, p: Principal) -> tuple[dict[str, Any], Any]:
        run = readable_run(ws, run_id, p)
        row = tele.job_result(run_id)
        if row is None:
            raise ApiError(404, f"run {run_id} declared no job result", "job_result_not_found")
        return run, row

    @r.get(T + "/job-runs/{run_id}/result")
    def job_result(
        ws: str, run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        run, row = job_result_of(ws, run_id, p)
        job = ctx.store.get_job(run["job_id"]) or {}
        return job_result_answer(row, run, job.get("job_ref"))

    @r.get(T + "/job-runs/{run_id}/result-trace")
    def job_result_trace(
        ws: str, run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        run, row = job_result_of(ws, run_id, p)
        envelope = dict(row["payload"])
        if not isinstance(envelope.get("job_ref"), str):
            envelope["job_ref"] = (ctx.store.get_job(run["job_id"]) or {}).get("job_ref")
        return envelope

    @r.get(T + "/watermark")
    def watermark(ws: str, _p: Principal = Depends(auth.require(Action.READ_RUNS))) -> Any:
        ctx.check_ws(ws)
        return {"updated_at": tele.watermark(ws)}

    @r.get(T + "/pipeline-runs")
    def list_pipeline_runs(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_OFFSET),
        start: datetime | None = None,
        end: datetime | None = None,
        timezone: str = "UTC",
        q: str | None = Query(None, max_length=300),
        status: list[PipelineRunStatus] = Query(default=[]),
        pipeline_name: list[str] = Query(default=[]),
        dataset_name: list[str] = Query(default=[]),
        destination_name: list[str] = Query(default=[]),
        job_run_id: list[str] = Query(default=[]),
        is_empty_run: bool | None = None,
        sort: list[str] = Query(default=[]),
        order: list[Order] = Query(default=[]),
        cursor: str | None = None,
        p: Principal = Depends(auth.require(Action.READ_RUNS)),
    ) -> Any:
        ctx.check_ws(ws)
        texts = [timezone, q or "", *pipeline_name, *dataset_name, *destination_name, *job_run_id]
        start_at, end_at = window(start, end, timezone, texts)
        check_sort(sort, order, SORTABLE)
        f = PipelineRunFilter(
            start=start_at,
            end=end_at,
            q=q,
            statuses=[s.value for s in status],
            pipeline_names=pipeline_name,
            dataset_names=dataset_name,
            destination_names=destination_name,
            run_ids=job_run_id,
            is_empty_run=is_empty_run,
            triggered_by=p.key_id if p.scope is Scope.TRIGGER else None,
            sort=list(zip(sort, [o.value for o in order], strict=True)) or [("started_at", "desc")],
        )
        rows, total = tele.list_pipeline_runs(ws, f, limit=limit, offset=offset)
        return ser.page([pipeline_run_answer(x) for x in rows], total, limit, offset)

    def stats_route(kind: str, by: str, what: str) -> None:
        """`GET …/{kind}/-/stats`: one row per pipeline or dataset (`by`) that ran in the
        window, filtered by `by` names, latest status and destination, sorted as asked."""

        @r.get(T + f"/{kind}/-/stats", name=f"{kind}_stats", description=what)
        def stats(
            ws: str,
            limit: int = Query(100, ge=0, le=MAX_PAGE),
            offset: int = Query(0, ge=0, le=MAX_OFFSET),
            start: datetime | None = None,
            end: datetime | None = None,
            timezone: str = "UTC",
            q: str | None = Query(None, max_length=300),
            names: list[str] = Query(default=[], alias=by),
            latest_status: list[PipelineRunStatus] = Query(default=[]),
            latest_destination_name: list[str] = Query(default=[]),
            sort: list[str] = Query(default=[]),
            order: list[Order] = Query(default=[]),
            cursor: str | None = None,
            p: Principal = Depends(auth.require(Action.READ_RUNS)),
        ) -> Any:
            ctx.check_ws(ws)
            texts = [timezone, q or "", *names, *latest_destination_name]
            start_at, end_at = window(start, end, timezone, texts)
            check_sort(sort, order, (by, *STATS_SORTABLE))
            f = PipelineRunFilter(
                start=start_at,
                end=end_at,
                q=q,
                pipeline_names=names if by == "pipeline_name" else (),
                dataset_names=names if by == "dataset_name" else (),
                triggered_by=p.key_id if p.scope is Scope.TRIGGER else None,
            )
            statuses = {s.value for s in latest_status}
            rows = [
                row
                for row in tele.activity(ws, f, by)
                if (not statuses or row["latest_status"] in statuses)
                and (
                    not latest_destination_name
                    or row["latest_destination_name"] in latest_destination_name
                )
            ]
            keys = list(zip(sort, [o.value for o in order], strict=True)) or [
                ("latest_pipeline_run_at", "desc")
            ]
            for key, direction in reversed(keys):  # a stable sort per key, the first key last
                # missing values last in either direction
                desc = direction == "desc"
                rows.sort(key=lambda x, k=key, d=desc: ((x[k] is None) != d, x[k]), reverse=desc)
            return ser.page(rows[offset : offset + limit], len(rows), limit, offset)

    stats_route(
        "pipelines",
        "pipeline_name",
        "One row per pipeline that ran in the window: runs, success ratio, totals, latest run.",
    )
    stats_route(
        "datasets",
        "dataset_name",
        "One row per dataset written to in the window: runs, pipelines, totals, latest run.",
    )

    def readable_pipeline_run(ws: str, pipeline_run_id: str, p: Principal) -> dict[str, Any]:
        ctx.check_ws(ws)
        row = tele.get_pipeline_run(pipeline_run_id) if is_uuid(pipeline_run_id) else None
        if row is None or row["workspace_id"] != ws:
            raise ApiError(
                404, f"no pipeline run {pipeline_run_id!r} in this workspace", "not_found"
            )
        readable_run(ws, row["run_id"], p)
        return row

    @r.get(T + "/pipeline-runs/{pipeline_run_id}")
    def get_pipeline_run(
        ws: str, pipeline_run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        return detailed_pipeline_run_answer(readable_pipeline_run(ws, pipeline_run_id, p))

    @r.get(T + "/pipeline-runs/{pipeline_run_id}/trace")
    def get_pipeline_run_trace(
        ws: str, pipeline_run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        row = readable_pipeline_run(ws, pipeline_run_id, p)
        trace = tele.payload(row["trace_id"])
        if trace is None:
            raise ApiError(404, "the trace of this pipeline run is gone", "not_found")
        return trace["payload"]

    return r


STATS_SORTABLE = (
    "average_duration_ms",
    "latest_pipeline_run_at",
    "success_ratio",
    "total_pipeline_run_count",
    "total_rows_loaded",
)


def window(
    start: datetime | None, end: datetime | None, timezone: str, texts: list[str]
) -> tuple[datetime, datetime]:
    """The listing window `[start, end)` in UTC (naive times are in `timezone`; the default
    is the week before now), after refusing NULs in the query's texts."""
    if any("\x00" in t for t in texts):
        # no name holds one, and PostgreSQL refuses it in a query parameter
        raise ApiError(400, "a query parameter contains a NUL character", "invalid_request")
    tz = zone(timezone)
    end_at = aware(end, tz) if end is not None else datetime.now(UTC)
    start_at = aware(start, tz) if start is not None else end_at - DEFAULT_WINDOW
    return start_at, end_at


def check_sort(sort: list[str], order: list[Any], sortable: tuple[str, ...]) -> None:
    if len(sort) != len(order):
        raise ApiError(400, "`sort` and `order` pair up: give as many of each", "bad_sort")
    bad = [s for s in sort if s not in sortable]
    if bad:
        raise ApiError(400, f"cannot sort by {bad[0]!r}; one of {sortable}", "bad_sort")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as ex:
        raise ApiError(400, f"unknown time zone {name!r}", "invalid_timezone") from ex


def aware(value: datetime, tz: ZoneInfo) -> datetime:
    """The SDK sends naive datetimes, meant in `timezone`; an offset, when given, wins."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=tz)).astimezone(UTC)
    except (OverflowError, ValueError) as ex:
        raise ApiError(400, f"datetime out of range: {value}", "invalid_request") from ex


def job_result_answer(row: dict[str, Any], run: dict[str, Any], job_ref: str | None) -> Any:
    """JobResultResponse: the envelope's promoted scalars (an agent's come from its trace)."""
    env = row["payload"]
    trace = env.get("trace") if isinstance(env.get("trace"), dict) else {}

    def pick(key: str, kind: type | tuple[type, ...]) -> Any:
        value = env.get(key, trace.get(key))
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    cost = env.get("cost_usd", trace.get("cost_usd"))
    version = env.get("engine_version")
    return {
        "id": row["id"],
        "job_run_id": run["id"],
        "job_ref": env.get("job_ref") if isinstance(env.get("job_ref"), str) else job_ref,
        "result_type": env["type"],
        "engine_version": version if isinstance(version, int) and version <= MAX_INT else 1,
        "created_at": row["received_at"],
        "updated_at": row["received_at"],
        "result": env.get("result"),
        "summary": pick("summary", str),
        "agent_status": pick("status", str),
        "model": pick("model", str),
        "loop_type": pick("loop_type", str),
        "stop_reason": pick("stop_reason", str),
        "input_tokens": pick("input_tokens", int),
        "output_tokens": pick("output_tokens", int),
        "total_tokens": pick("total_tokens", int),
        "turn_count": pick("turn_count", int),
        "cost_usd": None if cost is None or isinstance(cost, bool) else str(cost),
    }


def pipeline_run_answer(row: dict[str, Any]) -> dict[str, Any]:
    """PipelineRunResponse, plus the job run and transaction it belongs to."""
    return {
        "id": row["id"],
        "pipeline_name": row["pipeline_name"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "dataset_name": row["dataset_name"],
        "destination_name": row["destination_name"],
        "dlt_version": row["dlt_version"],
        "duration_ms": row["duration_ms"],
        "error_message": row["error_message"],
        "error_step": row["error_step"],
        "finished_at": row["finished_at"],
        "has_schema_migration": row["has_schema_migration"],
        "started_at": row["started_at"],
        "total_bytes_loaded": row["total_bytes_loaded"],
        "total_rows_extracted": row["total_rows_extracted"],
        "total_rows_loaded": row["total_rows_loaded"],
        "job_run_id": row["run_id"],
        "transaction_id": row["transaction_id"],
    }


def detailed_pipeline_run_answer(row: dict[str, Any]) -> dict[str, Any]:
    """DetailedPipelineRunResponse."""
    detail = row["detail"] or {}
    packages = detail.get("load_packages") or []
    return {
        **pipeline_run_answer(row),
        "destination_type": row["destination_type"],
        "dlt_plus_version": None,
        "error_traceback": detail.get("error_traceback"),
        "extract_duration_ms": detail.get("extract_duration_ms"),
        "normalize_duration_ms": detail.get("normalize_duration_ms"),
        "load_duration_ms": detail.get("load_duration_ms"),
        "has_failed_load_jobs": row["has_failed_load_jobs"],
        "has_pending_packages": row["has_pending_packages"],
        "is_empty_run": row["is_empty_run"],
        "load_package_count": len(packages),
        "load_packages": packages,
        "os_name": detail.get("os_name"),
        "os_version": detail.get("os_version"),
        "python_version": detail.get("python_version"),
        "resources": detail.get("resources") or [],
        "tables": detail.get("tables") or [],
        "total_bytes_extracted": sum(
            t.get("bytes_extracted") or 0 for t in detail.get("tables") or []
        ),
    }
