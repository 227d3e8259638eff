"""What every part of the `Store` shares: the engine, a read-only view of it, the
notifier, the event each state change writes in its own transaction, and the one shape
of its flag setters (pause, archive, publish)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, Update

from headwater.store import notify
from headwater.store.db import write
from headwater.store.sql import INSERT_EVENT, event_row, row_dict, utcnow


@dataclass(frozen=True)
class Flag:
    """A flag of a job or workspace row, set or cleared by `StoreBase._set_flag`."""

    read: Select[Any]
    """The row by `b_id`."""
    write: Update
    """Its UPDATE by `b_id`, SET from the parameters."""
    is_set: Callable[[dict[str, Any]], bool]
    values: Callable[[bool, datetime], dict[str, Any]]
    """The columns that set (True) or clear (False) it at a time."""
    events: tuple[str, str]
    """Event kinds when set, when cleared."""
    of_job: bool
    """The row is a job (its event names it); else the workspace."""
    restart_schedules: Update | None = None
    """Run with `b_id` and `last_tick` when cleared: ticks missed meanwhile are not made up."""
    notify_jobs: bool = True


class StoreBase:
    engine: Engine
    reader: Engine
    """`engine` for reads only (SQLite opens no write transaction on it)."""
    notifier: notify.Notifier

    def _one(self, stmt: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        """The first row a read answers, as a dict (None: no row)."""
        with self.reader.connect() as conn:
            return row_dict(conn.execute(stmt, params).first())

    def _all(self, stmt: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every row a read answers, as dicts."""
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt, params)]

    def _event(
        self,
        conn: Connection,
        ws_id: str,
        kind: str,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
        payload: dict[str, Any] | None = None,
        now: datetime,
    ) -> None:
        """Append an event in the transaction of the change it reports."""
        conn.execute(
            INSERT_EVENT,
            event_row(ws_id, kind, job_id=job_id, run_id=run_id, payload=payload, now=now),
        )

    def _set_flag(self, flag: Flag, row_id: str, on: bool) -> dict[str, Any] | None:
        """Set or clear `flag` on a row; answers the row as it is now (None: no such row).

        A flag already as asked changes nothing and writes no event.
        """
        now = utcnow()
        with write(self.engine) as conn:
            current = row_dict(conn.execute(flag.read, {"b_id": row_id}).first())
            if current is None or flag.is_set(current) == on:
                return current
            values = flag.values(on, now)
            conn.execute(flag.write, {"b_id": row_id, **values})
            if not on and flag.restart_schedules is not None:
                conn.execute(flag.restart_schedules, {"b_id": row_id, "last_tick": now})
            self._event(
                conn,
                current["workspace_id"] if flag.of_job else row_id,
                flag.events[0] if on else flag.events[1],
                job_id=row_id if flag.of_job else None,
                now=now,
            )
        if flag.notify_jobs:
            self.notifier.notify(notify.JOBS)
        return {**current, **values}
