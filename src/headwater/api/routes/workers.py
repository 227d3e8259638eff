"""Remote workers (`--executor celery`): who is live, which pools they serve, their slots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.core import leases
from headwater.core.access import Action


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["headwater"], route_class=JSONRoute)
    store = ctx.store

    @r.get("/api/v1/workspaces/{ws}/workers")
    def list_workers(ws: str, _p: Principal = Depends(auth.require(Action.READ))) -> Any:
        """Every worker that ever registered: live or not, its pools, slots and slots in
        use, its last heartbeat; and per pool, live workers, slots, runs holding a slot."""
        ctx.check_ws(ws)
        now = datetime.now(UTC)
        states = store.worker_states()
        rows = {w["name"]: w for w in store.workers()}
        load = store.pool_load()
        capacity = leases.pool_capacity(states, load, now)
        pools: dict[str, dict[str, Any]] = {}
        items = []
        for w in states:
            live = w.is_live(now)
            row = rows[w.name]
            items.append(
                {
                    "name": w.name,
                    "host": row["host"],
                    "pid": row["pid"],
                    "pools": list(w.pools),
                    "slots": w.slots,
                    "in_use": w.in_use,
                    "live": live,
                    "heartbeat_at": w.heartbeat_at.isoformat(),
                    "started_at": row["started_at"].isoformat(),
                    "stopped_at": w.stopped_at.isoformat() if w.stopped_at else None,
                }
            )
            for pool in w.pools:
                p = pools.setdefault(pool, {"pool": pool, "live_workers": 0, "slots": 0})
                if live:
                    p["live_workers"] += 1
                    p["slots"] += w.slots
        for pool in load:
            pools.setdefault(pool, {"pool": pool, "live_workers": 0, "slots": 0})
        for pool, p in pools.items():
            p["runs"] = load.get(pool, 0)
            p["free"] = capacity.get(pool, 0)
        return {"items": items, "pools": sorted(pools.values(), key=lambda p: p["pool"])}

    return r
