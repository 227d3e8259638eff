"""The event log (read side; events are written by the change they report, see
`StoreBase._event`), the dispatcher's cursors and the scheduler's tick cursors."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.sql import (
    DROP_SCHEDULES,
    EVENTS_AFTER,
    GET_CURSOR,
    LAST_EVENT_ID,
    SCHEDULE_CURSORS,
    advance_schedule,
    upsert_cursor,
    utcnow,
)


class Events(StoreBase):
    def events_after(self, position: int, limit: int = 500) -> list[dict[str, Any]]:
        return self._all(EVENTS_AFTER, {"b_position": position, "b_limit": limit})

    def add_event(
        self,
        ws_id: str,
        kind: str,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Append an event of its own (what is not a state change of a row: a dbt Cloud
        run's outcome, say) and wake the event readers."""
        with write(self.engine) as conn:
            self._event(
                conn, ws_id, kind, job_id=job_id, run_id=run_id, payload=payload, now=utcnow()
            )
        self.notifier.notify(notify.EVENTS)

    def last_event_id(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(LAST_EVENT_ID).scalar_one())

    def get_cursor(self, name: str) -> int | None:
        with self.reader.connect() as conn:
            return conn.execute(GET_CURSOR, {"b_name": name}).scalar()

    def set_cursor(self, name: str, position: int) -> None:
        with write(self.engine) as conn:
            conn.execute(upsert_cursor(conn), {"b_name": name, "b_position": position})

    def schedule_cursors(self) -> dict[tuple[str, str], datetime]:
        with self.reader.connect() as conn:
            return {(r.job_id, r.trigger): r.last_tick for r in conn.execute(SCHEDULE_CURSORS)}

    def advance_schedule(self, job_id: str, trigger: str, tick: datetime) -> None:
        """Record that `tick` was handled; never moves a cursor backwards."""
        with write(self.engine) as conn:
            conn.execute(
                advance_schedule(conn), {"b_job_id": job_id, "b_trigger": trigger, "b_tick": tick}
            )

    def advance_schedules(self, ticks: Iterable[tuple[str, str, datetime]]) -> None:
        """`advance_schedule` for many (job id, trigger, tick) in one transaction."""
        params = [{"b_job_id": j, "b_trigger": t, "b_tick": tick} for j, t, tick in ticks]
        if not params:
            return
        with write(self.engine) as conn:
            conn.execute(advance_schedule(conn), params)

    def drop_schedule(self, job_id: str, keep: Iterable[str]) -> None:
        with write(self.engine) as conn:
            conn.execute(DROP_SCHEDULES, {"b_job_id": job_id, "b_keep": list(keep)})
