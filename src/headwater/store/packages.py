"""Statements for uploaded code and configuration packages."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from headwater.store.db import write
from headwater.store.keys import key_hash
from headwater.store.models import ManifestVersion, Package
from headwater.store.sql import new_id, row_dict, utcnow

P = Package.__table__
MV = ManifestVersion.__table__
KINDS = ("deployment", "configuration")


class PackageStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reader = engine.execution_options(readonly=True)

    def issue(self, ws_id: str, kind: str, created_by: str) -> tuple[dict[str, Any], str]:
        """A package row waiting for its upload, and the one-time token for that upload."""
        token = "hw_upload_" + secrets.token_urlsafe(32)
        now = utcnow()
        row = dict(
            id=new_id(),
            workspace_id=ws_id,
            kind=kind,
            version=None,
            content_hash=None,
            file_count=0,
            size_bytes=0,
            requirements_size_bytes=0,
            profiles=[],
            files=[],
            upload_token_hash=key_hash(token),
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        with write(self.engine) as conn:
            conn.execute(insert(P).values(**row))
        return row, token

    def get(self, package_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return row_dict(conn.execute(select(P).where(P.c.id == package_id)).first())

    def with_hash(
        self, ws_id: str, kind: str, content_hash: str, created_by: str
    ) -> dict[str, Any] | None:
        """The newest numbered package of `kind` with `content_hash` that `created_by` stored."""
        with self.reader.connect() as conn:
            return row_dict(
                conn.execute(
                    select(P)
                    .where(
                        P.c.workspace_id == ws_id,
                        P.c.kind == kind,
                        P.c.content_hash == content_hash,
                        P.c.created_by == created_by,
                        P.c.version.is_not(None),
                    )
                    .order_by(P.c.version.desc())
                    .limit(1)
                ).first()
            )

    def awaiting(self, package_id: str, token: str) -> dict[str, Any] | None:
        """The issued package `token` may still upload to, or None (unknown, used, wrong)."""
        with self.reader.connect() as conn:
            return row_dict(
                conn.execute(
                    select(P).where(
                        P.c.id == package_id,
                        P.c.upload_token_hash == key_hash(token),
                        P.c.version.is_(None),
                    )
                ).first()
            )

    def deployed(self, ws_id: str) -> list[tuple[int, str, str | None]]:
        """`(manifest version, code package id, configuration package id)` of every remote
        deploy, newest first."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(MV.c.version, MV.c.code_package_id, MV.c.config_package_id)
                .where(MV.c.workspace_id == ws_id, MV.c.code_package_id.is_not(None))
                .order_by(MV.c.version.desc())
            ).all()
        return [(int(r.version), str(r.code_package_id), r.config_package_id) for r in rows]

    def complete(
        self,
        package_id: str,
        token: str,
        *,
        content_hash: str,
        files: list[dict[str, Any]],
        size_bytes: int,
        requirements_size_bytes: int = 0,
        profiles: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """Number an issued package once its files are safely on disk; the token works once."""
        with write(self.engine) as conn:
            row = conn.execute(
                select(P).where(
                    P.c.id == package_id,
                    P.c.upload_token_hash == key_hash(token),
                    P.c.version.is_(None),
                )
            ).first()
            if row is None:
                return None
            version = 1 + int(
                conn.execute(
                    select(func.coalesce(func.max(P.c.version), 0)).where(
                        P.c.workspace_id == row.workspace_id, P.c.kind == row.kind
                    )
                ).scalar_one()
            )
            conn.execute(
                update(P)
                .where(P.c.id == package_id)
                .values(
                    version=version,
                    content_hash=content_hash,
                    files=files,
                    file_count=len(files),
                    size_bytes=size_bytes,
                    requirements_size_bytes=requirements_size_bytes,
                    profiles=profiles or [],
                    upload_token_hash=None,
                    updated_at=utcnow(),
                )
            )
            return row_dict(conn.execute(select(P).where(P.c.id == package_id)).first())

    def list(
        self,
        ws_id: str,
        kind: str,
        *,
        version: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Uploaded packages, newest version first."""
        cond = [P.c.workspace_id == ws_id, P.c.kind == kind, P.c.version.is_not(None)]
        if version is not None:
            cond.append(P.c.version == version)
        with self.reader.connect() as conn:
            total = conn.execute(select(func.count()).select_from(P).where(*cond)).scalar_one()
            rows = conn.execute(
                select(P).where(*cond).order_by(P.c.version.desc()).limit(limit).offset(offset)
            ).all()
        return [dict(r._mapping) for r in rows], int(total)

    def latest(self, ws_id: str, kind: str) -> dict[str, Any] | None:
        rows, _ = self.list(ws_id, kind, limit=1)
        return rows[0] if rows else None
