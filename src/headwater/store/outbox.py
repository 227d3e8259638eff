"""The automations' outbox (`deliveries`) and the last good `headwater.toml` they follow.

Rows are derived from the event log, which is written in the same transaction as the run
state it reports; a row's unique (automation, event, action) makes deriving it again after a
crash add nothing. Delivery is at least once: a row is marked only after its attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import Delivery, WorkspaceConfigRow
from headwater.store.sql import dialect_insert, utcnow

D = Delivery.__table__
C = WorkspaceConfigRow.__table__

DUE = (
    select(D)
    .where(D.c.status == "pending", D.c.next_attempt_at <= bindparam("b_now"))
    .order_by(D.c.next_attempt_at, D.c.id)
    .limit(bindparam("b_limit"))
)
NEXT_DUE = (
    select(D.c.next_attempt_at)
    .where(D.c.status == "pending")
    .order_by(D.c.next_attempt_at)
    .limit(1)
)
UPDATE_DELIVERY = update(D).where(D.c.id == bindparam("b_id"))
GET_CONFIG = select(C).where(C.c.workspace_id == bindparam("b_ws_id"))


class Outbox(StoreBase):
    def save_config(self, ws_id: str, config: dict[str, Any], digest: str) -> None:
        """Keep the workspace's last good `headwater.toml` (validated, secrets as references)."""
        now = utcnow()
        with write(self.engine) as conn:
            stmt = dialect_insert(conn, C).values(
                workspace_id=ws_id, config=config, hash=digest, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[C.c.workspace_id],
                    set_={
                        "config": stmt.excluded.config,
                        "hash": stmt.excluded.hash,
                        "updated_at": now,
                    },
                )
            )
        # its readers (automations) cache it until the jobs' version moves
        self.notifier.notify(notify.JOBS)

    def workspace_config(self, ws_id: str) -> dict[str, Any] | None:
        return self._one(GET_CONFIG, {"b_ws_id": ws_id})

    def enqueue(
        self, ws_id: str, rows: Sequence[dict[str, Any]], now: datetime | None = None
    ) -> int:
        """Add deliveries (automation, event_key, event, action, kind, target, run_id, job_id,
        payload); those already there are left as they are. Answers how many were added."""
        if not rows:
            return 0
        now = now or utcnow()
        added = 0
        with write(self.engine) as conn:
            for row in rows:
                stmt = dialect_insert(conn, D).values(
                    delivery_id=str(uuid.uuid4()),
                    workspace_id=ws_id,
                    status="pending",
                    attempts=0,
                    history=[],
                    next_attempt_at=now,
                    created_at=now,
                    delivered_at=None,
                    **row,
                )
                done = conn.execute(
                    stmt.on_conflict_do_nothing(
                        index_elements=["automation", "event_key", "action"]
                    )
                )
                added += done.rowcount or 0
        return added

    def due_deliveries(self, now: datetime, limit: int = 50) -> list[dict[str, Any]]:
        return self._all(DUE, {"b_now": now, "b_limit": limit})

    def next_delivery_at(self) -> datetime | None:
        with self.reader.connect() as conn:
            value: datetime | None = conn.execute(NEXT_DUE).scalar()
        return value

    def record_attempt(
        self,
        delivery: dict[str, Any],
        ok: bool,
        error: str | None,
        now: datetime,
        retry_at: datetime | None,
    ) -> None:
        """One attempt's outcome: delivered, another attempt at `retry_at`, or given up."""
        history = list(delivery["history"] or []) + [
            {"at": now.isoformat(), "ok": ok, "error": error}
        ]
        status = "delivered" if ok else ("pending" if retry_at is not None else "failed")
        with write(self.engine) as conn:
            conn.execute(
                UPDATE_DELIVERY,
                {
                    "b_id": delivery["id"],
                    "status": status,
                    "attempts": delivery["attempts"] + 1,
                    "history": history,
                    "next_attempt_at": retry_at or delivery["next_attempt_at"],
                    "delivered_at": now if ok else None,
                },
            )

    def list_deliveries(
        self, ws_id: str, *, failed: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first; `failed`: those given up on, or still failing (attempted, pending)."""
        stmt = select(D).where(D.c.workspace_id == ws_id)
        if failed:
            stmt = stmt.where(
                (D.c.status == "failed") | ((D.c.status == "pending") & (D.c.attempts > 0))
            )
        return self._all(stmt.order_by(D.c.id.desc()).limit(limit))
