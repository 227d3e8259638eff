"""`GET /metrics`: Prometheus' text format, for a read or admin key (see `api/metrics.py`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from headwater.api import metrics
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.core.access import Action


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["headwater"])

    @r.get("/metrics", response_class=Response)
    def scrape(_p: Principal = Depends(auth.require(Action.READ))) -> Response:
        """Runs by job and outcome, durations, schedule delay, queue, active runs, API
        latency by route and trigger rejections, for the whole server."""
        return Response(metrics.render(ctx.store, ctx.ws_id), media_type=metrics.CONTENT_TYPE)

    return r
