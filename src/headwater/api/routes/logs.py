"""The data plane's logs: the stored log as NDJSON and a live SSE stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.responses import dumps
from headwater.core.access import Action
from headwater.core.states import TERMINAL, RunStatus
from headwater.store import notify
from headwater.store.store import Store

KEEP_ALIVE_S = 15.0
PAGE = 10_000
"""Lines read from the store at a time: a log of any length is sent in pages, so the
server holds one page, never the whole log."""


class NDJSONResponse(StreamingResponse):
    """The stored log: one JSON object a line, streamed. The OpenAPI document names this
    media type."""

    media_type = "application/x-ndjson"


class EventStreamResponse(StreamingResponse):
    """The live log as server-sent events. The OpenAPI document names this media type."""

    media_type = "text/event-stream"


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["logs"])

    @r.get("/logs/v1/workspaces/{ws}/job-runs/{run_id}/logs", response_class=NDJSONResponse)
    def stored_logs(
        ws: str,
        run_id: str,
        after: Annotated[
            int, Query(ge=-1, description="Only lines with a greater `line_num` (a cursor).")
        ] = -1,
        limit: Annotated[
            int | None, Query(ge=1, description="At most this many lines (default: all).")
        ] = None,
        p: Principal = Depends(auth.require(Action.READ_RUNS)),
    ) -> Any:
        auth.check_run(p, ctx.run(ws, run_id))
        return NDJSONResponse(stored_pages(ctx.store, run_id, after, limit))

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


def stored_pages(store: Store, run_id: str, after: int, limit: int | None) -> Iterator[bytes]:
    """The stored log from `after` on, one chunk a page, read by line number (a keyset:
    every page is an index range scan). Starlette iterates it in a worker thread. Should
    the store fail mid-way, the error ends the response unfinished, so a client sees a
    broken transfer, never a log that silently stops short."""
    left = limit
    while left is None or left > 0:
        size = PAGE if left is None else min(PAGE, left)
        lines = store.read_logs(run_id, after, size)
        if not lines:
            return
        yield b"".join(dumps(ser.log_line(line)) + b"\n" for line in lines)
        after = lines[-1]["line_num"]
        if left is not None:
            left -= len(lines)
        if len(lines) < size:
            return


def _event(line: dict[str, Any]) -> bytes:
    return b"event: log\ndata: " + dumps(ser.log_line(line)) + b"\n\n"


async def follow(
    store: Store,
    run_id: str,
    request: Request,
    after: int = -1,
    encode: Callable[[dict[str, Any]], bytes] = _event,
    end: bytes = b"",
) -> AsyncIterator[bytes]:
    """Replay the run's log after line `after`, then follow it; the stream closes (after
    `end`) when the run has ended. `encode` makes a line an event."""
    idle = 0.0
    loop = asyncio.get_running_loop()
    while True:
        seen = store.notifier.version(notify.LOGS)
        lines = await loop.run_in_executor(None, store.read_logs, run_id, after)
        for line in lines:
            after = line["line_num"]
            yield encode(line)
        if lines:
            continue
        run = await loop.run_in_executor(None, store.get_run, run_id)
        if run is None or RunStatus(run["status"]) in TERMINAL:
            # lines written in the moment the run ended
            for line in await loop.run_in_executor(None, store.read_logs, run_id, after):
                yield encode(line)
            if end:
                yield end
            return
        if await request.is_disconnected():
            return
        await loop.run_in_executor(None, store.notifier.wait, notify.LOGS, seen, 0.5)
        idle += 0.5
        if idle >= KEEP_ALIVE_S:
            idle = 0.0
            yield b": keep-alive\n\n"
