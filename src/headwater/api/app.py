"""The HTTP API: the dltHub runtime API's paths and shapes, served by Headwater.

Control plane under `/api/v1`, data plane (logs) under `/logs/v1`; one server
is both, so `dataplane_url` is its own base. Every route but `/health` needs
an API key.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from headwater.api.auth import Authenticator
from headwater.api.context import ApiContext
from headwater.api.limits import BodyLimit, RejectNul
from headwater.api.responses import (
    ERROR_RESPONSES,
    ApiError,
    JSONBody,
    document_errors,
    error_body,
)
from headwater.api.routes import (
    deployments,
    jobs,
    keys,
    legacy,
    logs,
    organizations,
    runs,
    telemetry,
    webhooks,
    workspace,
    workspace_variables,
)

__all__ = ["ApiContext", "create_app"]

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Headwater", version="0.1.0", default_response_class=JSONBody)
    auth = Authenticator(ctx.store, ctx.ws_id)
    app.state.auth = auth
    app.add_middleware(BodyLimit)
    app.add_middleware(RejectNul)
    document_errors(app)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, ex: ApiError) -> Response:
        return error_body(ex.status_code, str(ex.detail), ex.code, ex.extra)

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

    @app.exception_handler(Exception)
    async def _server_error(_req: Request, _ex: Exception) -> Response:
        # Starlette logs the traceback after this answer: it re-raises to the server
        return error_body(
            500, "internal server error; the server log has the details", "internal_error"
        )

    @app.get("/health", tags=["headwater"], responses=ERROR_RESPONSES)
    def health() -> Any:
        """No key needed: is the server up, and which workspace does it serve."""
        return {"status": "ok", "workspace_id": ctx.ws_id}

    # the trigger routes' routers first: requests are matched against routes in order
    routers = (jobs, runs, workspace, logs, keys, legacy, deployments, organizations, webhooks)
    for module in (*routers, workspace_variables, telemetry):
        app.include_router(module.router(ctx, auth), responses=ERROR_RESPONSES)
    return app
