"""Every statement Headwater runs against its database, named in one place.

Each state change is one guarded `UPDATE ... WHERE status IN (...)`; a run's
creation happens in the transaction that read the facts the trigger policy
decided on; uniqueness of schedule ticks and chained runs is a unique key.
Rows come back as plain dicts.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from headwater.core import policy
from headwater.core.errors import HeadwaterError
from headwater.core.states import ACTIVE, LIVE, TERMINAL, RunStatus, sources_of
from headwater.store import notify
from headwater.store.db import WriteLock, write, write_lock
from headwater.store.models import (
    ApiKey,
    Cursor,
    Event,
    IdempotentRequest,
    Job,
    JobVersion,
    ManifestVersion,
    Run,
    RunLogLine,
    ScheduleCursor,
    Workspace,
)

J = Job.__table__
JV = JobVersion.__table__
R = Run.__table__
L = RunLogLine.__table__
E = Event.__table__
MV = ManifestVersion.__table__
SC = ScheduleCursor.__table__
C = Cursor.__table__
W = Workspace.__table__
K = ApiKey.__table__
IR = IdempotentRequest.__table__
KEY_PREFIX = "dlt_sa_"
"""The `dlthub` CLI accepts only `dlt_u_` and `dlt_sa_` keys; Headwater's are service keys."""


JOB_CACHE_S = 2.0
CLAIM_LOCK = 0x6877_636C_61696D
"""PostgreSQL advisory lock key ("hwclaim") that serializes `claim_next`."""

# The statements of the hot paths (trigger, claim, state changes, events, logs) are
# built once: building one per call (`.values(**row)`, fresh bind parameters, cache
# keys) cost several times more CPU than SQLite spends running it.
_GET_JOB = select(J).where(J.c.id == bindparam("b_id"))
_GET_RUN = select(R).where(R.c.id == bindparam("b_id"))
_GET_JOB_VERSION = select(JV).where(JV.c.id == bindparam("b_id"))
_NEWEST_MANIFEST = (
    select(MV).where(MV.c.workspace_id == J.c.workspace_id).order_by(MV.c.version.desc()).limit(1)
)
_LOCK_JOB = (
    select(
        J.c.workspace_id,
        J.c.job_ref,
        J.c.is_paused,
        J.c.is_archived,
        J.c.run_counter,
        J.c.current_version_id,
        J.c.pipeline_name,
        W.c.archived_at.label("ws_archived_at"),
        _NEWEST_MANIFEST.with_only_columns(MV.c.code_package_id)
        .scalar_subquery()
        .label("code_package_id"),
        _NEWEST_MANIFEST.with_only_columns(MV.c.config_package_id)
        .scalar_subquery()
        .label("config_package_id"),
    )
    .select_from(J.join(W, W.c.id == J.c.workspace_id))
    .where(J.c.id == bindparam("b_id"))
    .with_for_update(of=J)
)
_PRIOR_RUN = select(R).where(
    R.c.job_id == bindparam("b_job_id"), R.c.dedupe_key == bindparam("b_dedupe_key")
)
_COUNT_ACTIVE = (
    select(func.count())
    .select_from(R)
    .where(R.c.job_id == bindparam("b_job_id"), R.c.status.in_([s.value for s in ACTIVE]))
)
_SET_RUN_COUNTER = (
    update(J).where(J.c.id == bindparam("b_id")).values(run_counter=bindparam("b_number"))
)
_INSERT_RUN = insert(R)
_INSERT_EVENT = insert(E)
# SET comes from the keys of the parameters given at execution
_MOVE_RUN = (
    update(R)
    .where(R.c.id == bindparam("b_id"), R.c.status.in_(bindparam("b_sources", expanding=True)))
    .returning(*R.c)
)
_UPDATE_RUN = update(R).where(R.c.id == bindparam("b_id"))
_PENDING_RUNS = (
    select(R.c.id, R.c.pipeline_name, R.c.reason)
    .where(R.c.status == RunStatus.PENDING.value)
    .order_by(R.c.created_at, R.c.number)
    .limit(50)
)
_BUSY_PIPELINES = select(R.c.pipeline_name).where(
    R.c.status.in_([s.value for s in LIVE]), R.c.pipeline_name.is_not(None)
)
_CLAIM_RUN = (
    update(R)
    .where(R.c.id == bindparam("b_id"), R.c.status == RunStatus.PENDING.value)
    .returning(*R.c)
)
_EVENTS_AFTER = (
    select(E).where(E.c.id > bindparam("b_position")).order_by(E.c.id).limit(bindparam("b_limit"))
)


