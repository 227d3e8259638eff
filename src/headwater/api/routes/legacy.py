"""The older API's trigger route, still called by warehouse procedures and scripts.

`POST /api/v1/workspaces/{ws}/scripts/trigger` with `{job_refs, selectors, dry_run,
refresh, profile}` answers 201 `{"triggered": [...]}`. Unlike the managed service,
bare (`load`) and half (`__deployment__.load`) names are accepted when they name
one job; an ambiguous name is a 400 listing the candidates.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.idempotency import idempotent_async
from headwater.api.json_route import JSONRoute
from headwater.api.limits import check_parameters
from headwater.api.responses import ApiError
from headwater.api.routes.jobs import TriggerJobsRequest, trigger_many
from headwater.core.access import Action
from headwater.workspace.triggers import resolve_ref


class ScriptsTriggerRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    job_refs: list[str] | None = None
    selectors: list[str] | None = None
    dry_run: bool = False
    refresh: bool = False
    profile: str | None = None
    parameters: dict[str, Any] | None = None


def legacy_item(item: dict[str, Any]) -> dict[str, Any]:
    """A new TriggeredJob with the older names beside the new ones."""
    run = item.get("job_run")
    if run is not None:
        run = {
            **run,
            "script_id": run["job_id"],
            "time_started": run["started_at"],
            "time_ended": run["finished_at"],
            "date_added": run["created_at"],
            "date_updated": run["updated_at"],
        }
    return {
        **item,
        "script_id": item["job_id"],
        "run_id": item.get("job_run_id"),
        "run": run,
        "status": item.get("status", "triggered"),
    }


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["legacy"], route_class=JSONRoute)

    @r.post("/api/v1/workspaces/{ws}/scripts/trigger", status_code=201)
    async def scripts_trigger(
        ws: str,
        body: ScriptsTriggerRequest,
        request: Request,
        p: Principal = Depends(auth.require(Action.TRIGGER)),
    ) -> Any:
        ctx.check_ws(ws)
        if not body.job_refs and not body.selectors:
            raise ApiError(400, "give job_refs or selectors", "invalid_request")
        check_parameters(body.parameters)
        jobs, _ = await run_in_threadpool(ctx.store.list_jobs, ws, is_archived=False, limit=100_000)
        by_ref = {j["job_ref"]: j for j in jobs}
        job_ids = []
        for ref in body.job_refs or []:
            full = resolve_ref(ref, list(by_ref))  # `JobRefError`: a 404, or 400 if ambiguous
            job_ids.append(by_ref[full]["id"])
        request_body = TriggerJobsRequest(
            job_ids=job_ids or None,
            selectors=body.selectors,
            profile=body.profile,
            refresh=body.refresh,
            dry_run=body.dry_run,
            parameters=body.parameters,
        )

        async def answer() -> dict[str, Any]:
            result = await trigger_many(ctx, job_ids, body.selectors or [], request_body, p)
            items = result["succeeded"] + result["skipped"]
            return {"triggered": [legacy_item(i) for i in items], "failed": result["failed"]}

        return await idempotent_async(
            ctx.store, request, p, body.model_dump(), answer, status_code=201
        )

    return r
