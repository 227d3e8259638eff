"""Every statement the `Store` runs against its database, named in one place, and the
helpers that build its rows.

Statements are built once, with named bind parameters (`b_...`) for what a call
supplies; an `UPDATE` whose SET varies per call takes its SET from the keys of the
parameters given at execution. Building a statement per call (`.values(**row)`, fresh
bind parameters, cache keys) costs several times more CPU than SQLite spends running
it. What cannot be one statement is a named function here: the filters of a listing
(`jobs_page`, `runs_page`) and the upserts, whose `ON CONFLICT` depends on the dialect
of the connection.

The other stores of this package (`packages`, `telemetry`, `vault`) keep their own
statements beside them and use the row helpers here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Delete,
    Select,
    Update,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from headwater.core.states import ACTIVE, LIVE, RunStatus
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

CLAIM_LOCK = 0x6877_636C_61696D
"""PostgreSQL advisory lock key ("hwclaim") that serializes `claim_many`."""


# -- row helpers ----------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def row_dict(r: Any) -> dict[str, Any] | None:
    """A result row as a plain dict (None for no row)."""
    return None if r is None else dict(r._mapping)


def dialect_insert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT, which knows `ON CONFLICT` (SQLite and PostgreSQL both do)."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def event_row(
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


# -- workspace ------------------------------------------------------------------------------

FIRST_WORKSPACE = select(W).limit(1)
GET_WORKSPACE = select(W).where(W.c.id == bindparam("b_id"))
INSERT_WORKSPACE = insert(W)
UPDATE_WORKSPACE = update(W).where(W.c.id == bindparam("b_id"))
RESTART_WORKSPACE_SCHEDULES = update(SC).where(
    SC.c.job_id.in_(select(J.c.id).where(J.c.workspace_id == bindparam("b_id")).scalar_subquery())
)
"""SET `last_tick`: the schedules of every job of the workspace restart from then."""

# -- manifests and jobs ---------------------------------------------------------------------

LATEST_MANIFEST = (
    select(MV)
    .where(MV.c.workspace_id == bindparam("b_ws_id"))
    .order_by(MV.c.version.desc())
    .limit(1)
)
LATEST_MANIFEST_KEY = LATEST_MANIFEST.with_only_columns(
    MV.c.version, MV.c.hash, MV.c.code_package_id, MV.c.config_package_id
)
INSERT_MANIFEST = insert(MV)
WORKSPACE_JOBS = select(J).where(J.c.workspace_id == bindparam("b_ws_id"))
ACTIVE_JOBS = WORKSPACE_JOBS.where(J.c.is_archived.is_(False))
GET_JOB = select(J).where(J.c.id == bindparam("b_id"))
PUBLISHED_JOB = select(J).where(J.c.public_secret == bindparam("b_public_secret"))
INSERT_JOB = insert(J)
UPDATE_JOB = update(J).where(J.c.id == bindparam("b_id"))
GET_JOB_VERSION = select(JV).where(JV.c.id == bindparam("b_id"))
INSERT_JOB_VERSION = insert(JV)
RESTART_SCHEDULES = update(SC).where(SC.c.job_id == bindparam("b_id"))
"""SET `last_tick`: the job's schedules restart from then (no catching up)."""


def jobs_page(
    ws_id: str, ref: str | None, is_archived: bool | None, limit: int, offset: int
) -> tuple[Select[Any], Select[Any]]:
    """(count, page) of a workspace's jobs, by ref, optionally filtered."""
    cond = [J.c.workspace_id == ws_id]
    if ref is not None:
        cond.append(J.c.job_ref == ref)
    if is_archived is not None:
        cond.append(J.c.is_archived == is_archived)
    return (
        select(func.count()).select_from(J).where(*cond),
        select(J).where(*cond).order_by(J.c.job_ref).limit(limit).offset(offset),
    )


# -- triggers -------------------------------------------------------------------------------