def _insert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT, which knows `ON CONFLICT` (SQLite and PostgreSQL both do)."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def _event_row(
    ws_id: str,
    kind: str,
    *,
    job_id: str | None,
    run_id: str | None,
    payload: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "workspace_id": ws_id,
        "kind": kind,
        "job_id": job_id,
        "run_id": run_id,
        "payload": payload or {},
        "created_at": now,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class AmbiguousKeyError(HeadwaterError, LookupError):
    """A key name or prefix that several active keys share."""

    code = "api_key_ambiguous"
    status = 409

    def __init__(self, id_or_name: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(candidates)} active API keys match {id_or_name!r}")
        self.candidates = candidates


@dataclass(frozen=True)
class JobSpec:
    """A job of a manifest, with what dlt derived from it, ready to store."""

    job_ref: str
    job_type: str
    definition: dict[str, Any]
    definition_hash: str
    triggers: list[str]
    default_trigger: str | None
    pipeline_name: str | None


@dataclass(frozen=True)
class DeployedJob:
    job: dict[str, Any]
    outcome: str  # created | updated | unchanged | archived
    previous_version: dict[str, Any] | None


@dataclass(frozen=True)
class RunRequest:
    """Everything a trigger asks of a new run."""

    job_id: str
    trigger: str
    profile: str | None = None
    parameters: dict[str, Any] | None = None
    refresh: bool = False
    previous_run_id: str | None = None
    triggered_by: str | None = None
    dedupe_key: str | None = None
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    timeout_s: float | None = None
    grace_period_s: float = 30.0
    concurrency: int | None = 1


@dataclass(frozen=True)
class TriggerResult:
    decision: policy.Decision
    run: dict[str, Any] | None
    """The run created (or recorded as skipped); None for a dry run or a paused job."""
    existing: bool = False
    """True when the dedupe key named a run that already existed."""


@dataclass
class _QueuedTrigger:
    req: RunRequest
    now: datetime
    dry_run: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: TriggerResult | None = None
    error: BaseException | None = None
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[TriggerResult]] | None = None
    """An async caller's loop and future (`create_run_async`), resolved on that loop."""


def _resolve(futures: list[tuple[asyncio.Future[TriggerResult], _QueuedTrigger]]) -> None:
    for future, item in futures:
        if future.done():  # the caller went away (cancelled)
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(item.result)  # type: ignore[arg-type]


def _fail_unanswered(items: list[_QueuedTrigger], ex: BaseException) -> None:
    """Never leave a caller waiting: what got no answer gets `ex`."""
    unanswered = [i for i in items if i.result is None and i.error is None]
    for item in unanswered:
        item.error = ex
    _answer(unanswered)


