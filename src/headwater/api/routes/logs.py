"""The data plane's logs: the stored log as NDJSON and a live SSE stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.responses import dumps
from headwater.core.access import Action
from headwater.core.states import TERMINAL, RunStatus
from headwater.store import notify
from headwater.store.store import Store

KEEP_ALIVE_S = 15.0


class NDJSONResponse(Response):
    """The stored log: one JSON object a line. The OpenAPI document names this media type."""

    media_type = "application/x-ndjson"


class EventStreamResponse(StreamingResponse):
    """The live log as server-sent events. The OpenAPI document names this media type."""

    media_type = "text/event-stream"


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["logs"])

    @r.get("/logs/v1/workspaces/{ws}/job-runs/{run_id}/logs", response_class=NDJSONResponse)
    def stored_logs(
        ws: str, run_id: str, p: Principal = Depends(auth.require(Action.READ_RUNS))
    ) -> Any:
        auth.check_run(p, ctx.run(ws, run_id))
        lines = ctx.store.read_logs(run_id, limit=1_000_000)
        body = b"".join(dumps(ser.log_line(line)) + b"\n" for line in lines)
        return NDJSONResponse(body)

    @r.get(
        "/logs/v1/workspaces/{ws}/job-runs/{run_id}/log-stream", response_class=EventStreamResponse
    )
    async def log_stream(
        ws: str,
        run_id: str,
        request: Request,
        p: Principal = Depends(auth.require(Action.READ_RUNS)),
    ) -> Any:
        auth.check_run(p, ctx.run(ws, run_id))
        return EventStreamResponse(
            follow(ctx.store, run_id, request),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return r


def _event(line: dict[str, Any]) -> bytes:
    return b"event: log\ndata: " + dumps(ser.log_line(line)) + b"\n\n"


async def follow(store: Store, run_id: str, request: Request) -> AsyncIterator[bytes]:
    """Replay the run's log, then follow it; the stream closes when the run has ended."""
    after = -1
    idle = 0.0
    loop = asyncio.get_running_loop()
    while True:
        seen = store.notifier.version(notify.LOGS)
        lines = await loop.run_in_executor(None, store.read_logs, run_id, after)
        for line in lines:
            after = line["line_num"]
            yield _event(line)
        if lines:
            continue
        run = await loop.run_in_executor(None, store.get_run, run_id)
        if run is None or RunStatus(run["status"]) in TERMINAL:
            # lines written in the moment the run ended
            for line in await loop.run_in_executor(None, store.read_logs, run_id, after):
                yield _event(line)
            return
        if await request.is_disconnected():
            return
        await loop.run_in_executor(None, store.notifier.wait, notify.LOGS, seen, 0.5)
        idle += 0.5
        if idle >= KEEP_ALIVE_S:
            idle = 0.0
            yield b": keep-alive\n\n"
