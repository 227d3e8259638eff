"""Attempts of runs with retries: a failed attempt with a retry left moves its run back to
`pending` until `not_before`, and every ended attempt is recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select

from headwater.core.states import RunStatus, sources_of
from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import RunAttempt
from headwater.store.sql import MOVE_RUN, MOVE_RUN_FENCED, utcnow

A = RunAttempt.__table__
INSERT_ATTEMPT = insert(A)
ATTEMPTS_OF = select(A).where(A.c.run_id == bindparam("b_run_id")).order_by(A.c.attempt)


class Attempts(StoreBase):
    def retry_run(
        self,
        run: dict[str, Any],
        *,
        exit_code: int | None,
        reason: str | None,
        retry_at: datetime,
        now: datetime | None = None,
        fence: tuple[str, int] | None = None,
    ) -> dict[str, Any] | None:
        """End the run's current attempt and queue the next: the run goes back to `pending`
        (from starting or running), not claimable before `retry_at`; event `run.retrying`.
        Answers the run, or None when it was no longer where it was (cancelled meanwhile,
        or, with a `fence` (worker, attempt), no longer that worker's attempt)."""
        now = now or utcnow()
        attempt = int(run.get("attempt") or 1)
        with write(self.engine) as conn:
            fenced = (
                {} if fence is None else {"b_fence_worker": fence[0], "b_fence_attempt": fence[1]}
            )
            moved = conn.execute(
                MOVE_RUN if fence is None else MOVE_RUN_FENCED,
                {
                    **fenced,
                    "b_id": run["id"],
                    "b_sources": [s.value for s in sources_of(RunStatus.PENDING)],
                    "status": RunStatus.PENDING.value,
                    "attempt": attempt + 1,
                    "not_before": retry_at,
                    "reason": f"retry {attempt + 1} at {retry_at.isoformat()}: {reason}",
                    "exit_code": exit_code,
                    "worker_id": None,
                    "pid": None,
                    "pid_started": None,
                    "lease_expires_at": None,
                    "updated_at": now,
                },
            ).first()
            if moved is None:
                return None
            conn.execute(
                INSERT_ATTEMPT,
                dict(
                    run_id=run["id"],
                    attempt=attempt,
                    status=RunStatus.FAILED.value,
                    exit_code=exit_code,
                    reason=reason,
                    started_at=run.get("started_at"),
                    finished_at=now,
                    retry_at=retry_at,
                ),
            )
            self._event(
                conn,
                run["workspace_id"],
                "run.retrying",
                job_id=run["job_id"],
                run_id=run["id"],
                payload={"attempt": attempt, "reason": reason, "retry_at": retry_at.isoformat()},
                now=now,
            )
        self.notifier.notify(notify.RUNS, notify.EVENTS)
        return dict(moved._mapping)

    def record_last_attempt(self, run: dict[str, Any]) -> None:
        """The final attempt of a run with retries, once it has ended."""
        with write(self.engine) as conn:
            conn.execute(
                INSERT_ATTEMPT,
                dict(
                    run_id=run["id"],
                    attempt=int(run.get("attempt") or 1),
                    status=run["status"],
                    exit_code=run.get("exit_code"),
                    reason=run.get("reason"),
                    started_at=run.get("started_at"),
                    finished_at=run.get("finished_at") or utcnow(),
                    retry_at=None,
                ),
            )

    def attempts_of(self, run_id: str) -> list[dict[str, Any]]:
        return self._all(ATTEMPTS_OF, {"b_run_id": run_id})
