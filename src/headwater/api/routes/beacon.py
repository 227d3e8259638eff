"""The beacon a run's dlt reports to: its pipeline traces, schemas and job result.

A run's dlt PUTs them to `RUNTIME__DLTHUB_DSN` (see `core/beacon.py`) with the run's own
secret instead of an API key; what clients read of them is in `routes/telemetry.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from headwater.api.auth import Authenticator
from headwater.api.context import ApiContext
from headwater.api.limits import MAX_BEACON
from headwater.api.responses import ApiError
from headwater.core import beacon
from headwater.core.states import TERMINAL, RunStatus
from headwater.store.telemetry import KINDS, TelemetryStore

T = "/telemetry/v1/workspaces/{ws}"
MAX_PAYLOAD = MAX_BEACON
"""The largest payload a beacon takes (a state holds every schema of its pipeline)."""
LATE_PAYLOADS = timedelta(minutes=10)
"""How long after its run ended a beacon still takes payloads (dlt sends them as it exits)."""


def router(ctx: ApiContext, _auth: Authenticator) -> APIRouter:
    """The beacon authenticates runs by their own secret, not by API key."""
    r = APIRouter(tags=["telemetry"])
    tele = ctx.telemetry or TelemetryStore(ctx.store.engine)

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
        # a bad trace (`TraceError`, 400) or one payload too many (`TooManyPayloads`, 409)
        # is answered as its error's class says
        pipeline_run = tele.record(run, kind, payload, size)
        return {"ok": True, "pipeline_run_id": pipeline_run["id"] if pipeline_run else None}

    return r
