"""The workspace, its data-plane token, and Headwater's reload route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.core.access import Action


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["workspaces"])

    @r.get("/api/v1/workspaces/{ws}")
    def get_workspace(ws: str, _p: Principal = Depends(auth.require(Action.SEE_JOBS))) -> Any:
        ctx.check_ws(ws)
        row = ctx.store.get_workspace(ws)
        assert row is not None
        return ser.workspace(row, ctx.base_url(), ctx.manifest_status())

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
