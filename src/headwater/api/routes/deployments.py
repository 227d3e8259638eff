"""Remote deploy: code and configuration packages, and reconciling jobs to a posted manifest.

`dlthub deploy` asks for an upload (`-issue-upload`), sends the package to the
`upload_url` with a one-time token, then posts the manifest to `-deploy`.

An upload's token is checked before its body is read; the body streams to a
temporary file, and the package is checked and unpacked in a thread, within
bounds (`workspace/packages.py`). Its row gets a version only once its files are
on disk. Package ids are for keys that may read packages (read, admin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from headwater.api import serialize as ser
from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.json_route import JSONRoute
from headwater.api.responses import MAX_INT, ApiError
from headwater.core.access import Action
from headwater.store.packages import PackageStore
from headwater.workspace.manifest import ManifestError
from headwater.workspace.packages import (
    PackageError,
    PackageMissing,
    PackageTooLarge,
    ReadPackage,
)

MAX_PAGE = 1000
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "requirements_file": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}
"""The upload's body as OpenAPI tells it: the route reads the form itself, after the token."""


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
        except PackageMissing as ex:
            raise ApiError(
                409,
                f"the uploaded code cannot be used, nothing was deployed: {ex}; upload it again",
                "package_missing",
            ) from ex

    return r


def _routes(
    r: APIRouter,
    ctx: ApiContext,
    auth: Authenticator,
    packages: PackageStore,
    accept_package: Callable[[str, BinaryIO], ReadPackage],
    package: Callable[[str, str, str], dict[str, Any]],
    kind: str,
    plural: str,
    id_key: str,
) -> None:
    base = f"/api/v1/workspaces/{{ws}}/{plural}"

    # a package id is good for its files (READ) and nothing a trigger key may do: trigger
    # keys see no package ids (their own runs still name the code version they ran)
    @r.get(base, name=f"list_{plural}")
    def list_packages(
        ws: str,
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_INT),
        version: int | None = Query(None, ge=0, le=MAX_INT),
        _p: Principal = Depends(auth.require(Action.READ)),
    ) -> Any:
        ctx.check_ws(ws)
        rows, total = packages.list(ws, kind, version=version, limit=limit, offset=offset)
        return ser.page([package_view(x) for x in rows], total, limit, offset)

    @r.get(f"{base}/latest", name=f"latest_{kind}")
    def latest(ws: str, _p: Principal = Depends(auth.require(Action.READ))) -> Any:
        ctx.check_ws(ws)
        row = packages.latest(ws, kind)
        if row is None:
            raise ApiError(404, f"nothing was uploaded as a {kind} yet", f"{kind}_not_found")
        if not ctx.package_stored(row):
            # a client uploads again on a 404: the files come back under the same hash
            raise ApiError(
                404,
                f"{kind} version {row['version']} is missing on the server's disk; upload it again",
                f"{kind}_not_found",
            )
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

    @r.post(f"{base}/{{package_id}}/-upload", name=f"upload_{kind}", openapi_extra=UPLOAD_BODY)
    async def upload(ws: str, package_id: str, request: Request) -> Any:
        ctx.check_ws(ws)
        header = request.headers.get("authorization", "")
        token = header.partition(" ")[2].strip()
        if not token:
            raise ApiError(401, "an upload token is required", "not_authenticated")
        # the token first: nothing of the body is read for an unknown or used one
        row = packages.get(package_id)
        if row is None or row["workspace_id"] != ws or row["kind"] != kind:
            raise ApiError(404, f"no {kind} upload {package_id!r}", f"{kind}_not_found")
        if packages.awaiting(package_id, token) is None:
            raise ApiError(
                401, "upload token is invalid or was used already", "invalid_upload_token"
            )
        try:
            # file parts spool to temporary files on disk past 1 MiB (Starlette)
            form = await request.form(max_files=2, max_fields=2)
        except HTTPException as ex:
            raise ApiError(
                400, f"unreadable multipart body: {ex.detail}", "invalid_request"
            ) from ex
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ApiError(
                    400,
                    "the package is missing: send it as the multipart file `file`",
                    "invalid_request",
                )
            requirements = form.get("requirements_file")
            requirements_size = (
                int(requirements.size or 0) if isinstance(requirements, UploadFile) else 0
            )
            try:
                read = await run_in_threadpool(accept_package, kind, file.file)
            except PackageTooLarge as ex:
                raise ApiError(413, f"{kind} package refused: {ex}", "payload_too_large") from ex
            except PackageError as ex:
                raise ApiError(400, f"bad {kind} package: {ex}", "invalid_package") from ex
        finally:
            await form.close()
        # numbered only now that its files are on disk: a failed upload leaves `latest` alone
        done = await run_in_threadpool(
            packages.complete,
            package_id,
            token,
            content_hash=read.content_hash,
            files=read.files,
            size_bytes=read.size_bytes,
            requirements_size_bytes=requirements_size,
            profiles=read.profiles if kind == "configuration" else [],
        )
        if done is None:
            raise ApiError(
                401, "upload token is invalid or was used already", "invalid_upload_token"
            )
        return package_view(done)

    @r.get(f"{base}/{{package_id}}", name=f"get_{kind}")
    def get_package(
        ws: str, package_id: str, _p: Principal = Depends(auth.require(Action.READ))
    ) -> Any:
        return package_view(package(ws, kind, package_id))

    @r.get(f"{base}/{{package_id}}/files", name=f"get_{kind}_files")
    def files(ws: str, package_id: str, _p: Principal = Depends(auth.require(Action.READ))) -> Any:
        row = package(ws, kind, package_id)
        return {"engine_version": 1, "files": row["files"]}
