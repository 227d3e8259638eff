"""The workspace row: created on first start, renamed, archived."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headwater.store.base import Flag, StoreBase
from headwater.store.db import write
from headwater.store.sql import (
    FIRST_WORKSPACE,
    GET_WORKSPACE,
    INSERT_WORKSPACE,
    RESTART_WORKSPACE_SCHEDULES,
    UPDATE_WORKSPACE,
    new_id,
    row_dict,
    utcnow,
)


def _archived(on: bool, now: datetime) -> dict[str, Any]:
    return {"archived_at": now if on else None, "updated_at": now}


WORKSPACE_ARCHIVED = Flag(
    read=GET_WORKSPACE,
    write=UPDATE_WORKSPACE,
    is_set=lambda ws: ws["archived_at"] is not None,
    values=_archived,
    events=("workspace.archived", "workspace.unarchived"),
    of_job=False,
    restart_schedules=RESTART_WORKSPACE_SCHEDULES,
)


class Workspaces(StoreBase):
    def ensure_workspace(self, path: str, name: str) -> dict[str, Any]:
        """The store's workspace; created with a new stable id on first start."""
        with write(self.engine) as conn:
            ws = conn.execute(FIRST_WORKSPACE).first()
            now = utcnow()
            if ws is None:
                ws_id = new_id()
                conn.execute(
                    INSERT_WORKSPACE,
                    dict(id=ws_id, name=name, path=path, created_at=now, updated_at=now),
                )
                ws = conn.execute(GET_WORKSPACE, {"b_id": ws_id}).first()
            elif ws.path != path:
                conn.execute(UPDATE_WORKSPACE, {"b_id": ws.id, "path": path, "updated_at": now})
                ws = conn.execute(GET_WORKSPACE, {"b_id": ws.id}).first()
        return row_dict(ws)  # type: ignore[return-value]

    def first_workspace(self) -> dict[str, Any] | None:
        """The store's workspace, if a server made one (a remote worker reads it)."""
        return self._one(FIRST_WORKSPACE, {})

    def get_workspace(self, ws_id: str) -> dict[str, Any] | None:
        return self._one(GET_WORKSPACE, {"b_id": ws_id})

    def update_workspace(self, ws_id: str, **values: Any) -> dict[str, Any] | None:
        with write(self.engine) as conn:
            conn.execute(UPDATE_WORKSPACE, {"b_id": ws_id, "updated_at": utcnow(), **values})
            return row_dict(conn.execute(GET_WORKSPACE, {"b_id": ws_id}).first())

    def set_workspace_archived(self, ws_id: str, archived: bool) -> dict[str, Any] | None:
        """Archive the workspace (no trigger starts a run; history stays) or bring it back.

        Archiving an archived workspace keeps its `archived_at`. Schedules are not made
        up after an unarchive: their cursors restart from now, as after a resume.
        """
        return self._set_flag(WORKSPACE_ARCHIVED, ws_id, archived)
