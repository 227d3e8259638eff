"""The organization a Headwater server is: one, holding its workspace.

`dlthub workspace info|list|connect` read these; an API key is a workspace
service account, so `/api/v1/me` (humans only) answers 403 as the service does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import MAX_INT, ApiError
from headwater.core.access import Action, Scope

DATAPLANE_ID = "headwater"
"""The one data plane a Headwater server has: itself."""


class CreateWorkspaceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None


class SetRegionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    dataplane_id: str


WORKSPACE_ROLES = {
    Scope.ADMIN: "owner",
    Scope.TRIGGER: "developer",
    Scope.READ: "viewer",
    Scope.WORKER: "viewer",
}
"""The dltHub workspace role a key's scope shows as (the API knows no other roles)."""


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["organizations"], route_class=JSONRoute)
    see = Depends(auth.require(Action.SEE_JOBS))

    def org_id() -> str:
        return ser.system_id("organization", ctx.ws_id)

    def organization() -> dict[str, Any]:
        ws = ctx.store.get_workspace(ctx.ws_id)
        assert ws is not None
        return {
            "id": org_id(),
            "name": "headwater",
            "description": "this Headwater server",
            "dataplane_id": DATAPLANE_ID,
            "created_at": ws["created_at"],
            "updated_at": ws["updated_at"],
        }

    def check_org(org: str) -> None:
        if org != org_id():
            raise ApiError(404, f"no organization {org!r} on this server", "organization_not_found")

    def membership(p: Principal) -> dict[str, Any]:
        return {
            "email": f"{p.name}@headwater.local",
            "user_id": ser.system_id("key", p.key_id),
            "organization_membership_id": ser.system_id("membership", p.key_id),
        }

    def workspace() -> dict[str, Any]:
        ws = ctx.store.get_workspace(ctx.ws_id)
        assert ws is not None
        return ser.workspace(ws, ctx.base_url(), ctx.manifest_status())

    @r.get("/api/v1/me")
    def me(_p: Principal = see) -> Any:
        raise ApiError(403, "an API key is a service account, not a user", "not_authorized")

    @r.get("/api/v1/organizations")
    def list_organizations(
        limit: int = Query(100, ge=0, le=1000),
        offset: int = Query(0, ge=0, le=MAX_INT),
        _p: Principal = see,
    ) -> Any:
        items = [organization()][offset : offset + limit]
        return ser.page(items, 1, limit, offset)

    @r.get("/api/v1/organizations/{org}")
    def get_organization(org: str, _p: Principal = see) -> Any:
        check_org(org)
        return organization()

    @r.get("/api/v1/organizations/{org}/me")
    def organization_me(org: str, p: Principal = see) -> Any:
        check_org(org)
        role = "owner" if p.scope.value == "admin" else "member"
        ws_role = WORKSPACE_ROLES[p.scope]
        return {
            **membership(p),
            "organization": organization(),
            "role": role,
            "workspace_memberships": [{"role": ws_role, "workspace": workspace()}],
        }

    @r.get("/api/v1/organizations/{org}/workspaces")
    def list_workspaces(
        org: str,
        limit: int = Query(100, ge=0, le=1000),
        offset: int = Query(0, ge=0, le=MAX_INT),
        include_archived: bool = False,
        _p: Principal = see,
    ) -> Any:
        check_org(org)
        ws = {**workspace(), "member_count": 1, "owner_members": []}
        listed = [ws] if include_archived or ws["archived_at"] is None else []
        return ser.page(listed[offset : offset + limit], len(listed), limit, offset)

    @r.post("/api/v1/organizations/{org}/workspaces", status_code=201)
    def create_workspace(
        org: str,
        body: CreateWorkspaceRequest,
        _p: Principal = Depends(auth.require(Action.ADMIN)),
    ) -> Any:
        """A Headwater server serves exactly one workspace: creating another is refused."""
        check_org(org)
        raise ApiError(
            409,
            f"cannot create workspace {body.name!r}: this Headwater server serves exactly one"
            f" workspace ({ctx.ws_id}); start another Headwater server for another workspace",
            "single_workspace_server",
        )

    @r.post("/api/v1/organizations/{org}/-set-region")
    def set_region(
        org: str,
        body: SetRegionRequest = Body(...),
        _p: Principal = Depends(auth.require(Action.ADMIN)),
    ) -> Any:
        """The organization's region is this server's data plane, and nothing else."""
        check_org(org)
        if body.dataplane_id != DATAPLANE_ID:
            # as the service answers a second region for an organization that has one
            raise ApiError(
                400,
                f"this organization's data plane is {DATAPLANE_ID!r} (this Headwater server)"
                f" and cannot be changed to {body.dataplane_id!r}",
                "region_already_set",
            )
        return organization()

    @r.get("/api/v1/workspaces/{ws}/me")
    def workspace_me(ws: str, p: Principal = see) -> Any:
        ctx.check_ws(ws)
        ws_role = WORKSPACE_ROLES[p.scope]
        return {
            **membership(p),
            "organization": organization(),
            "organization_role": "owner" if p.scope.value == "admin" else "member",
            "workspace": workspace(),
            "workspace_role": ws_role,
        }

    @r.get("/api/v1/dataplanes")
    def dataplanes(_p: Principal = see) -> Any:
        return {
            "items": [
                {
                    "id": DATAPLANE_ID,
                    "name": "headwater",
                    "region": "local",
                    "description": "this server",
                }
            ]
        }

    return r
