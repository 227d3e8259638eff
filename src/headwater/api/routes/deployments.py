"""Remote deploy: code and configuration packages, and reconciling jobs to a posted manifest.

`dlthub deploy` asks for an upload (`-issue-upload`), sends the package to the
`upload_url` with a one-time token, then posts the manifest to `-deploy`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from pydantic import BaseModel, ConfigDict

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import MAX_INT, ApiError
from headwater.core.access import Action
from headwater.store.packages import PackageStore
from headwater.workspace.manifest import ManifestError
from headwater.workspace.packages import MAX_PACKAGE_BYTES, PackageError, read_package

MAX_PAGE = 1000


class DeployWorkspaceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    job_definition_engine_version: int
    job_definition_hash: str
    jobs: list[dict[str, Any]]
    deployment_module: str | None = None
    description: str | None = None
    dry_run: bool = False


def package_view(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "version": row["version"],
        "content_hash": row["content_hash"],
        "file_count": row["file_count"],
        "size_bytes": row["size_bytes"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
    if row["kind"] == "deployment":
        out["requirements_size_bytes"] = row["requirements_size_bytes"]
    else:
        out["profiles"] = row["profiles"]
    return out


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["deployments"], route_class=JSONRoute)
    packages = ctx.packages

    def package(ws: str, kind: str, package_id: str) -> dict[str, Any]:
        ctx.check_ws(ws)
        row = packages.get(package_id)
        if (
            row is None
            or row["workspace_id"] != ws
            or row["kind"] != kind
            or row["version"] is None
        ):
            raise ApiError(404, f"no {kind} {package_id!r} in this workspace", f"{kind}_not_found")
        return row

    for kind, plural, id_key in (
        ("deployment", "deployments", "deployment_id"),
        ("configuration", "configurations", "configuration_id"),
    ):
        _routes(r, ctx, auth, packages, ctx.accept_package, package, kind, plural, id_key)

    @r.post("/api/v1/workspaces/{ws}/-deploy")
    def deploy_workspace(
        ws: str, body: DeployWorkspaceRequest, _p: Principal = Depends(auth.require(Action.ADMIN))
    ) -> Any:
        ctx.check_ws(ws)
        if body.job_definition_engine_version != 2:
            raise ApiError(
                400,
                f"job definition engine version {body.job_definition_engine_version} is not"
                " supported; this server speaks version 2 (dlt 1.31)",
                "unsupported_engine_version",
            )
        try:
            return ctx.deploy(body.model_dump(), body.dry_run)
        except ManifestError as ex:
            raise ApiError(400, f"invalid manifest: {ex.detail}", "invalid_manifest") from ex

    return r


def _routes(
    r: APIRouter,
    ctx: ApiContext,
    auth: Authenticator,
    packages: PackageStore,
    accept_package: Callable[[dict[str, Any], bytes], None],
    package: Callable[[str, str, str], dict[str, Any]],
    kind: str,
    plural: str,
    id_key: str,
) -> None:
    base = f"/api/v1/workspaces/{{ws}}/{plural}"

    @r.get(base, name=f"list_{plural}")
    def list_packages(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_INT),
        version: int | None = Query(None, ge=0, le=MAX_INT),
        _p: Principal = Depends(auth.require(Action.SEE_JOBS)),
    ) -> Any:
        ctx.check_ws(ws)
        rows, total = packages.list(ws, kind, version=version, limit=limit, offset=offset)
        return ser.page([package_view(x) for x in rows], total, limit, offset)

    @r.get(f"{base}/latest", name=f"latest_{kind}")
    def latest(ws: str, _p: Principal = Depends(auth.require(Action.SEE_JOBS))) -> Any:
        ctx.check_ws(ws)
        row = packages.latest(ws, kind)
        if row is None:
            raise ApiError(404, f"nothing was uploaded as a {kind} yet", f"{kind}_not_found")
        return package_view(row)

    @r.post(f"{base}/-issue-upload", name=f"issue_{kind}_upload")
    def issue_upload(ws: str, p: Principal = Depends(auth.require(Action.ADMIN))) -> Any:
        ctx.check_ws(ws)
        row, token = packages.issue(ws, kind, p.key_id)
        return {
            id_key: row["id"],
            "upload_url": f"{ctx.base_url()}/api/v1/workspaces/{ws}/{plural}/{row['id']}/-upload",
            "upload_token": token,
        }

    @r.post(f"{base}/{{package_id}}/-upload", name=f"upload_{kind}")
    async def upload(
        ws: str,
        package_id: str,
        request: Request,
        file: UploadFile = File(...),
        requirements_file: UploadFile | None = File(None),
    ) -> Any:
        ctx.check_ws(ws)
        header = request.headers.get("authorization", "")
        token = header.partition(" ")[2].strip()
        if not token:
            raise ApiError(401, "an upload token is required", "not_authenticated")
        row = packages.get(package_id)
        if row is None or row["workspace_id"] != ws or row["kind"] != kind:
            raise ApiError(404, f"no {kind} upload {package_id!r}", f"{kind}_not_found")
        data = await file.read(MAX_PACKAGE_BYTES + 1)
        requirements = await requirements_file.read() if requirements_file is not None else b""
        try:
            read = read_package(data)
        except PackageError as ex:
            raise ApiError(400, f"bad {kind} package: {ex}", "invalid_package") from ex
        done = packages.complete(
            package_id,
            token,
            content_hash=read.content_hash,
            files=read.files,
            size_bytes=read.size_bytes,
            requirements_size_bytes=len(requirements),
            profiles=read.profiles if kind == "configuration" else [],
        )
        if done is None:
            raise ApiError(
                401, "upload token is invalid or was used already", "invalid_upload_token"
            )
        accept_package(done, data)
        return package_view(done)

    @r.get(f"{base}/{{package_id}}", name=f"get_{kind}")
    def get_package(
        ws: str, package_id: str, _p: Principal = Depends(auth.require(Action.SEE_JOBS))
    ) -> Any:
        return package_view(package(ws, kind, package_id))

    @r.get(f"{base}/{{package_id}}/files", name=f"get_{kind}_files")
    def files(ws: str, package_id: str, _p: Principal = Depends(auth.require(Action.READ))) -> Any:
        row = package(ws, kind, package_id)
        return {"engine_version": 1, "files": row["files"]}
