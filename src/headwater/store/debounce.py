"""Debouncers of jobs with a `run_interval`: each step of `core/debounce.py` is decided and
written in one transaction on the job's row, so API processes, the dispatcher and the
scheduler (in other processes) share one debouncer per job, and it survives a restart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from headwater.core.debounce import Action, DebounceState, Step, fire_key, landed
from headwater.core.states import RunStatus
from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import DebounceStateRow, Run
from headwater.store.sql import dialect_insert

D = DebounceStateRow.__table__
R = Run.__table__

GET_STATE = select(D).where(D.c.job_id == bindparam("b_job_id"))
STATES_OF = select(D).where(D.c.job_id.in_(bindparam("b_job_ids", expanding=True)))
SET_STATE = update(D).where(D.c.job_id == bindparam("b_job_id"))
RUN_STATUS = select(R.c.id, R.c.status).where(R.c.id == bindparam("b_id"))
RUN_BY_KEY = select(R.c.id, R.c.status).where(
    R.c.job_id == bindparam("b_job_id"), R.c.dedupe_key == bindparam("b_key")
)
NOT_LANDED = (RunStatus.PENDING.value, RunStatus.STARTING.value)
"""A fire is in flight while its run has not started: fires of one job never overlap."""
LOST_FIRE_S = 60.0
"""A fire decided this long ago whose run was never recorded died with its process."""


def _seconds(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class DebounceOutcome:
    step: Step
    fire_count: int
    """With FIRE: this fire's number (its run's key is `fire_key(fire_count)`)."""
    request: dict[str, Any] | None
    """With FIRE: the trigger request the fire runs with."""
    last_run_id: str | None
    due_at: datetime | None


class Debounces(StoreBase):
    def debounce_step(
        self,
        job_id: str,
        now: datetime,
        interval: float,
        decide: Callable[[DebounceState], Step],
        *,
        request: dict[str, Any] | None = None,
        fired_run: tuple[int, str | None] | None = None,
    ) -> DebounceOutcome:
        """Apply one step to the job's debouncer: first the landing of a fire in flight
        (its run started or ended; a follow-up queued meanwhile may fire), then `decide`.

        `request` (a trigger's) is kept for the fire that covers it; `fired_run` records
        fire N's run (None: the trigger created none, so the fire has landed).
        """
        t = now.timestamp()
        with write(self.engine) as conn:
            row = self._state_row(conn, job_id, now)
            state = DebounceState(
                last_fire=_seconds(row["last_fire_at"]),
                due=_seconds(row["due_at"]),
                in_flight=bool(row["in_flight"]),
                follow_up=bool(row["follow_up"]),
            )
            values: dict[str, Any] = {}
            landing: Step | None = None
            if fired_run is not None and fired_run[0] == row["fire_count"]:
                values.update(in_flight_run_id=fired_run[1], last_run_id=fired_run[1])
                row = {**row, **values}
                if fired_run[1] is None and state.in_flight:
                    landing = landed(state, t, interval)  # the trigger made no run
            elif state.in_flight and self._has_landed(conn, job_id, row, now):
                landing = landed(state, t, interval)
            step: Step | None = None
            if landing is not None:
                state = landing.state
                if landing.action is Action.FIRE:
                    step = landing  # the follow-up fire covers this step's trigger too
            if step is None:
                step = decide(state)
            fire_count = int(row["fire_count"])
            keep = row["request"]
            if step.action is Action.FIRE:
                fire_count += 1
                keep = request or row["request"]
                values.update(in_flight_run_id=None)
            elif request is not None:
                keep = request
            values.update(
                last_fire_at=_time(step.state.last_fire),
                due_at=_time(step.state.due),
                in_flight=step.state.in_flight,
                follow_up=step.state.follow_up,
                fire_count=fire_count,
                request=keep,
                updated_at=now,
            )
            conn.execute(SET_STATE, {"b_job_id": job_id, **values})
        if step.action is Action.SCHEDULE:
            # the timer (another process, maybe) starts holding the fire on its clock now
            self.notifier.notify(notify.RUNS)
        return DebounceOutcome(
            step, fire_count, keep, row.get("last_run_id"), _time(step.state.due)
        )

    def _state_row(self, conn: Any, job_id: str, now: datetime) -> dict[str, Any]:
        found = conn.execute(
            GET_STATE.with_for_update() if conn.dialect.name == "postgresql" else GET_STATE,
            {"b_job_id": job_id},
        ).first()
        if found is not None:
            return dict(found._mapping)
        conn.execute(
            dialect_insert(conn, D)
            .values(
                job_id=job_id,
                in_flight=False,
                follow_up=False,
                fire_count=0,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[D.c.job_id])
        )
        found = conn.execute(
            GET_STATE.with_for_update() if conn.dialect.name == "postgresql" else GET_STATE,
            {"b_job_id": job_id},
        ).first()
        return dict(found._mapping)

    def _has_landed(self, conn: Any, job_id: str, row: dict[str, Any], now: datetime) -> bool:
        """Whether the fire in flight is over: its run has started (or ended), or the fire
        died before it recorded one (its key names no run after `LOST_FIRE_S`)."""
        run_id = row["in_flight_run_id"]
        if run_id is not None:
            found = conn.execute(RUN_STATUS, {"b_id": run_id}).first()
        else:
            found = conn.execute(
                RUN_BY_KEY, {"b_job_id": job_id, "b_key": fire_key(row["fire_count"])}
            ).first()
            if found is None:
                fired = row["last_fire_at"]
                return fired is None or (now - fired).total_seconds() > LOST_FIRE_S
        return found is None or found.status not in NOT_LANDED

    def debounce_states(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The debouncers of these jobs, by job id (jobs never fired have none)."""
        if not job_ids:
            return {}
        rows = self._all(STATES_OF, {"b_job_ids": list(job_ids)})
        return {r["job_id"]: r for r in rows}

    def debounce_state(self, job_id: str) -> dict[str, Any] | None:
        return self._one(GET_STATE, {"b_job_id": job_id})
