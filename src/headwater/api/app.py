"""The HTTP API: the dltHub runtime API's paths and shapes, served by Headwater.

Control plane under `/api/v1`, data plane (logs) under `/logs/v1`; one server
is both, so `dataplane_url` is its own base. Every route needs an API key but
`/health` and the API's description (`/openapi.json`, `/docs`, `/redoc`): the same
for every Headwater, with no workspace data, kept open for tools and people.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from headwater.api.auth import Authenticator
from headwater.api.context import ApiContext
from headwater.api.limits import BodyLimit, RejectNul
from headwater.api.metrics import LatencyMiddleware
from headwater.api.responses import ERROR_RESPONSES, JSONBody, document_errors, error_body
from headwater.api.routes import (
    automations,
    beacon,
    deployments,
    intervals,
    jobs,
    keys,
    legacy,
    logs,
    metrics,
    organizations,
    runs,
    telemetry,
    webhooks,
    workers,
    workspace,
    workspace_variables,
)
from headwater.core.errors import HeadwaterError

__all__ = ["ApiContext", "create_app"]

log = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
RETRY_AFTER_S = 5
"""What a 503 asks a client to wait when the store cannot write (locked, read-only, full)."""
# PostgreSQL's SQLSTATE classes of a store that cannot write now: read-only transaction,
# insufficient resources (disk full, out of memory), operator intervention (shutting down)
UNAVAILABLE_SQLSTATES = ("25006", "53", "57P")


def store_unavailable(ex: DBAPIError) -> bool:
    """Whether a database error means the store cannot answer now, rather than a bug:
    SQLite's `database is locked`, `readonly database`, `disk is full`, I/O errors, a lost
    PostgreSQL connection (all OperationalError), or PostgreSQL's read-only and full states."""
    if isinstance(ex, OperationalError):
        return True
    sqlstate = getattr(ex.orig, "sqlstate", None) or ""
    return sqlstate.startswith(UNAVAILABLE_SQLSTATES)


def internal_error() -> Response:
    return error_body(
        500, "internal server error; the server log has the details", "internal_error"
    )


class ServerErrors:
    """ASGI middleware: an unexpected error is logged and answered 500 here, so the
    connection stays open for the client's next request (an exception that reached the
    server would make it close the connection after the 500). Only an error after the
    answer started is left to the server: closing is then the one way to say so."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("error answering %s %s", scope.get("method"), scope.get("path"))
            await internal_error()(scope, receive, send)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Headwater", version="0.1.0", default_response_class=JSONBody)
    auth = Authenticator(ctx.store, ctx.ws_id)
    app.state.auth = auth
    app.add_middleware(BodyLimit)
    app.add_middleware(RejectNul)
    app.add_middleware(LatencyMiddleware)
    app.add_middleware(ServerErrors)  # the last added is the outermost
    document_errors(app)

    @app.exception_handler(HeadwaterError)
    async def _headwater_error(req: Request, ex: HeadwaterError) -> Response:
        """Any error of Headwater's own (`ApiError` too) as the API's error body: its class's
        code and status; one with no status is not the client's doing, a 500."""
        if ex.status is None:
            log.error("error answering %s %s", req.method, req.url.path, exc_info=ex)
            return internal_error()
        return error_body(ex.status, str(ex), ex.code, ex.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, ex: StarletteHTTPException) -> Response:
        return error_body(ex.status_code, str(ex.detail), HTTP_CODES.get(ex.status_code, "error"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, ex: RequestValidationError) -> Response:
        extra = [
            {"key": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in ex.errors()
        ]
        detail = "; ".join(f"{x['key']}: {x['message']}" for x in extra) or "invalid request"
        return error_body(400, detail, "invalid_request", extra)

    @app.exception_handler(DBAPIError)
    async def _store_error(req: Request, ex: DBAPIError) -> Response:
        if not store_unavailable(ex):
            log.error("error answering %s %s", req.method, req.url.path, exc_info=ex)
            return internal_error()
        log.warning("store unavailable answering %s %s: %s", req.method, req.url.path, ex.orig)
        answer = error_body(
            503,
            f"the store cannot write just now ({str(ex.orig).strip() or type(ex.orig).__name__});"
            f" try again in {RETRY_AFTER_S} s",
            "store_unavailable",
        )
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer

    @app.get("/health", tags=["headwater"], responses=ERROR_RESPONSES)
    def health() -> Any:
        """No key needed: is the server up, and which workspace does it serve."""
        return {"status": "ok", "workspace_id": ctx.ws_id}

    # the trigger routes' routers first: requests are matched against routes in order
    routers = (jobs, runs, workspace, logs, keys, legacy, deployments, organizations, webhooks)
    for module in (
        *routers,
        workspace_variables,
        beacon,
        telemetry,
        automations,
        intervals,
        metrics,
        workers,
    ):
        app.include_router(module.router(ctx, auth), responses=ERROR_RESPONSES)
    return app
