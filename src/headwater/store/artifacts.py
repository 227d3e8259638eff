"""Artifacts of runs: files kept for people to read (dbt's `run_results.json` and
`manifest.json`), one row per run and file name, replaced when saved again."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import RunArtifact
from headwater.store.sql import utcnow

A = RunArtifact.__table__
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
"""A larger file is not kept (the manifests of big dbt projects reach tens of MB)."""

LIST_ARTIFACTS = (
    select(A.c.run_id, A.c.name, A.c.source, A.c.size, A.c.created_at)
    .where(A.c.run_id == bindparam("b_run_id"))
    .order_by(A.c.name)
)
GET_ARTIFACT = select(A).where(A.c.run_id == bindparam("b_run_id"), A.c.name == bindparam("b_name"))
DELETE_ARTIFACTS = delete(A).where(
    A.c.run_id == bindparam("b_run_id"), A.c.name.in_(bindparam("b_names", expanding=True))
)
INSERT_ARTIFACT = insert(A)


class Artifacts(StoreBase):
    def save_artifacts(
        self,
        run_id: str,
        files: Mapping[str, bytes],
        source: str,
        now: datetime | None = None,
    ) -> list[str]:
        """Keep `files` (name -> content) for the run, replacing same-named ones; files
        over `MAX_ARTIFACT_BYTES` are left out. Answers the names kept."""
        now = now or utcnow()
        kept = {n: c for n, c in files.items() if len(c) <= MAX_ARTIFACT_BYTES}
        if not kept:
            return []
        with write(self.engine) as conn:
            conn.execute(DELETE_ARTIFACTS, {"b_run_id": run_id, "b_names": list(kept)})
            conn.execute(
                INSERT_ARTIFACT,
                [
                    dict(
                        run_id=run_id,
                        name=name,
                        source=source,
                        content=content,
                        size=len(content),
                        created_at=now,
                    )
                    for name, content in kept.items()
                ],
            )
        return sorted(kept)

    def list_artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """The run's artifacts without their content: name, source, size, created_at."""
        return self._all(LIST_ARTIFACTS, {"b_run_id": run_id})

    def get_artifact(self, run_id: str, name: str) -> dict[str, Any] | None:
        """One artifact with its `content` (bytes)."""
        return self._one(GET_ARTIFACT, {"b_run_id": run_id, "b_name": name})
