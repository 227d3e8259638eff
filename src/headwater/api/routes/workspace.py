"""The workspace, its data-plane token, and Headwater's reload route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import MAX_INT
from headwater.core.access import Action


class UpdateWorkspaceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["workspaces"], route_class=JSONRoute)

    @r.get("/api/v1/workspaces/{ws}")
    def get_workspace(ws: str, _p: Principal = Depends(auth.require(Action.SEE_JOBS))) -> Any:
        ctx.check_ws(ws)
        row = ctx.store.get_workspace(ws)
        assert row is not None
        return ser.workspace(row, ctx.base_url(), ctx.manifest_status())

    @r.patch("/api/v1/workspaces/{ws}")
    def update_workspace(
        ws: str, body: UpdateWorkspaceRequest, _p: Principal = Depends(auth.require(Action.ADMIN))
    ) -> Any:
        """Rename or describe the workspace; an absent key keeps its value."""
        ctx.check_ws(ws)
        changes = body.model_dump(exclude_unset=True)
        if changes.get("name") is None:
            changes.pop("name", None)
        row = ctx.store.update_workspace(ws, **changes)
        assert row is not None
        return ser.workspace(row, ctx.base_url(), ctx.manifest_status())

    @r.post("/api/v1/workspaces/{ws}/-archive")
    def archive_workspace(ws: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        """Archive the workspace: no trigger (API, schedule, chain, webhook) starts a run
        until it is unarchived; runs already queued or running go on. Archiving an
        archived workspace keeps its `archived_at`."""
        ctx.check_ws(ws)
        row = ctx.store.set_workspace_archived(ws, True)
        assert row is not None
        return ser.workspace(row, ctx.base_url(), ctx.manifest_status())

    @r.post("/api/v1/workspaces/{ws}/-unarchive")
    def unarchive_workspace(ws: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        """Let the workspace run again; schedule ticks missed while archived are not made up."""
        ctx.check_ws(ws)
        row = ctx.store.set_workspace_archived(ws, False)
        assert row is not None
        return ser.workspace(row, ctx.base_url(), ctx.manifest_status())

    @r.get("/api/v1/workspaces/{ws}/members")
    def members(
        ws: str,
        limit: int = Query(100, ge=0, le=1000),
        offset: int = Query(0, ge=0, le=MAX_INT),
        _p: Principal = Depends(auth.require(Action.READ)),
    ) -> Any:
        """The workspace's principals: its active API keys, as service accounts."""
        ctx.check_ws(ws)
        # dltHub's roles are owner, developer and viewer: a worker key can neither trigger
        # nor change anything through the API, so it shows as a viewer
        roles = {"admin": "owner", "trigger": "developer", "read": "viewer", "worker": "viewer"}
        items = [
            {
                "id": k["id"],
                "email": f"{k['name']}@headwater.local",
                "name": k["name"],
                "role": roles[k["scope"]],
                "user_id": ser.system_id("key", k["id"]),
                "organization_membership_id": ser.system_id("membership", k["id"]),
                "kind": "service_account",
            }
            for k in ctx.store.list_keys(ws)
            if k["revoked_at"] is None
        ]
        return ser.page(items[offset : offset + limit], len(items), limit, offset)

    @r.post("/api/v1/workspaces/{ws}/-issue-dataplane-token")
    def issue_dataplane_token(
        ws: str, p: Principal = Depends(auth.require(Action.SEE_JOBS))
    ) -> Any:
        """A short-lived token for the data plane (logs), with the scope of the calling key."""
        ctx.check_ws(ws)
        token, expires = auth.mint_dataplane_token(p)
        return {"token": token, "expires_at": int(expires.timestamp())}

    @r.post("/api/v1/workspaces/{ws}/-reload", tags=["headwater"])
    def reload_workspace(ws: str, _p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        """Headwater: read the workspace's `__deployment__.py` again and reconcile jobs."""
        ctx.check_ws(ws)
        return ctx.reload_manifest()

    return r