_NEWEST_MANIFEST = (
    select(MV).where(MV.c.workspace_id == J.c.workspace_id).order_by(MV.c.version.desc()).limit(1)
)
LOCK_JOB = (
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
"""The facts a trigger is decided on, the job row locked (`FOR UPDATE`)."""
PRIOR_RUN = select(R).where(
    R.c.job_id == bindparam("b_job_id"), R.c.dedupe_key == bindparam("b_dedupe_key")
)
COUNT_ACTIVE = (
    select(func.count())
    .select_from(R)
    .where(R.c.job_id == bindparam("b_job_id"), R.c.status.in_([s.value for s in ACTIVE]))
)
SET_RUN_COUNTER = (
    update(J).where(J.c.id == bindparam("b_id")).values(run_counter=bindparam("b_number"))
)
INSERT_RUN = insert(R)

# -- runs, transitions and claims -----------------------------------------------------------

GET_RUN = select(R).where(R.c.id == bindparam("b_id"))
MOVE_RUN = (
    update(R)
    .where(R.c.id == bindparam("b_id"), R.c.status.in_(bindparam("b_sources", expanding=True)))
    .returning(*R.c)
)
"""The one guarded state change: SET from the parameters, only from a source state."""
MOVE_RUN_FENCED = MOVE_RUN.where(
    R.c.worker_id == bindparam("b_fence_worker"), R.c.attempt == bindparam("b_fence_attempt")
)
"""`MOVE_RUN` by a remote worker: only while the run's attempt is still the worker's own
(a worker that lost its lease, then came back, changes nothing)."""
UPDATE_RUN = update(R).where(R.c.id == bindparam("b_id"))
LATEST_RUNS = select(R).where(
    R.c.job_id.in_(bindparam("b_job_ids", expanding=True)),
    R.c.number == select(J.c.run_counter).where(J.c.id == R.c.job_id).scalar_subquery(),
)
LIVE_RUNS = select(R).where(R.c.status.in_([s.value for s in LIVE]))
LIVE_RUNS_OF_WORKER = LIVE_RUNS.where(R.c.worker_id == bindparam("b_worker_id"))
CLAIM_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
PENDING_RUNS = (
    select(R.c.id, R.c.pipeline_name, R.c.reason, R.c.locks, R.c.pool)
    .join(J, J.c.id == R.c.job_id)
    # dbt Cloud jobs' runs are the monitors', never a worker's; a retry waits its turn
    .where(
        R.c.status == RunStatus.PENDING.value,
        J.c.job_type != "dbt_cloud",
        or_(R.c.not_before.is_(None), R.c.not_before <= bindparam("b_now")),
    )
    .order_by(R.c.created_at, R.c.number)
    .limit(50)
)
BUSY_PIPELINES = select(R.c.pipeline_name).where(
    R.c.status.in_([s.value for s in LIVE]), R.c.pipeline_name.is_not(None)
)
LOCK_HOLDERS = (
    select(R.c.number, R.c.locks, J.c.job_ref)
    .join(J, J.c.id == R.c.job_id)
    .where(R.c.status.in_([s.value for s in LIVE]), R.c.locks.is_not(None))
)
"""Live runs holding locks of `headwater.toml`, with their job, for claims and reasons."""
ACTIVE_RUNS_OF_JOB = select(R.c.id, R.c.status, R.c.number).where(
    R.c.job_id == bindparam("b_job_id"), R.c.status.in_([s.value for s in ACTIVE])
)
CLAIM_RUN = (
    update(R)
    .where(R.c.id == bindparam("b_id"), R.c.status == RunStatus.PENDING.value)
    .returning(*R.c)
)


def runs_page(
    ws_id: str,
    job_id: str | None,
    statuses: list[str],
    number: int | None,
    triggered_by: str | None,
    limit: int,
    offset: int,
    *,
    trigger_kinds: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    after: tuple[datetime, int, str] | None = None,
) -> tuple[Select[Any], Select[Any]]:
    """(count, page) of a workspace's runs, newest first, optionally filtered. `after`
    (created_at, number, id of the last run of the previous page) pages by key: a page
    costs the same however deep it is, and runs created meanwhile shift nothing."""
    cond = [R.c.workspace_id == ws_id]
    if trigger_kinds:
        cond.append(or_(*(R.c.trigger.like(f"{k}:%") for k in trigger_kinds)))
    if start is not None:
        cond.append(R.c.created_at >= start)
    if end is not None:
        cond.append(R.c.created_at < end)
    if job_id is not None:
        cond.append(R.c.job_id == job_id)
    if statuses:
        cond.append(R.c.status.in_(statuses))
    if number is not None:
        cond.append(R.c.number == number)
    if triggered_by is not None:
        cond.append(R.c.triggered_by == triggered_by)
    page = select(R).where(*cond)
    if after is not None:
        page = page.where(tuple_(R.c.created_at, R.c.number, R.c.id) < tuple_(*after))
        offset = 0
    return (
        select(func.count()).select_from(R).where(*cond),
        page.order_by(R.c.created_at.desc(), R.c.number.desc(), R.c.id.desc())
        .limit(limit)
        .offset(offset),
    )


# -- logs -----------------------------------------------------------------------------------

INSERT_LOG_LINES = insert(L)
HOLDERS_OF_RUNS = (
    select(R.c.id, R.c.worker_id, R.c.attempt)
    .where(
        R.c.id.in_(bindparam("b_ids", expanding=True)),
        R.c.status.in_([s.value for s in LIVE]),
    )
    .with_for_update(read=True)
)
"""Who holds each live run (worker, attempt), its row kept from changing until the
transaction ends: a remote worker's log lines go in only while the attempt is its own."""
LAST_LINE_NUM = select(func.max(L.c.line_num)).where(L.c.run_id == bindparam("b_run_id"))
LOGS_AFTER = (
    select(L)
    .where(L.c.run_id == bindparam("b_run_id"), L.c.line_num > bindparam("b_after"))
    .order_by(L.c.line_num)
    .limit(bindparam("b_limit"))
)

# -- events and cursors ---------------------------------------------------------------------

INSERT_EVENT = insert(E)
EVENTS_AFTER = (
    select(E).where(E.c.id > bindparam("b_position")).order_by(E.c.id).limit(bindparam("b_limit"))
)
LAST_EVENT_ID = select(func.coalesce(func.max(E.c.id), 0))
GET_CURSOR = select(C.c.position).where(C.c.name == bindparam("b_name"))
SCHEDULE_CURSORS = select(SC)
DROP_SCHEDULES = delete(SC).where(
    SC.c.job_id == bindparam("b_job_id"),
    SC.c.trigger.not_in(bindparam("b_keep", expanding=True)),
)


def upsert_cursor(conn: Connection) -> Any:
    """Set cursor `b_name` to `b_position`."""
    stmt = dialect_insert(conn, C).values(
        name=bindparam("b_name"), position=bindparam("b_position")
    )
    return stmt.on_conflict_do_update(
        index_elements=[C.c.name], set_={"position": stmt.excluded.position}
    )


def advance_schedule(conn: Connection) -> Any:
    """Set the schedule cursor (`b_job_id`, `b_trigger`) to `b_tick`, never backwards."""
    stmt = dialect_insert(conn, SC).values(
        job_id=bindparam("b_job_id"), trigger=bindparam("b_trigger"), last_tick=bindparam("b_tick")
    )
    return stmt.on_conflict_do_update(
        index_elements=[SC.c.job_id, SC.c.trigger],
        set_={"last_tick": stmt.excluded.last_tick},
        where=SC.c.last_tick < stmt.excluded.last_tick,
    )


# -- API keys and pages sessions ------------------------------------------------------------

INSERT_KEY = insert(K)
KEY_BY_HASH = select(K).where(K.c.hash == bindparam("b_hash"))
GET_KEY = select(K).where(K.c.id == bindparam("b_id"))
LIST_KEYS = (
    select(K)
    .where(K.c.workspace_id == bindparam("b_ws_id"), K.c.kind == "key")
    .order_by(K.c.created_at)
)
ACTIVE_KEYS_NAMED = (
    select(K)
    .where(
        K.c.workspace_id == bindparam("b_ws_id"),
        K.c.kind == "key",
        K.c.revoked_at.is_(None),
        or_(
            K.c.id == bindparam("b_id"),
            K.c.name == bindparam("b_name"),
            K.c.prefix == bindparam("b_prefix"),
        ),
    )
    .order_by(K.c.created_at)
)
"""Active keys whose id, name or prefix is the one given (the same value thrice)."""
REVOKE_KEYS: Update = update(K).where(
    or_(
        K.c.id.in_(bindparam("b_ids", expanding=True)),
        K.c.parent_id.in_(bindparam("b_parent_ids", expanding=True)),
    )
)
"""SET `revoked_at` on the keys `b_ids` and their tokens (the same ids in `b_parent_ids`)."""
REVOKE_SESSION = update(K).where(K.c.id == bindparam("b_id"), K.c.kind == "session")
FORGET_EXPIRED_SESSIONS: Delete = delete(K).where(
    K.c.kind == "session", K.c.expires_at < bindparam("b_now")
)
TOUCH_KEY = update(K).where(K.c.id == bindparam("b_id"))

# -- idempotent requests --------------------------------------------------------------------

_IR_KEY = (
    IR.c.principal_id == bindparam("b_principal_id"),
    IR.c.key == bindparam("b_key"),
)
FORGET_IDEMPOTENCY_BEFORE = delete(IR).where(IR.c.created_at < bindparam("b_since"))
GET_IDEMPOTENCY = select(IR).where(*_IR_KEY)
INSERT_IDEMPOTENCY = insert(IR)
FINISH_IDEMPOTENCY = update(IR).where(*_IR_KEY)
RELEASE_IDEMPOTENCY = delete(IR).where(*_IR_KEY, IR.c.status_code.is_(None))
