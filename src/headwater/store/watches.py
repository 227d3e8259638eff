"""Watches of dbt Cloud runs (`monitors/`): the intent before the run POST, the dbt Cloud
run id after it, the last status seen; and the runs of dbt Cloud jobs to fire or cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from headwater.core.states import LIVE, RunStatus
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import DbtCloudWatch, Job, Run
from headwater.store.sql import utcnow

W = DbtCloudWatch.__table__
R = Run.__table__
J = Job.__table__

EXTERNAL_TYPE = "dbt_cloud"

EXTERNAL_RUNS = (
    select(R)
    .join(J, J.c.id == R.c.job_id)
    .where(
        J.c.workspace_id == bindparam("b_ws_id"),
        J.c.job_type == EXTERNAL_TYPE,
        R.c.status.in_(bindparam("b_statuses", expanding=True)),
    )
    .order_by(R.c.created_at, R.c.number)
    .limit(bindparam("b_limit"))
)
WATCH_OF = select(W).where(W.c.run_id == bindparam("b_run_id"))
LIVE_WATCHES = (
    select(W, R.c.status.label("run_status"), R.c.number)
    .join(R, R.c.id == W.c.run_id)
    .where(R.c.status.in_([s.value for s in LIVE]), R.c.workspace_id == bindparam("b_ws_id"))
)
INSERT_WATCH = insert(W)
UPDATE_WATCH = update(W).where(W.c.run_id == bindparam("b_run_id"))
ATTACHED = select(W.c.run_id).where(
    W.c.dbt_run_id == bindparam("b_dbt_run_id"), W.c.account_id == bindparam("b_account_id")
)


class Watches(StoreBase):
    def external_runs(
        self, ws_id: str, statuses: tuple[RunStatus, ...], limit: int = 500
    ) -> list[dict[str, Any]]:
        """Runs of dbt Cloud jobs in these states, oldest first."""
        return self._all(
            EXTERNAL_RUNS,
            {"b_ws_id": ws_id, "b_statuses": [s.value for s in statuses], "b_limit": limit},
        )

    def watch_intent(
        self,
        run_id: str,
        job_id: str,
        account_id: int,
        dbt_job_id: int,
        cause: str,
        deadline_at: datetime,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Record that run `run_id` is about to POST a dbt Cloud run (before any HTTP), and
        move it to `starting`; an intent already stored (a restart) is answered as it is."""
        now = now or utcnow()
        with write(self.engine) as conn:
            found = conn.execute(WATCH_OF, {"b_run_id": run_id}).first()
            if found is not None:
                return dict(found._mapping)
            row = dict(
                run_id=run_id,
                job_id=job_id,
                account_id=account_id,
                dbt_job_id=dbt_job_id,
                cause=cause,
                intent_at=now,
                dbt_run_id=None,
                href=None,
                last_status=None,
                deadline_at=deadline_at,
                updated_at=now,
            )
            conn.execute(INSERT_WATCH, row)
        return row

    def watch_update(self, run_id: str, **values: Any) -> None:
        with write(self.engine) as conn:
            conn.execute(UPDATE_WATCH, {"b_run_id": run_id, "updated_at": utcnow(), **values})

    def watch_statuses(self, statuses: dict[str, int]) -> None:
        """The last dbt Cloud status seen of many watches, in one transaction."""
        now = utcnow()
        with write(self.engine) as conn:
            conn.execute(
                UPDATE_WATCH,
                [
                    {"b_run_id": run_id, "last_status": status, "updated_at": now}
                    for run_id, status in statuses.items()
                ],
            )

    def get_watch(self, run_id: str) -> dict[str, Any] | None:
        return self._one(WATCH_OF, {"b_run_id": run_id})

    def live_watches(self, ws_id: str) -> list[dict[str, Any]]:
        """Watches of runs still starting, running or cancelling: what a restart resumes."""
        return self._all(LIVE_WATCHES, {"b_ws_id": ws_id})

    def attached_run(self, account_id: int, dbt_run_id: int) -> str | None:
        """The Headwater run already watching this dbt Cloud run, if any."""
        row = self._one(ATTACHED, {"b_dbt_run_id": dbt_run_id, "b_account_id": account_id})
        return None if row is None else str(row["run_id"])
