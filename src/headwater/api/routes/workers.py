"""What a `headwater worker` on another host fetches: a run's packages and its environment.

Workers share no files with the server. A worker downloads the code and configuration
packages a run names (`code_package_id`, `config_package_id`) once per content hash, the
hash in the `X-Headwater-Content-Hash` header, and checks it by unpacking the package
with `unpack_package` (`worker/remote_code.py`); it asks for the run's environment (the
workspace's variables, secrets decrypted with the server's key) before starting it.
Worker and admin keys only: the configuration package holds secrets.toml, and the
environment the secret values.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import ApiError
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
        workspace's, its profile's over them) and the secret values its log masks."""
        run = ctx.run(ws, run_id)
        if ctx.run_environment is None:
            raise ApiError(404, "this server serves no run environments", "not_found")
        env, secret_values = ctx.run_environment(run)
        return {"env": env, "secret_values": secret_values}

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
