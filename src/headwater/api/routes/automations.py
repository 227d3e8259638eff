"""Headwater's own routes for automations: the rules in force and the delivery log.

Secrets never appear: apprise URLs are shown as apprise's privacy view with secret
references kept as names, webhook secrets as their references, payloads not at all.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.automations.rules import masked_url
from headwater.core.access import Action


def automation_view(rule: dict[str, Any]) -> dict[str, Any]:
    hook = rule.get("webhook")
    return {
        "name": rule["name"],
        "on": rule["on"],
        "enabled": rule.get("enabled", True),
        "notify": [masked_url(u) for u in rule.get("notify") or []],
        "webhook": {"url": hook["url"], "secret": hook.get("secret")} if hook else None,
        "actions": rule.get("actions") or [],
        "count": rule.get("count", 1),
        "after_s": rule.get("after"),
    }


def delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivery_id": row["delivery_id"],
        "automation": row["automation"],
        "event": row["event"],
        "kind": row["kind"],
        "target": masked_url(row["target"]) if row["kind"] == "notify" else row["target"],
        "run_id": row["run_id"],
        "job_id": row["job_id"],
        "status": row["status"],
        "attempts": row["attempts"],
        "history": row["history"],
        "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None,
        "created_at": row["created_at"],
        "delivered_at": row["delivered_at"],
    }


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["headwater"], route_class=JSONRoute)
    store = ctx.store

    @r.get("/api/v1/workspaces/{ws}/automations")
    def list_automations(ws: str, _p: Principal = Depends(auth.require(Action.READ))) -> Any:
        """The automations of the last good headwater.toml."""
        ctx.check_ws(ws)
        config = (store.workspace_config(ws) or {}).get("config") or {}
        return {"items": [automation_view(a) for a in config.get("automations") or []]}

    @r.get("/api/v1/workspaces/{ws}/deliveries")
    def list_deliveries(
        ws: str,
        failed: bool = False,
        limit: int = Query(100, ge=1, le=1000),
        _p: Principal = Depends(auth.require(Action.READ)),
    ) -> Any:
        """The delivery log, newest first; `failed`: given up on or still failing."""
        ctx.check_ws(ws)
        return {
            "items": [
                delivery_view(d) for d in store.list_deliveries(ws, failed=failed, limit=limit)
            ]
        }

    return r
