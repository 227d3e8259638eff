"""Run telemetry on the data plane: what clients read of what runs sent their beacon.

The routes under `/telemetry/v1/workspaces/{ws}` answer the job result, the result
envelope (`dlthub job runs result`), the pipeline runs derived from the traces and their
stats per pipeline and per dataset. The beacon itself is `routes/beacon.py`; the answers'
shapes are in `api/serialize.py`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.responses import ApiError
from headwater.core.access import Action, Scope
from headwater.store.telemetry import (
    SORTABLE,
    STATS_SORTABLE,
    PipelineRunFilter,
    StatsQuery,
    TelemetryStore,
)

T = "/telemetry/v1/workspaces/{ws}"
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
        return ser.job_result(row, run, job.get("job_ref"))

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
        return ser.page([ser.pipeline_run(x) for x in rows], total, limit, offset)

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
            query = StatsQuery(
                by=by,
                latest_statuses=[s.value for s in latest_status],
                latest_destination_names=latest_destination_name,
            )
            if sort:
                query.sort = list(zip(sort, [o.value for o in order], strict=True))
            rows, total = tele.stats(ws, f, query, limit=limit, offset=offset)
            return ser.page([ser.activity(by, x) for x in rows], total, limit, offset)

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
        return ser.detailed_pipeline_run(readable_pipeline_run(ws, pipeline_run_id, p))

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
