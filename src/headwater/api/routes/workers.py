"""Remote workers (`headwater worker`): what they fetch, a run's packages and its
environment; and who is live, which pools they serve, their slots (`worker ls`).

Workers share no files with the server. A worker downloads the code and configuration
packages a run names (`code_package_id`, `config_package_id`) once per content hash, the
hash in the `X-Headwater-Content-Hash` header, and checks it by unpacking the package
with `unpack_package` (`worker/remote_code.py`); it asks for the run's environment (the
workspace's variables, secrets decrypted with the server's key) before starting it.
Worker and admin keys only: the configuration package holds secrets.toml, and the
environment the secret values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import ApiError
from headwater.core import beacon, leases
from headwater.core.access import Action
from headwater.workspace.packages import CONTENT_HASH_HEADER

ARCHIVE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The package as dlt lays one out (`manifest.yaml`, `files/`)",
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            CONTENT_HASH_HEADER: {
                "description": "The package's content hash, as dlt computes it",
                "schema": {"type": "string"},
            }
        },
    }
}


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["headwater"], route_class=JSONRoute)
    store = ctx.store
    download = Depends(auth.require(Action.DOWNLOAD_PACKAGES))

    for kind, plural in (("deployment", "deployments"), ("configuration", "configurations")):
        _archive_route(r, ctx, download, kind, plural)

    @r.get("/api/v1/workspaces/{ws}/job-runs/{run_id}/environment")
    def run_environment(
        ws: str,
        run_id: str,
        _p: Principal = Depends(auth.require(Action.READ_RUN_ENVIRONMENT)),
    ) -> Any:
        """Headwater's own, for workers: the environment variables a run starts with (the
        workspace's, its profile's over them), the secret values its log masks, and the
        secret of its beacon (where its dlt reports traces and its job result)."""
        run = ctx.run(ws, run_id)
        if ctx.run_environment is None:
            raise ApiError(404, "this server serves no run environments", "not_found")
        env, secret_values = ctx.run_environment(run)
        # the run's own beacon secret: its dlt reports traces to this server (`core/beacon`)
        secret = beacon.run_secret(ctx.beacon_key, run_id) if ctx.beacon_key else None
        return {"env": env, "secret_values": secret_values, "beacon_secret": secret}

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


def _archive_route(r: APIRouter, ctx: ApiContext, download: Any, kind: str, plural: str) -> None:
    @r.get(
        f"/api/v1/workspaces/{{ws}}/{plural}/{{package_id}}/archive",
        name=f"download_{kind}",
        response_class=FileResponse,
        responses=ARCHIVE_RESPONSE,
    )
    def archive(ws: str, package_id: str, _p: Principal = download) -> Any:
        """Headwater's own, for workers: a stored package's bytes, by id."""
        ctx.check_ws(ws)
        row = ctx.packages.get(package_id)
        if (
            row is None
            or row["workspace_id"] != ws
            or row["kind"] != kind
            or row["version"] is None
            or ctx.package_archive is None
        ):
            raise ApiError(404, f"no {kind} {package_id!r} in this workspace", f"{kind}_not_found")
        # a package whose files left the disk: PackageMissing, a 409
        path = ctx.package_archive(row)
        return FileResponse(
            path,
            media_type="application/gzip",
            filename=f"{kind}-v{row['version']}.tar.gz",
            headers={CONTENT_HASH_HEADER: row["content_hash"]},
        )
