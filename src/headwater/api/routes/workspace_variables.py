"""Workspace variables on the data plane: `dlthub variable list|set|delete`.

Secret values are write-only: the API answers them as `null`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import ApiError
from headwater.core.access import Action
from headwater.store.vault import WORKSPACE_SCOPE


class Upsert(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    type: str = "plain"
    value: str


class UpdateVariablesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    profile: str | None = None
    upserts: list[Upsert] = []
    deletes: list[str] = []


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["variables"], route_class=JSONRoute)
    path = "/api/v1/workspaces/{ws}/variables"

    @r.get(path)
    def list_variables(
        ws: str,
        scope_profile: str | None = None,
        is_workspace_scope: bool = False,
        _p: Principal = Depends(auth.require(Action.READ)),
    ) -> Any:
        ctx.check_ws(ws)
        if scope_profile is not None and is_workspace_scope:
            raise ApiError(
                400, "give scope_profile or is_workspace_scope, not both", "invalid_request"
            )
        profile = WORKSPACE_SCOPE if is_workspace_scope else scope_profile
        return {"scopes": ctx.variables.scopes(ws, profile)}

    @r.patch(path)
    def change_variables(
        ws: str, body: UpdateVariablesRequest, p: Principal = Depends(auth.require(Action.ADMIN))
    ) -> Any:
        ctx.check_ws(ws)
        profile = body.profile or WORKSPACE_SCOPE
        # `VariableError`: a 400
        done = ctx.variables.apply(
            ws,
            profile,
            [(item.name, item.type, item.value) for item in body.upserts],
            body.deletes,
            p.key_id,
        )
        results = [{"name": name, "status": status} for name, status in done]
        return {"results": results}

    return r