def _answer(items: list[_QueuedTrigger]) -> None:
    """Wake the callers of answered items: threads by their event, async callers with
    one call per event loop (not one per item: each call writes to the loop's pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for item in items:
        if item.result is None and item.error is None:
            continue
        item.done.set()
        if item.waiter is not None:
            loop, future = item.waiter
            by_loop.setdefault(loop, []).append((future, item))
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


@dataclass(frozen=True)
class LogLine:
    content: str
    source: str
    stage: str
    io_stream: str
    reported_at: datetime


def _row(r: Any) -> dict[str, Any] | None:
    return None if r is None else dict(r._mapping)


class Store:
    def __init__(self, engine: Engine, notifier: notify.Notifier | None = None) -> None:
        self.engine = engine
        self.reader = engine.execution_options(readonly=True)
        self.notifier = notifier or notify.Notifier()
        # job versions never change once written: every run start reads one
        self._versions: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, tuple[int, float, dict[str, Any]]] = {}
        # triggers waiting for the combiner (see create_run)
        self._queue: list[_QueuedTrigger] = []
        self._queue_lock = threading.Lock()
        self._combining = False
        # records batches for async callers, so the event loop never waits on the database
        # (its one thread starts on first use)
        self._combiner = ThreadPoolExecutor(1, thread_name_prefix="trigger-combiner")
        # triggers an event loop records on its next turn (SQLite; see create_run_async)
        self._on_loop: list[_QueuedTrigger] = []

    # -- workspace -------------------------------------------------------------------------

    def ensure_workspace(self, path: str, name: str) -> dict[str, Any]:
        """The store's workspace; created with a new stable id on first start."""
        with write(self.engine) as conn:
            row = conn.execute(select(W).limit(1)).first()
            now = utcnow()
            if row is None:
                ws_id = new_id()
                conn.execute(
                    insert(W).values(id=ws_id, name=name, path=path, created_at=now, updated_at=now)
                )
                row = conn.execute(select(W).where(W.c.id == ws_id)).first()
            elif row.path != path:
                conn.execute(update(W).where(W.c.id == row.id).values(path=path, updated_at=now))
                row = conn.execute(select(W).where(W.c.id == row.id)).first()
        return _row(row)  # type: ignore[return-value]

    def get_workspace(self, ws_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(conn.execute(select(W).where(W.c.id == ws_id)).first())

    # -- manifests and jobs ----------------------------------------------------------------

    def latest_manifest(self, ws_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(
                conn.execute(
                    select(MV)
                    .where(MV.c.workspace_id == ws_id)
                    .order_by(MV.c.version.desc())
                    .limit(1)
                ).first()
            )

    def deploy(
        self,
        ws_id: str,
        manifest: dict[str, Any],
        manifest_hash: str,
        warnings: list[str],
        specs: Sequence[JobSpec],
        deployment_module: str | None,
        dry_run: bool = False,
        code_package_id: str | None = None,
        config_package_id: str | None = None,
    ) -> tuple[int | None, list[DeployedJob]]:
        """Store a manifest version and reconcile the jobs to it.

        Jobs missing from a manifest of the same deployment module are archived:
        their triggers stop, their history stays. A manifest with the hash and
        packages of the newest version adds no version. Answers
        `(new version or None, outcomes)`.
        """
        now = utcnow()
        outcomes: list[DeployedJob] = []
        with write(self.engine) as conn:
            latest = conn.execute(
                select(MV.c.version, MV.c.hash, MV.c.code_package_id, MV.c.config_package_id)
                .where(MV.c.workspace_id == ws_id)
                .order_by(MV.c.version.desc())
                .limit(1)
            ).first()
            existing = {
                r.job_ref: dict(r._mapping)
                for r in conn.execute(select(J).where(J.c.workspace_id == ws_id))
            }
            seen: set[str] = set()
            for spec in specs:
                seen.add(spec.job_ref)
                old = existing.get(spec.job_ref)
                if old is None:
                    outcomes.append(
                        self._create_job(conn, ws_id, spec, deployment_module, now, dry_run)
                    )
                elif old["definition_hash"] != spec.definition_hash or old["is_archived"]:
                    outcomes.append(
                        self._update_job(conn, old, spec, deployment_module, now, dry_run)
                    )
                else:
                    outcomes.append(DeployedJob(old, "unchanged", None))
            if deployment_module is not None:
                for ref, old in existing.items():
                    if ref in seen or old["is_archived"]:
                        continue
                    if old["deployment_module"] not in (None, deployment_module):
                        continue
                    if not dry_run:
                        conn.execute(
                            update(J)
                            .where(J.c.id == old["id"])
                            .values(is_archived=True, next_run_at=None, updated_at=now)
                        )
                        old = {**old, "is_archived": True, "updated_at": now}
                    outcomes.append(DeployedJob(old, "archived", None))
            version: int | None = None
            changed = latest is None or (
                latest.hash,
                latest.code_package_id,
                latest.config_package_id,
            ) != (
                manifest_hash,
                code_package_id,
                config_package_id,
            )
            if changed and not dry_run:
                version = (latest.version if latest else 0) + 1
                conn.execute(
                    insert(MV).values(
                        workspace_id=ws_id,
                        version=version,
                        hash=manifest_hash,
                        deployment_module=deployment_module,
                        manifest=manifest,
                        warnings=list(warnings),
                        code_package_id=code_package_id,
                        config_package_id=config_package_id,
                        created_at=now,
                    )
                )
                self._event(
                    conn,
                    ws_id,
                    "deployment.loaded",
                    payload={"version": version, "hash": manifest_hash},
                    now=now,
                )
        if not dry_run:
            self.notifier.notify(notify.JOBS, notify.EVENTS)
        return version, outcomes

    def _create_job(
        self,
        conn: Connection,
        ws_id: str,
        spec: JobSpec,
        module: str | None,
        now: datetime,
        dry_run: bool,
    ) -> DeployedJob:
        job_id, version_id = new_id(), new_id()
        values = dict(
            id=job_id,
            workspace_id=ws_id,
            job_ref=spec.job_ref,
            job_type=spec.job_type,
            definition=spec.definition,
            definition_hash=spec.definition_hash,
            version=1,
            current_version_id=version_id,
            triggers=spec.triggers,
            default_trigger=spec.default_trigger,
            pipeline_name=spec.pipeline_name,
            deployment_module=module,
            is_paused=False,
            is_archived=False,
            run_counter=0,
            next_run_at=None,
            created_at=now,
            updated_at=now,
        )
        if not dry_run:
            conn.execute(insert(J).values(**values))
            conn.execute(
                insert(JV).values(
                    id=version_id,
                    job_id=job_id,
                    version=1,
                    definition=spec.definition,
                    definition_hash=spec.definition_hash,
                    created_at=now,
                )
            )
        return DeployedJob(values, "created", None)

    def _update_job(
        self,
        conn: Connection,
        old: dict[str, Any],
        spec: JobSpec,
        module: str | None,
        now: datetime,
        dry_run: bool,
    ) -> DeployedJob:
        previous = None
        if old["current_version_id"]:
            previous = _row(
                conn.execute(select(JV).where(JV.c.id == old["current_version_id"])).first()
            )
        values: dict[str, Any] = dict(
            job_type=spec.job_type,
            triggers=spec.triggers,
            default_trigger=spec.default_trigger,
            pipeline_name=spec.pipeline_name,
            deployment_module=module,
            is_archived=False,
            updated_at=now,
        )
        if old["definition_hash"] != spec.definition_hash:
            version_id = new_id()
            values.update(
                definition=spec.definition,
                definition_hash=spec.definition_hash,
                version=old["version"] + 1,
                current_version_id=version_id,
            )
            if not dry_run:
                conn.execute(
                    insert(JV).values(
                        id=version_id,
                        job_id=old["id"],
                        version=old["version"] + 1,
                        definition=spec.definition,
                        definition_hash=spec.definition_hash,
                        created_at=now,
                    )
                )
        if not dry_run:
            conn.execute(update(J).where(J.c.id == old["id"]).values(**values))
        return DeployedJob({**old, **values}, "updated", previous)

    def list_jobs(
        self,
        ws_id: str,
        *,
        ref: str | None = None,
        is_archived: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        cond = [J.c.workspace_id == ws_id]
        if ref is not None:
            cond.append(J.c.job_ref == ref)
        if is_archived is not None:
            cond.append(J.c.is_archived == is_archived)
        with self.reader.connect() as conn:
            total = conn.execute(select(func.count()).select_from(J).where(*cond)).scalar_one()
            rows = conn.execute(
                select(J).where(*cond).order_by(J.c.job_ref).limit(limit).offset(offset)
            ).all()
        return [dict(r._mapping) for r in rows], int(total)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(conn.execute(_GET_JOB, {"b_id": job_id}).first())

    def get_job_cached(self, job_id: str) -> dict[str, Any] | None:
        """The job as of the last change this process heard of (JOBS) and at most
        JOB_CACHE_S old: for triggers, which re-read what may change under their lock."""
        version, now = self.notifier.version(notify.JOBS), time.monotonic()
        hit = self._jobs.get(job_id)
        if hit is not None and hit[0] == version and now - hit[1] < JOB_CACHE_S:
            return hit[2]
        job = self.get_job(job_id)
        if job is not None:
            if len(self._jobs) > 10_000:
                self._jobs.clear()
            self._jobs[job_id] = (version, now, job)
        return job

    def published_job(self, public_secret: str) -> dict[str, Any] | None:
        """The job published under `public_secret`, if any."""
        with self.reader.connect() as conn:
            return _row(conn.execute(select(J).where(J.c.public_secret == public_secret)).first())

    def get_job_version(self, version_id: str) -> dict[str, Any] | None:
        cached = self._versions.get(version_id)
        if cached is not None:
            return dict(cached)
        with self.reader.connect() as conn:
            row = _row(conn.execute(_GET_JOB_VERSION, {"b_id": version_id}).first())
        if row is not None:
            if len(self._versions) > 10_000:
                self._versions.clear()
            self._versions[version_id] = row
            return dict(row)
        return None

    def active_jobs(self, ws_id: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(J).where(J.c.workspace_id == ws_id, J.c.is_archived.is_(False))
            ).all()
        return [dict(r._mapping) for r in rows]

    def set_paused(self, job_id: str, paused: bool) -> dict[str, Any] | None:
        now = utcnow()
        with write(self.engine) as conn:
            job = _row(conn.execute(select(J).where(J.c.id == job_id)).first())
            if job is None:
                return None
            if job["is_paused"] != paused:
                conn.execute(
                    update(J).where(J.c.id == job_id).values(is_paused=paused, updated_at=now)
                )
                if not paused:
                    # ticks missed while paused are not made up: schedules restart from now
                    conn.execute(update(SC).where(SC.c.job_id == job_id).values(last_tick=now))
                self._event(
                    conn,
                    job["workspace_id"],
                    "job.paused" if paused else "job.resumed",
                    job_id=job_id,
                    now=now,
                )
                job = {**job, "is_paused": paused, "updated_at": now}
        self.notifier.notify(notify.JOBS)
        return job

    def set_archived(self, job_id: str, archived: bool) -> dict[str, Any] | None:
        """Archive a job by hand (its triggers stop, its history stays) or bring it back."""
        now = utcnow()
        with write(self.engine) as conn:
            job = _row(conn.execute(select(J).where(J.c.id == job_id)).first())
            if job is None or job["is_archived"] == archived:
                return job
            values: dict[str, Any] = {"is_archived": archived, "updated_at": now}
            if archived:
                values["next_run_at"] = None
            conn.execute(update(J).where(J.c.id == job_id).values(**values))
            if not archived:
                conn.execute(update(SC).where(SC.c.job_id == job_id).values(last_tick=now))
            self._event(
                conn,
                job["workspace_id"],
                "job.archived" if archived else "job.unarchived",
                job_id=job_id,
                now=now,
            )
        self.notifier.notify(notify.JOBS)
        return {**job, **values}

    def set_published(self, job_id: str, published: bool) -> dict[str, Any] | None:
        """Give the job a public secret (kept when it has one) or take it away."""
        now = utcnow()
        with write(self.engine) as conn:
            job = _row(conn.execute(select(J).where(J.c.id == job_id)).first())
            if job is None or (job["public_secret"] is not None) == published:
                return job
            values: dict[str, Any] = {
                "public_secret": new_id() if published else None,
                "updated_at": now,
            }
            conn.execute(update(J).where(J.c.id == job_id).values(**values))
            self._event(
                conn,
                job["workspace_id"],
                "job.published" if published else "job.unpublished",
                job_id=job_id,
                now=now,
            )
        return {**job, **values}

    def set_workspace_archived(self, ws_id: str, archived: bool) -> dict[str, Any] | None:
        """Archive the workspace (no trigger starts a run; history stays) or bring it back.

        Archiving an archived workspace keeps its `archived_at`. Schedules are not made
        up after an unarchive: their cursors restart from now, as after a resume.
        """
        now = utcnow()
        with write(self.engine) as conn:
            ws = _row(conn.execute(select(W).where(W.c.id == ws_id)).first())
            if ws is None or (ws["archived_at"] is not None) == archived:
                return ws
            values: dict[str, Any] = {"archived_at": now if archived else None, "updated_at": now}
            conn.execute(update(W).where(W.c.id == ws_id).values(**values))
            if not archived:
                jobs = select(J.c.id).where(J.c.workspace_id == ws_id).scalar_subquery()
                conn.execute(update(SC).where(SC.c.job_id.in_(jobs)).values(last_tick=now))
            self._event(
                conn,
                ws_id,
                "workspace.archived" if archived else "workspace.unarchived",
                now=now,
            )
        self.notifier.notify(notify.JOBS)
        return {**ws, **values}

    def update_workspace(self, ws_id: str, **values: Any) -> dict[str, Any] | None:
        with write(self.engine) as conn:
            conn.execute(update(W).where(W.c.id == ws_id).values(updated_at=utcnow(), **values))
            return _row(conn.execute(select(W).where(W.c.id == ws_id)).first())

    def set_next_run(self, updates: dict[str, datetime | None]) -> None:
        if not updates:
            return
        with write(self.engine) as conn:
            for job_id, at in updates.items():
                conn.execute(update(J).where(J.c.id == job_id).values(next_run_at=at))

    # -- runs --------------------------------------------------------------------------------

    def create_run(
        self, req: RunRequest, *, now: datetime | None = None, dry_run: bool = False
    ) -> TriggerResult:
        """Decide a trigger and record its outcome.

        Each trigger is decided on facts read in the transaction that records it:
        the job row is locked first (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE`), so
        concurrent triggers of one job see each other's runs. Concurrent callers
        are combined: the first records every trigger queued meanwhile in one
        transaction, in order, while the others wait for their answer, so a burst
        costs one commit and one lock hand-over per batch instead of per trigger.
        """
        item = _QueuedTrigger(req, now or utcnow(), dry_run)
        if self._enqueue(item):
            self._combine()
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    async def create_run_async(
        self, req: RunRequest, *, now: datetime | None = None, dry_run: bool = False
    ) -> TriggerResult:
        """`create_run` for the event loop, which goes on serving while the run is recorded.

        On SQLite the loop records every trigger queued since its last turn itself, in
        one transaction, once the write lock is free (it never waits for it): a
        thread would have to win the interpreter lock back from the loop after every
        statement. Elsewhere a combiner thread records them.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TriggerResult] = loop.create_future()
        item = _QueuedTrigger(req, now or utcnow(), dry_run, waiter=(loop, future))
        lock = write_lock(self.engine)
        if lock is None:
            if self._enqueue(item):
                self._combiner.submit(self._combine)
        else:
            with self._queue_lock:
                self._on_loop.append(item)
                first = len(self._on_loop) == 1
            if first:
                loop.call_soon(self._record_on_loop, loop, lock)
        return await future

    def _record_on_loop(
        self, loop: asyncio.AbstractEventLoop, lock: WriteLock, locked: bool = False
    ) -> None:
        if not locked and not lock.try_acquire():
            # another writer holds it: a thread waits for it, so the loop neither blocks nor spins
            self._combiner.submit(self._lock_for_loop, loop, lock)
            return
        with self._queue_lock:
            batch, self._on_loop = self._on_loop, []
        try:
            if batch:
                self._record(batch, self.engine.begin)
        except BaseException as ex:
            _fail_unanswered(batch, ex)
        finally:
            lock.release()

    def _lock_for_loop(self, loop: asyncio.AbstractEventLoop, lock: WriteLock) -> None:
        lock.__enter__()
        try:
            loop.call_soon_threadsafe(self._record_on_loop, loop, lock, True)
        except RuntimeError:  # the loop is closed
            lock.release()

    def _enqueue(self, item: _QueuedTrigger) -> bool:
        """Queue a trigger; True when the caller must start combining."""
        with self._queue_lock:
            self._queue.append(item)
            combine = not self._combining
            self._combining = True
        return combine

    def _combine(self) -> None:
        """Record queued triggers until the queue is empty."""
        batch: list[_QueuedTrigger] = []
        try:
            while True:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._combining = False
                        return
                self._record(batch)
        except BaseException as ex:  # never leave a caller waiting
            with self._queue_lock:
                stranded, self._queue = self._queue, []
                self._combining = False
            _fail_unanswered(batch + stranded, ex)
            raise

    def _record(
        self,
        batch: list[_QueuedTrigger],
        transaction: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        begin = transaction or (lambda: write(self.engine))
        try:
            with begin() as conn:
                results = self._decide_and_record(conn, batch)
            for item, result in zip(batch, results, strict=True):
                item.result = result
        except Exception:
            if len(batch) == 1:
                raise
            # one trigger failed (a job gone, say): none of the batch was kept;
            # record each alone, so only that one gets the error
            for item in batch:
                try:
                    with begin() as conn:
                        (item.result,) = self._decide_and_record(conn, [item])
                except Exception as ex:
                    item.error = ex
        finally:
            self.notifier.notify(notify.RUNS)
            _answer(batch)

    def _decide_and_record(
        self, conn: Connection, batch: list[_QueuedTrigger]
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
                job = conn.execute(_LOCK_JOB, {"b_id": req.job_id}).first()
                if job is None:
                    raise KeyError(req.job_id)
                jobs[req.job_id], counters[req.job_id] = job, job.run_counter
            if req.dedupe_key is not None:
                prior = deduped.get((req.job_id, req.dedupe_key))
                if prior is None:
                    prior = _row(
                        conn.execute(
                            _PRIOR_RUN, {"b_job_id": req.job_id, "b_dedupe_key": req.dedupe_key}
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
                    conn.execute(_COUNT_ACTIVE, {"b_job_id": req.job_id}).scalar_one()
                )
            decision = policy.decide(
                policy.JobFacts(
                    concurrency=req.concurrency,
                    active_runs=active.get(req.job_id, 0),
                    is_paused=job.is_paused,
                    is_archived=job.is_archived,
                    workspace_archived=job.ws_archived_at is not None,
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
            if created and req.job_id in active:
                active[req.job_id] += 1
            run = self._new_run(job, req, counters[req.job_id], decision, now)
            runs.append(run)
            if req.dedupe_key is not None:
                deduped[(req.job_id, req.dedupe_key)] = run
            events.append(
                _event_row(
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
                _SET_RUN_COUNTER,
                [
                    {"b_id": job_id, "b_number": n}
                    for job_id, n in counters.items()
                    if n != jobs[job_id].run_counter
                ],
            )
            conn.execute(_INSERT_RUN, runs)
            conn.execute(_INSERT_EVENT, events)
        return results

    @staticmethod
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
            created_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None if created else now,
        )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(conn.execute(_GET_RUN, {"b_id": run_id}).first())

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
    ) -> tuple[list[dict[str, Any]], int]:
        """Runs newest first, as the clients expect."""
        cond = [R.c.workspace_id == ws_id]
        if job_id is not None:
            cond.append(R.c.job_id == job_id)
        statuses = list(statuses)
        if statuses:
            cond.append(R.c.status.in_(statuses))
        if number is not None:
            cond.append(R.c.number == number)
        if triggered_by is not None:
            cond.append(R.c.triggered_by == triggered_by)
        with self.reader.connect() as conn:
            total = conn.execute(select(func.count()).select_from(R).where(*cond)).scalar_one()
            rows = conn.execute(
                select(R)
                .where(*cond)
                .order_by(R.c.created_at.desc(), R.c.number.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return [dict(r._mapping) for r in rows], int(total)

    def latest_runs(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest run of each job, keyed by job id."""
        if not job_ids:
            return {}
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(R).where(
                    R.c.job_id.in_(list(job_ids)),
                    R.c.number
                    == select(J.c.run_counter).where(J.c.id == R.c.job_id).scalar_subquery(),
                )
            ).all()
        return {r.job_id: dict(r._mapping) for r in rows}

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
    ) -> list[dict[str, Any] | None]:
        """`transition` for several runs (id, target, fields) in one transaction: a worker
        ends or starts the runs of one turn together."""
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
                result = conn.execute(
                    _MOVE_RUN,
                    {"b_id": run_id, "b_sources": [s.value for s in sources_of(target)], **values},
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

    def claim_next(self, worker_id: str, now: datetime | None = None) -> dict[str, Any] | None:
        """Take the oldest pending run that may start now and mark it `starting`."""
        claimed = self.claim_many(worker_id, 1, now)
        return claimed[0] if claimed else None

    def claim_many(
        self, worker_id: str, limit: int, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Take up to `limit` of the oldest pending runs that may start now, in one
        transaction, and mark them `starting`.

        A run waits while another live run (or one claimed here) loads the same dlt
        pipeline; its `reason` says so.
        """
        now = now or utcnow()
        claims: list[dict[str, Any]] = []
        with write(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                # one claimer at a time, as BEGIN IMMEDIATE gives on SQLite: the pipeline
                # check below must see every claim committed before it
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
            candidates = conn.execute(_PENDING_RUNS).all()
            if not candidates:
                return claims
            busy = {r.pipeline_name for r in conn.execute(_BUSY_PIPELINES)}
            for cand in candidates:
                if len(claims) >= limit:
                    break
                wait_reason = policy.pipeline_conflict(cand.pipeline_name, busy)
                if wait_reason is not None:
                    if cand.reason != wait_reason:
                        conn.execute(_UPDATE_RUN, {"b_id": cand.id, "reason": wait_reason})
                    continue
                claimed = conn.execute(
                    _CLAIM_RUN,
                    {
                        "b_id": cand.id,
                        "status": RunStatus.STARTING.value,
                        "worker_id": worker_id,
                        "started_at": now,
                        "updated_at": now,
                        "reason": None,
                    },
                ).first()
                if claimed is None:
                    continue
                if claimed.pipeline_name is not None:
                    busy.add(claimed.pipeline_name)
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

    def live_runs(self, worker_id: str | None = None) -> list[dict[str, Any]]:
        cond = [R.c.status.in_([s.value for s in LIVE])]
        if worker_id is not None:
            cond.append(R.c.worker_id == worker_id)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(R).where(*cond))]

    # -- logs ---------------------------------------------------------------------------------

    def append_logs(self, batches: dict[str, tuple[int, list[LogLine]]]) -> None:
        """Insert log lines; `batches` maps run id to (first line number, lines)."""
        rows = [
            dict(
                run_id=run_id,
                line_num=first + i,
                content=line.content,
                source=line.source,
                stage=line.stage,
                io_stream=line.io_stream,
                reported_at=line.reported_at,
            )
            for run_id, (first, lines) in batches.items()
            for i, line in enumerate(lines)
        ]
        if not rows:
            return
        with write(self.engine) as conn:
            conn.execute(insert(L), rows)
        self.notifier.notify(notify.LOGS)

    def next_line_num(self, run_id: str) -> int:
        with self.reader.connect() as conn:
            n = conn.execute(select(func.max(L.c.line_num)).where(L.c.run_id == run_id)).scalar()
        return 0 if n is None else int(n) + 1

    def read_logs(self, run_id: str, after: int = -1, limit: int = 10_000) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(L)
                .where(L.c.run_id == run_id, L.c.line_num > after)
                .order_by(L.c.line_num)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # -- events and cursors ------------------------------------------------------------------

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
        conn.execute(
            _INSERT_EVENT,
            _event_row(ws_id, kind, job_id=job_id, run_id=run_id, payload=payload, now=now),
        )

    def events_after(self, position: int, limit: int = 500) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(_EVENTS_AFTER, {"b_position": position, "b_limit": limit}).all()
        return [dict(r._mapping) for r in rows]

    def last_event_id(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(E.c.id), 0))).scalar_one())

    def get_cursor(self, name: str) -> int | None:
        with self.reader.connect() as conn:
            return conn.execute(select(C.c.position).where(C.c.name == name)).scalar()

    def set_cursor(self, name: str, position: int) -> None:
        with write(self.engine) as conn:
            stmt = _insert(conn, C).values(name=name, position=position)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[C.c.name], set_={"position": stmt.excluded.position}
                )
            )

    def schedule_cursors(self) -> dict[tuple[str, str], datetime]:
        with self.reader.connect() as conn:
            return {(r.job_id, r.trigger): r.last_tick for r in conn.execute(select(SC))}

    def advance_schedule(self, job_id: str, trigger: str, tick: datetime) -> None:
        """Record that `tick` was handled; never moves a cursor backwards."""
        with write(self.engine) as conn:
            stmt = _insert(conn, SC).values(job_id=job_id, trigger=trigger, last_tick=tick)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[SC.c.job_id, SC.c.trigger],
                    set_={"last_tick": stmt.excluded.last_tick},
                    where=SC.c.last_tick < stmt.excluded.last_tick,
                )
            )

    def drop_schedule(self, job_id: str, keep: Iterable[str]) -> None:
        with write(self.engine) as conn:
            conn.execute(delete(SC).where(SC.c.job_id == job_id, SC.c.trigger.not_in(list(keep))))

    # -- API keys ---------------------------------------------------------------------------------

    def create_key(
        self,
        ws_id: str,
        name: str,
        scope: str,
        *,
        expires_at: datetime | None = None,
        kind: str = "key",
        parent_id: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new key; answers its row and the key itself, which is never stored or shown again."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = dict(
            id=new_id(),
            workspace_id=ws_id,
            kind=kind,
            name=name,
            prefix=secret[: len(KEY_PREFIX) + 6],
            hash=key_hash(secret),
            scope=scope,
            parent_id=parent_id,
            created_at=utcnow(),
            expires_at=expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        with write(self.engine) as conn:
            conn.execute(insert(K).values(**row))
        return row, secret

    def find_key(self, secret: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(conn.execute(select(K).where(K.c.hash == key_hash(secret))).first())

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(conn.execute(select(K).where(K.c.id == key_id)).first())

    def list_keys(self, ws_id: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(K)
                .where(K.c.workspace_id == ws_id, K.c.kind == "key")
                .order_by(K.c.created_at)
            ).all()
        return [dict(r._mapping) for r in rows]

    def revoke_key(self, ws_id: str, id_or_name: str) -> list[dict[str, Any]]:
        """Revoke an active key by id, prefix or name; its data-plane tokens die with it.

        An id names one key; a name or prefix that several active keys share revokes
        nothing and raises `AmbiguousKeyError` with them.
        """
        now = utcnow()
        with write(self.engine) as conn:
            rows = conn.execute(
                select(K)
                .where(
                    K.c.workspace_id == ws_id,
                    K.c.kind == "key",
                    K.c.revoked_at.is_(None),
                    or_(K.c.id == id_or_name, K.c.name == id_or_name, K.c.prefix == id_or_name),
                )
                .order_by(K.c.created_at)
            ).all()
            by_id = [r for r in rows if r.id == id_or_name]
            rows = by_id or rows
            if len(rows) > 1:
                raise AmbiguousKeyError(id_or_name, [dict(r._mapping) for r in rows])
            ids = [r.id for r in rows]
            if ids:
                conn.execute(
                    update(K)
                    .where(or_(K.c.id.in_(ids), K.c.parent_id.in_(ids)))
                    .values(revoked_at=now)
                )
        return [{**dict(r._mapping), "revoked_at": now} for r in rows]

    def revoke_session(self, session_id: str) -> None:
        """End one pages session (its row only); expired sessions are forgotten meanwhile."""
        now = utcnow()
        with write(self.engine) as conn:
            conn.execute(
                update(K).where(K.c.id == session_id, K.c.kind == "session").values(revoked_at=now)
            )
            conn.execute(delete(K).where(K.c.kind == "session", K.c.expires_at < now))

    def touch_key(self, key_id: str, now: datetime) -> None:
        with write(self.engine) as conn:
            conn.execute(update(K).where(K.c.id == key_id).values(last_used_at=now))

    # -- idempotent requests -------------------------------------------------------------------

    def claim_idempotency(
        self, principal_id: str, key: str, request_hash: str, since: datetime
    ) -> dict[str, Any] | None:
        """Reserve `key` for this request; answers the earlier record when there is one.

        Records older than `since` are forgotten first, so a key may be used again
        after its window.
        """
        with write(self.engine) as conn:
            conn.execute(delete(IR).where(IR.c.created_at < since))
            prior = conn.execute(
                select(IR).where(IR.c.principal_id == principal_id, IR.c.key == key)
            ).first()
            if prior is not None:
                return dict(prior._mapping)
            conn.execute(
                insert(IR).values(
                    principal_id=principal_id,
                    key=key,
                    request_hash=request_hash,
                    status_code=None,
                    response=None,
                    created_at=utcnow(),
                )
            )
        return None

    def get_idempotency(self, principal_id: str, key: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            return _row(
                conn.execute(
                    select(IR).where(IR.c.principal_id == principal_id, IR.c.key == key)
                ).first()
            )

    def finish_idempotency(
        self, principal_id: str, key: str, status_code: int, response: Any
    ) -> None:
        with write(self.engine) as conn:
            conn.execute(
                update(IR)
                .where(IR.c.principal_id == principal_id, IR.c.key == key)
                .values(status_code=status_code, response=response)
            )

    def release_idempotency(self, principal_id: str, key: str) -> None:
        """Forget a reservation whose request failed, so it may be sent again."""
        with write(self.engine) as conn:
            conn.execute(
                delete(IR).where(
                    IR.c.principal_id == principal_id, IR.c.key == key, IR.c.status_code.is_(None)
                )
            )


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
