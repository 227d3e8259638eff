"""Runs: their creation (each trigger decided on the facts read in the transaction that
records it), reads, guarded state changes, cancels and claims."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from headwater.core import leases, policy
from headwater.core.specs import RunRequest, TriggerResult
from headwater.core.states import TERMINAL, RunStatus, sources_of
from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.sql import (
    ACTIVE_RUNS_OF_JOB,
    BUSY_PIPELINES,
    CLAIM_ADVISORY_LOCK,
    CLAIM_LOCK,
    CLAIM_RUN,
    COUNT_ACTIVE,
    GET_RUN,
    INSERT_EVENT,
    INSERT_RUN,
    LATEST_RUNS,
    LIVE_RUNS,
    LIVE_RUNS_OF_WORKER,
    LOCK_HOLDERS,
    LOCK_JOB,
    MOVE_RUN,
    MOVE_RUN_FENCED,
    PENDING_RUNS,
    PRIOR_RUN,
    SET_RUN_COUNTER,
    UPDATE_RUN,
    event_row,
    new_id,
    row_dict,
    runs_page,
    utcnow,
)


class QueuedTrigger(Protocol):
    """What `_decide_and_record` reads of a trigger the combiner queued."""

    req: RunRequest
    now: datetime
    dry_run: bool


class Runs(StoreBase):
    _replacing: bool
    """A batch replaced live runs (overlap replace): the combiner wakes their workers."""

    # -- creation ------------------------------------------------------------------------------

    def _decide_and_record(
        self, conn: Connection, batch: Sequence[QueuedTrigger]
    ) -> list[TriggerResult]:
        """Decide the triggers in order, each on the facts its predecessors left.

        Each job row is read (and locked) once per batch; its run counter and active
        runs are then carried in memory, and the batch's runs and events are written
        with one statement each.
        """
        jobs: dict[str, Any] = {}
        counters: dict[str, int] = {}
        active: dict[str, int] = {}
        deduped: dict[tuple[str, str], dict[str, Any]] = {}
        runs: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        results: list[TriggerResult] = []
        for item in batch:
            req, now = item.req, item.now
            job = jobs.get(req.job_id)
            if job is None:
                job = conn.execute(LOCK_JOB, {"b_id": req.job_id}).first()
                if job is None:
                    raise KeyError(req.job_id)
                jobs[req.job_id], counters[req.job_id] = job, job.run_counter
            if req.dedupe_key is not None:
                prior = deduped.get((req.job_id, req.dedupe_key))
                if prior is None:
                    prior = row_dict(
                        conn.execute(
                            PRIOR_RUN, {"b_job_id": req.job_id, "b_dedupe_key": req.dedupe_key}
                        ).first()
                    )
                if prior is not None:
                    results.append(
                        TriggerResult(
                            policy.Decision(policy.TriggerStatus.TRIGGERED), prior, existing=True
                        )
                    )
                    continue
            if req.concurrency is not None and req.job_id not in active:
                # an unlimited job needs no count
                active[req.job_id] = int(
                    conn.execute(COUNT_ACTIVE, {"b_job_id": req.job_id}).scalar_one()
                )
            if req.overlap == "replace" and req.job_id not in active:
                active[req.job_id] = int(
                    conn.execute(COUNT_ACTIVE, {"b_job_id": req.job_id}).scalar_one()
                )
            decision = policy.decide(
                policy.JobFacts(
                    concurrency=req.concurrency,
                    active_runs=active.get(req.job_id, 0),
                    is_paused=job.is_paused,
                    is_archived=job.is_archived,
                    workspace_archived=job.ws_archived_at is not None,
                    overlap=req.overlap,
                ),
                req.trigger,
            )
            if item.dry_run or decision.status in (
                policy.TriggerStatus.SKIPPED_PAUSED,
                policy.TriggerStatus.SKIPPED_ARCHIVED,
            ):
                results.append(TriggerResult(decision, None))
                continue
            counters[req.job_id] += 1
            created = decision.creates_run
            if decision.replaces_active:
                # cancelled ones leave the count; live ones stay active until they stop
                active[req.job_id] = self._replace_active(
                    conn, job, req.job_id, counters[req.job_id], runs, events, now
                )
            if created and req.job_id in active:
                active[req.job_id] += 1
            run = _new_run(job, req, counters[req.job_id], decision, now)
            runs.append(run)
            if req.dedupe_key is not None:
                deduped[(req.job_id, req.dedupe_key)] = run
            events.append(
                event_row(
                    job.workspace_id,
                    "run.pending" if created else "run.skipped",
                    job_id=req.job_id,
                    run_id=run["id"],
                    payload={"trigger": req.trigger, "job_ref": job.job_ref},
                    now=now,
                )
            )
            results.append(TriggerResult(decision, run))
        if runs:
            conn.execute(
                SET_RUN_COUNTER,
                [
                    {"b_id": job_id, "b_number": n}
                    for job_id, n in counters.items()
                    if n != jobs[job_id].run_counter
                ],
            )
            conn.execute(INSERT_RUN, runs)
            conn.execute(INSERT_EVENT, events)
        return results

    def _replace_active(
        self,
        conn: Connection,
        job: Any,
        job_id: str,
        number: int,
        batch_runs: list[dict[str, Any]],
        events: list[dict[str, Any]],
        now: datetime,
    ) -> int:
        """Overlap `replace`: cancel the job's active runs for run `number`, through the same
        moves as `request_cancel` (pending: cancelled at once; live: cancelling, for the
        worker to stop). Runs of this batch not yet written are cancelled in place.
        Answers how many stay active (the live ones, until their process stops)."""
        reason = f"replaced by run {number} (overlap replace)"
        for run in batch_runs:
            if run["job_id"] == job_id and run["status"] == RunStatus.PENDING.value:
                run.update(
                    status=RunStatus.CANCELLED.value,
                    reason=reason,
                    cancel_requested=True,
                    finished_at=now,
                    updated_at=now,
                )
                events.append(
                    event_row(
                        job.workspace_id,
                        "run.cancelled",
                        job_id=job_id,
                        run_id=run["id"],
                        payload={"reason": reason},
                        now=now,
                    )
                )
        still_active = 0
        for row in conn.execute(ACTIVE_RUNS_OF_JOB, {"b_job_id": job_id}).all():
            status = RunStatus(row.status)
            if status is RunStatus.CANCELLING:
                still_active += 1
                continue
            target = RunStatus.CANCELLED if status is RunStatus.PENDING else RunStatus.CANCELLING
            values: dict[str, Any] = {
                "status": target.value,
                "reason": reason,
                "cancel_requested": True,
                "updated_at": now,
            }
            if target is RunStatus.CANCELLED:
                values["finished_at"] = now
            moved = conn.execute(
                MOVE_RUN, {"b_id": row.id, "b_sources": [status.value], **values}
            ).first()
            if moved is None:
                continue
            if target is RunStatus.CANCELLING:
                still_active += 1
            events.append(
                event_row(
                    job.workspace_id,
                    f"run.{target.value}",
                    job_id=job_id,
                    run_id=row.id,
                    payload={"reason": reason, "exit_code": None},
                    now=now,
                )
            )
        self._replacing = True
        return still_active

    # -- reads ---------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self._one(GET_RUN, {"b_id": run_id})

    def list_runs(
        self,
        ws_id: str,
        *,
        job_id: str | None = None,
        statuses: Iterable[str] = (),
        number: int | None = None,
        triggered_by: str | None = None,
        limit: int = 100,
        offset: int = 0,
        trigger_kinds: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        after: tuple[datetime, int, str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Runs newest first, as the clients expect; `after` pages by key (see `runs_page`)."""
        count, page = runs_page(
            ws_id,
            job_id,
            list(statuses),
            number,
            triggered_by,
            limit,
            offset,
            trigger_kinds=trigger_kinds,
            start=start,
            end=end,
            after=after,
        )
        with self.reader.connect() as conn:
            total = conn.execute(count).scalar_one()
            rows = conn.execute(page).all()
        return [dict(r._mapping) for r in rows], int(total)

    def latest_runs(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest run of each job, keyed by job id."""
        if not job_ids:
            return {}
        with self.reader.connect() as conn:
            rows = conn.execute(LATEST_RUNS, {"b_job_ids": list(job_ids)}).all()
        return {r.job_id: dict(r._mapping) for r in rows}

    def live_runs(self, worker_id: str | None = None) -> list[dict[str, Any]]:
        if worker_id is None:
            return self._all(LIVE_RUNS)
        return self._all(LIVE_RUNS_OF_WORKER, {"b_worker_id": worker_id})

    # -- state changes -------------------------------------------------------------------------

    def transition(
        self, run_id: str, target: RunStatus, *, now: datetime | None = None, **fields: Any
    ) -> dict[str, Any] | None:
        """Move a run to `target` if the state machine allows it from where it is now.

        Answers the updated run, or None when the run was not in a source state
        (someone else moved it first).
        """
        return self.transition_many([(run_id, target, fields)], now=now)[0]

    def transition_many(
        self,
        moves: Sequence[tuple[str, RunStatus, dict[str, Any]]],
        *,
        now: datetime | None = None,
        fences: dict[str, tuple[str, int]] | None = None,
    ) -> list[dict[str, Any] | None]:
        """`transition` for several runs (id, target, fields) in one transaction: a worker
        ends or starts the runs of one turn together. A run in `fences` (run id ->
        worker, attempt) moves only while that worker still holds that attempt."""
        if not moves:
            return []
        now = now or utcnow()
        moved: list[dict[str, Any] | None] = []
        with write(self.engine) as conn:
            for run_id, target, fields in moves:
                values: dict[str, Any] = {"status": target.value, "updated_at": now, **fields}
                if target in TERMINAL:
                    values.setdefault("finished_at", now)
                if target is RunStatus.STARTING:
                    values.setdefault("started_at", now)
                params = {
                    "b_id": run_id,
                    "b_sources": [s.value for s in sources_of(target)],
                    **values,
                }
                fence = fences.get(run_id) if fences else None
                if fence is not None:
                    params["b_fence_worker"], params["b_fence_attempt"] = fence
                result = conn.execute(
                    MOVE_RUN if fence is None else MOVE_RUN_FENCED, params
                ).first()
                if result is None:
                    moved.append(None)
                    continue
                run = dict(result._mapping)
                self._event(
                    conn,
                    run["workspace_id"],
                    f"run.{target.value}",
                    job_id=run["job_id"],
                    run_id=run_id,
                    now=now,
                    payload={"reason": run["reason"], "exit_code": run["exit_code"]},
                )
                moved.append(run)
        if any(target in TERMINAL for _id, target, _f in moves):
            # a slot is free; log followers may close; chains may fire
            self.notifier.notify(notify.RUNS, notify.LOGS, notify.EVENTS)
        return moved

    def request_cancel(
        self, run_id: str, reason: str = "cancelled by request"
    ) -> dict[str, Any] | None:
        """Pending runs end at once; live ones go to `cancelling` for the worker to stop."""
        run = self.get_run(run_id)
        if run is None:
            return None
        status = RunStatus(run["status"])
        if status is RunStatus.PENDING:
            done = self.transition(
                run_id, RunStatus.CANCELLED, reason=reason, cancel_requested=True
            )
            if done is not None:
                return done
            status = RunStatus((self.get_run(run_id) or run)["status"])
        if status in (RunStatus.STARTING, RunStatus.RUNNING):
            done = self.transition(
                run_id, RunStatus.CANCELLING, reason=reason, cancel_requested=True
            )
            self.notifier.notify(notify.CANCELS)
            if done is not None:
                return done
        return self.get_run(run_id)

    # -- claims --------------------------------------------------------------------------------

    def claim_next(self, worker_id: str, now: datetime | None = None) -> dict[str, Any] | None:
        """Take the oldest pending run that may start now and mark it `starting`."""
        claimed = self.claim_many(worker_id, 1, now)
        return claimed[0] if claimed else None

    def claim_many(
        self,
        worker_id: str | None,
        limit: int,
        now: datetime | None = None,
        *,
        pools: dict[str, int] | None = None,
        lease_until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Take up to `limit` of the oldest pending runs that may start now, in one
        transaction, and mark them `starting`.

        A run waits while another live run (or one claimed here) loads the same dlt
        pipeline; its `reason` says so.

        For remote workers (`pools`: free slots per pool a live worker serves) runs are
        claimed for dispatch: no worker yet (`worker_id` None), a lease until
        `lease_until`, at most each pool's free slots; a run whose pool has none waits,
        saying why (`core/leases.pool_wait_reason`).
        """
        now = now or utcnow()
        free = dict(pools) if pools is not None else None
        claims: list[dict[str, Any]] = []
        with write(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                # one claimer at a time, as BEGIN IMMEDIATE gives on SQLite: the pipeline
                # check below must see every claim committed before it
                conn.execute(CLAIM_ADVISORY_LOCK, {"key": CLAIM_LOCK})
            candidates = conn.execute(PENDING_RUNS, {"b_now": now}).all()
            if not candidates:
                return claims
            busy = {r.pipeline_name for r in conn.execute(BUSY_PIPELINES)}
            holders: dict[str, list[str]] | None = None
            for cand in candidates:
                if free is None and len(claims) >= limit:
                    break  # (for pools, each pool's free slots bound it, and waits say why)
                pool = cand.pool or leases.DEFAULT_POOL
                wait_reason = None if free is None else leases.pool_wait_reason(pool, free)
                if wait_reason is None:
                    wait_reason = policy.pipeline_conflict(cand.pipeline_name, busy)
                if wait_reason is None and cand.locks:
                    if holders is None:
                        holders = _lock_holders(conn.execute(LOCK_HOLDERS).all())
                    wait_reason = policy.lock_conflict(cand.locks, holders)
                if wait_reason is not None:
                    if cand.reason != wait_reason:
                        conn.execute(UPDATE_RUN, {"b_id": cand.id, "reason": wait_reason})
                    continue
                claimed = conn.execute(
                    CLAIM_RUN,
                    {
                        "b_id": cand.id,
                        "status": RunStatus.STARTING.value,
                        "worker_id": worker_id,
                        "started_at": now,
                        "updated_at": now,
                        "reason": None,
                        "lease_expires_at": lease_until,
                    },
                ).first()
                if claimed is None:
                    continue
                if free is not None:
                    free[pool] -= 1
                if claimed.pipeline_name is not None:
                    busy.add(claimed.pipeline_name)
                if claimed.locks:
                    holders = None  # read again, with this claim, when a lock is next asked
                self._event(
                    conn,
                    claimed.workspace_id,
                    "run.starting",
                    job_id=claimed.job_id,
                    run_id=claimed.id,
                    now=now,
                )
                claims.append(dict(claimed._mapping))
        return claims


def _lock_holders(rows: Sequence[Any]) -> dict[str, list[str]]:
    """Each lock to the live runs holding it, as people read them."""
    holders: dict[str, list[str]] = {}
    for row in rows:
        for name in row.locks or {}:
            holders.setdefault(name, []).append(f"run {row.number} of {row.job_ref}")
    return holders


def _new_run(
    job: Any, req: RunRequest, number: int, decision: policy.Decision, now: datetime
) -> dict[str, Any]:
    created = decision.creates_run
    return dict(
        id=new_id(),
        workspace_id=job.workspace_id,
        job_id=req.job_id,
        job_version_id=job.current_version_id,
        # the code and configuration runs start on: the newest manifest version's
        # packages (none: the workspace folder)
        code_package_id=job.code_package_id,
        config_package_id=job.config_package_id,
        number=number,
        status=(RunStatus.PENDING if created else RunStatus.SKIPPED).value,
        trigger=req.trigger,
        profile=req.profile,
        parameters=dict(req.parameters or {}),
        refresh=req.refresh,
        interval_start=req.interval_start,
        interval_end=req.interval_end,
        previous_run_id=req.previous_run_id,
        triggered_by=req.triggered_by,
        dedupe_key=req.dedupe_key,
        reason=None if created else "; ".join(decision.reasons),
        exit_code=None,
        pipeline_name=job.pipeline_name,
        timeout_s=req.timeout_s,
        grace_period_s=req.grace_period_s,
        cancel_requested=False,
        worker_id=None,
        pid=None,
        pid_started=None,
        launch_mode=None,
        locks=dict(req.locks) if req.locks else None,
        pool=req.pool,
        lease_expires_at=None,
        attempt=1,
        retry_policy=req.retry_policy,
        not_before=None,
        backfill_id=req.backfill_id,
        deadline_at=req.deadline_at,
        deadline_missed_at=None,
        created_at=now,
        updated_at=now,
        started_at=None,
        finished_at=None if created else now,
    )
