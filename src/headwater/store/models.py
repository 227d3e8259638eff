"""Tables of the Headwater store (SQLite by default, PostgreSQL for fleets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, answers aware UTC: SQLite has no time zones, clients need `Z`."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """Set while the workspace is archived: no trigger starts a run."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ManifestVersion(Base):
    """Every manifest the workspace ever loaded, with dlt's hash."""

    __tablename__ = "manifest_versions"
    __table_args__ = (UniqueConstraint("workspace_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    version: Mapped[int]
    hash: Mapped[str] = mapped_column(String(100))
    deployment_module: Mapped[str | None] = mapped_column(String(200), nullable=True)
    manifest: Mapped[dict[str, Any]]
    warnings: Mapped[list[Any]]
    code_package_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The uploaded code package this version runs on; None: the workspace folder itself."""
    config_package_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("workspace_id", "job_ref"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    job_ref: Mapped[str] = mapped_column(String(300))
    job_type: Mapped[str] = mapped_column(String(40))
    definition: Mapped[dict[str, Any]]
    """The job definition as dlt generated it, echoed verbatim to clients."""
    definition_hash: Mapped[str] = mapped_column(String(100))
    version: Mapped[int]
    current_version_id: Mapped[str] = mapped_column(String(36))
    triggers: Mapped[list[Any]]
    """Triggers expanded by dlt (`manual:`, `tag:`, `pipeline_name:` added)."""
    default_trigger: Mapped[str | None] = mapped_column(Text, nullable=True)
    pipeline_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    deployment_module: Mapped[str | None] = mapped_column(String(200), nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What `headwater.toml` sets for the job (overlap, run_interval, locks, ...); it may
    change without a new job version."""
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    is_archived: Mapped[bool] = mapped_column(Boolean, default=False)
    run_counter: Mapped[int] = mapped_column(Integer, default=0)
    """Number of the job's newest run; runs are numbered per job."""
    next_run_at: Mapped[datetime | None] = mapped_column(nullable=True)
    intervals_reset_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """A refresh cleared the job's completed intervals then: runs created before it no
    longer cover an interval, nor make the job fresh."""
    public_secret: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """Set while the job is published (a UUID; its public link names it)."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JobVersion(Base):
    __tablename__ = "job_versions"
    __table_args__ = (UniqueConstraint("job_id", "version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    version: Mapped[int]
    definition: Mapped[dict[str, Any]]
    definition_hash: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # named by hand: the convention (column_0_name) would call both `uq_runs_job_id`
        UniqueConstraint("job_id", "number", name="uq_runs_job_id_number"),
        # a schedule tick, an event or an idempotent request becomes at most one run
        UniqueConstraint("job_id", "dedupe_key", name="uq_runs_job_id_dedupe_key"),
        Index("ix_runs_status_created", "status", "created_at"),
        Index("ix_runs_workspace_created", "workspace_id", "created_at"),
        Index("ix_runs_job_interval", "job_id", "interval_start"),
        Index("ix_runs_deadline", "deadline_at"),
        Index("ix_runs_lease", "lease_expires_at"),
        # a job's runs newest first (its page, `run ls --job`)
        Index("ix_runs_job_created", "job_id", "created_at"),
        # runs that ended since a time, and runs not ended (NULL): the timeline. Not led
        # by workspace_id: SQLite, without statistics, would take it for any query by
        # workspace and job alike (a job's run count read every run)
        Index("ix_runs_finished", "finished_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    job_version_id: Mapped[str] = mapped_column(String(36))
    code_package_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The code package of the newest manifest version when the run was created; None:
    the workspace folder (or a run older than this column)."""
    config_package_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(Text)
    profile: Mapped[str | None] = mapped_column(String(100), nullable=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    refresh: Mapped[bool] = mapped_column(Boolean, default=False)
    interval_start: Mapped[datetime | None] = mapped_column(nullable=True)
    interval_end: Mapped[datetime | None] = mapped_column(nullable=True)
    previous_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    triggered_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the run is in its state: a skip, a wait, a failure."""
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pipeline_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    grace_period_s: Mapped[float] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_started: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The process's start time in clock ticks, so a reused pid is never mistaken for it."""
    launch_mode: Mapped[str | None] = mapped_column(String(20), nullable=True)
    locks: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    """Locks of `headwater.toml` the run holds while live, with their capacity."""
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    """Which attempt the run is on (retries of headwater.toml)."""
    retry_policy: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    """The job's retry settings when the run was created (`core/retries.RetryPolicy`)."""
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    """A retry waits pending until then."""
    backfill_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The backfill that made the run (its interval is one of the backfill's)."""
    deadline_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """When the run must have completed (`deliver.deadline`); None: no deadline."""
    deadline_missed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """When its deadline passed without it completed (`deadline.missed` was raised)."""
    pool: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """The worker pool (Celery queue) that runs it; None: the default pool."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """With remote workers: when the attempt is lost unless its worker renews the lease
    (or, not yet taken by a worker, when its dispatch is sent again)."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class RunLogLine(Base):
    __tablename__ = "run_logs"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    line_num: Mapped[int] = mapped_column(Integer, primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(10))
    """`user` (the job's output), `setup` (preparing the run), `runner` (Headwater's notes)."""
    stage: Mapped[str] = mapped_column(String(10))
    io_stream: Mapped[str] = mapped_column(String(10))
    reported_at: Mapped[datetime]


class Event(Base):
    """Append-only log of state changes; chains and automations are dispatched from it."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class ScheduleCursor(Base):
    """The last tick handled per job and timed trigger: how schedules survive restarts."""

    __tablename__ = "schedule_cursors"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_tick: Mapped[datetime]


class Cursor(Base):
    """Named positions of background loops (the event dispatcher's last event)."""

    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """An API key or a short-lived data-plane token; only a hash of it is kept."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    kind: Mapped[str] = mapped_column(String(20))
    """`key` (made by a user) or `dataplane` (minted from a key, expires soon)."""
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(40))
    """The first characters of the key, to tell keys apart in listings."""
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the key: keys are 256 random bits, so a hash is all that is needed."""
    scope: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class IdempotentRequest(Base):
    """The first answer to a request sent with an `Idempotency-Key` header (kept 24 h)."""

    __tablename__ = "idempotent_requests"
    principal_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """None while the first request is still being answered."""
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]


class Variable(Base):
    """A workspace variable handed to runs as an environment variable.

    Secret values are encrypted at rest (`value` holds the ciphertext) and are
    never answered by the API; plain ones are stored as given.
    """

    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("workspace_id", "profile", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    profile: Mapped[str] = mapped_column(String(100))
    """The profile the variable applies to; `""` is the workspace scope (every profile)."""
    name: Mapped[str] = mapped_column(String(300))
    type: Mapped[str] = mapped_column(String(10))
    """`plain` or `secret`."""
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(36))
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(36))


class Package(Base):
    """An uploaded code (`deployment`) or configuration package, stored once per content hash."""

    __tablename__ = "packages"
    __table_args__ = (UniqueConstraint("workspace_id", "kind", "version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    kind: Mapped[str] = mapped_column(String(20))
    """`deployment` (code) or `configuration` (`.dlt` files)."""
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Numbered when the upload arrives; None while only issued."""
    content_hash: Mapped[str | None] = mapped_column(String(100), nullable=True)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    requirements_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    profiles: Mapped[list[Any]] = mapped_column(JSON, default=list)
    files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """The package's file manifest (`relative_path`, `sha3_256`, `size_bytes`, `linkname`)."""
    upload_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class TelemetryPayload(Base):
    """What a run's dlt sent to its beacon (`RUNTIME__DLTHUB_DSN`), as it arrived.

    `trace` (one per pipeline run), `state` (the pipeline's schemas after a load; only
    the newest per pipeline is kept) and `job_result` (the result the job declared).
    """

    __tablename__ = "telemetry_payloads"
    __table_args__ = (
        Index("ix_telemetry_payloads_run_kind", "run_id", "kind"),
        # the workspace's watermark: its newest payload
        Index("ix_telemetry_payloads_workspace_received", "workspace_id", "received_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(20))
    pipeline_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]


class PipelineRunRecord(Base):
    """One dlt pipeline run of a job run, derived from its trace (`core/traces.py`)."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        # dlt may send a transaction's trace again: the newest replaces the record
        UniqueConstraint("run_id", "transaction_id", name="uq_pipeline_runs_run_id_transaction_id"),
        Index("ix_pipeline_runs_workspace_started", "workspace_id", "started_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    trace_id: Mapped[str] = mapped_column(String(36))
    """The `telemetry_payloads` row of the trace, served at `pipeline-runs/{id}/trace`."""
    transaction_id: Mapped[str] = mapped_column(String(100))
    pipeline_name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    destination_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    destination_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    dataset_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    total_rows_extracted: Mapped[int] = mapped_column(BigInteger)
    total_rows_loaded: Mapped[int] = mapped_column(BigInteger)
    total_bytes_loaded: Mapped[int] = mapped_column(BigInteger)
    is_empty_run: Mapped[bool] = mapped_column(Boolean)
    has_failed_load_jobs: Mapped[bool] = mapped_column(Boolean)
    has_pending_packages: Mapped[bool] = mapped_column(Boolean)
    has_schema_migration: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error_step: Mapped[str | None] = mapped_column(String(20), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    dlt_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Tables, resources, load packages, step timings, traceback: the detailed answer."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RunArtifact(Base):
    """A file a run left for people to read: dbt's `run_results.json` and `manifest.json`
    (dbt Core in the run's own target folder, dbt Cloud over its API)."""

    __tablename__ = "run_artifacts"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The file's name, such as `run_results.json`."""
    source: Mapped[str] = mapped_column(String(20))
    """Where it came from: `dbt_core` or `dbt_cloud`."""
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class DebounceStateRow(Base):
    """The debouncer of a job with a `run_interval` (`core/debounce.py`), persisted so a
    pending fire and the last fire survive a restart (R6)."""

    __tablename__ = "debounce_states"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    last_fire_at: Mapped[datetime | None] = mapped_column(nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """When the scheduled fire happens; None: none is scheduled."""
    in_flight: Mapped[bool] = mapped_column(Boolean, default=False)
    follow_up: Mapped[bool] = mapped_column(Boolean, default=False)
    fire_count: Mapped[int] = mapped_column(Integer, default=0)
    """Fires so far: fire N creates its run with the key `debounce:N`, once."""
    in_flight_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    """The run of the newest fire: what a coalesced trigger is folded into."""
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    """The newest coalesced trigger (trigger, parameters, profile, triggered_by): the
    scheduled fire runs with it."""
    updated_at: Mapped[datetime]


class DbtCloudWatch(Base):
    """A Headwater run of a dbt Cloud job: the fire's intent (stored before the run POST)
    and dbt Cloud's run id (stored right after), so a restart resumes the watch, and finds
    by its cause a run whose id was never stored, instead of starting another."""

    __tablename__ = "dbt_cloud_watches"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36))
    account_id: Mapped[int] = mapped_column(BigInteger)
    dbt_job_id: Mapped[int] = mapped_column(BigInteger)
    cause: Mapped[str] = mapped_column(Text)
    intent_at: Mapped[datetime]
    dbt_run_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    href: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The run's page in dbt Cloud (`job_run_url`)."""
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deadline_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WorkspaceConfigRow(Base):
    """The last good `headwater.toml` of a workspace, validated: what the automations and
    every process of the server read (the file's secrets are references)."""

    __tablename__ = "workspace_configs"
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    config: Mapped[dict[str, Any]]
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class Delivery(Base):
    """The outbox of automations: one row per action an event calls for (a notification, a
    webhook, a hook, a pause...), derived from the event log idempotently, delivered at least
    once with retries and backoff, every attempt recorded."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("automation", "event_key", "action", name="uq_deliveries_event_action"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    """What receivers drop duplicates by (`X-Headwater-Delivery`)."""
    workspace_id: Mapped[str] = mapped_column(String(36))
    automation: Mapped[str] = mapped_column(String(200))
    event_key: Mapped[str] = mapped_column(String(200))
    """The event it answers: `event:<id>`, or `late:<run id>` for what a clock found."""
    event: Mapped[str] = mapped_column(String(40))
    action: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    """notify | webhook | hook | pause | resume | trigger | cancel"""
    target: Mapped[str] = mapped_column(Text)
    """Where it goes, as shown (an apprise URL with its secrets masked, a job ref)."""
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    """pending | delivered | failed (gave up after the last attempt)"""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list[Any]]
    """Every attempt: `{at, ok, error}`."""
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WorkerRow(Base):
    """A remote worker (`headwater worker`): its pools, slots and last heartbeat."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pools: Mapped[list[Any]] = mapped_column(JSON)
    slots: Mapped[int] = mapped_column(Integer)
    in_use: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None] = mapped_column(nullable=True)


class LeaderLease(Base):
    """Which server runs the engine (scheduler, dispatchers, monitors) while several share
    one database; the others answer the API and wait (`leadership.py`)."""

    __tablename__ = "leader_leases"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]


class RunAttempt(Base):
    """One ended attempt of a run that has a retry policy: its outcome, exit code, reason,
    times, and where its log lines begin."""

    __tablename__ = "run_attempts"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime]
    retry_at: Mapped[datetime | None] = mapped_column(nullable=True)
    """When the next attempt may start (None: this was the last)."""


class Backfill(Base):
    """The intervals of a job between two instants, run by the interval planner
    (`scheduler/intervals.py`); each interval's state is its runs' (`runs.backfill_id`)."""

    __tablename__ = "backfills"
    __table_args__ = (
        UniqueConstraint("workspace_id", "number", name="uq_backfills_workspace_number"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    number: Mapped[int]
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    refresh: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20))
    """running | completed | failed | cancelled"""
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class FreshnessWait(Base):
    """A trigger of a job whose upstreams were not fresh (`skipped_upstream_pending`): it
    fires when they are."""

    __tablename__ = "freshness_waits"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    request: Mapped[dict[str, Any]]
    """What the trigger asked: trigger, profile, parameters, refresh, triggered_by."""
    reasons: Mapped[list[Any]]
    since: Mapped[datetime]
