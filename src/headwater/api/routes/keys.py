"""Headwater's own routes for API keys (admin only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import ApiError
from headwater.core.access import Action, Scope
from headwater.store.store import AmbiguousKeyError


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scope: Scope = Scope.TRIGGER
    expires_in_days: int | None = Field(default=None, ge=1, le=36_500)


def key_view(row: dict[str, Any]) -> dict[str, Any]:
    """A key as listed: never the key itself, nor its hash."""
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scope": row["scope"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "last_used_at": row["last_used_at"],
    }


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["headwater"], route_class=JSONRoute)
    admin = Depends(auth.require(Action.ADMIN))

    @r.get("/api/v1/workspaces/{ws}/api-keys")
    def list_keys(ws: str, _p: Principal = admin) -> Any:
        ctx.check_ws(ws)
        return {"items": [key_view(k) for k in ctx.store.list_keys(ws)]}

    @r.post("/api/v1/workspaces/{ws}/api-keys")
    def create_key(ws: str, body: CreateKeyRequest, _p: Principal = admin) -> Any:
        ctx.check_ws(ws)
        expires = (
            datetime.now(UTC) + timedelta(days=body.expires_in_days)
            if body.expires_in_days
            else None
        )
        row, secret = ctx.store.create_key(ws, body.name, body.scope.value, expires_at=expires)
        return {**key_view(row), "key": secret}

    @r.post("/api/v1/workspaces/{ws}/api-keys/{id_or_name}/-revoke")
    def revoke_key(ws: str, id_or_name: str, _p: Principal = admin) -> Any:
        ctx.check_ws(ws)
        try:
            revoked = ctx.store.revoke_key(ws, id_or_name)
        except AmbiguousKeyError as ex:
            candidates = [key_view(k) for k in ex.candidates]
            raise ApiError(
                409,
                f"{len(candidates)} active API keys are named {id_or_name!r}; nothing was"
                " revoked: revoke one by its id ("
                + ", ".join(
                    f"{k['id']} created {k['created_at']:%Y-%m-%d %H:%M}" for k in candidates
                )
                + ")",
                "api_key_ambiguous",
                {"candidates": candidates},
            ) from ex
        if not revoked:
            raise ApiError(404, f"no active API key {id_or_name!r}", "api_key_not_found")
        auth.clear()
        return {"items": [key_view(k) for k in revoked]}

    return r
