"""What crosses from a workspace to the store: a job to deploy, a trigger to record,
a log line to append, and the answer to a trigger.

Plain frozen dataclasses, so `workspace/` and `worker/` speak to the store without
importing it. `RunRecorder` is the one thing a trigger needs of the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from headwater.core import policy
from headwater.core.debounce import DebounceState, Step


@dataclass(frozen=True)
class JobSpec:
    """A job of a manifest, with what dlt derived from it, ready to store."""

    job_ref: str
    job_type: str
    definition: dict[str, Any]
    """dlt's job definition, as the manifest holds it."""
    definition_hash: str
    """dlt's hash of `definition`: a new hash makes a new job version."""
    triggers: list[str]
    default_trigger: str | None
    pipeline_name: str | None
    """The dlt pipeline the job loads; two runs of one pipeline never run at once."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What `headwater.toml` sets for the job (`workspace.config.JobSettings` as JSON, lock
    names mapped to their capacity); empty: nothing."""
    deployment_module: str | None = None
    """Where the job is declared when not in the manifest's module: `headwater.toml` for
    jobs the file declares (dbt Cloud jobs)."""


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
    """A run of the job with this key already exists: answer it instead of a new one."""
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    timeout_s: float | None = None
    grace_period_s: float = 30.0
    concurrency: int | None = 1
    """Active runs the job allows; None: unlimited."""
    overlap: str = "skip"
    """`headwater.toml`'s overlap mode: skip | replace | ignore."""
    locks: dict[str, int] | None = None
    """Locks the run holds while live, with their capacity (`headwater.toml`)."""
    retry_policy: dict[str, Any] | None = None
    """`core/retries.RetryPolicy` as a dict: the job's retries when the run was made."""
    backfill_id: str | None = None
    """The backfill the run belongs to."""
    deadline_at: datetime | None = None
    """When the run must have completed (`deliver.deadline`)."""
    pool: str | None = None
    """The worker pool that runs it (remote workers; `core/leases.pool_of`)."""


@dataclass(frozen=True)
class TriggerResult:
    decision: policy.Decision
    run: dict[str, Any] | None
    """The run created (or recorded as skipped); None for a dry run or a paused job."""
    existing: bool = False
    """True when the dedupe key named a run that already existed."""


@dataclass(frozen=True)
class LogLine:
    """One line a run wrote, as the worker hands it to the store."""

    content: str
    source: str
    stage: str
    io_stream: str
    reported_at: datetime


class RunRecorder(Protocol):
    """What a trigger needs of the store: record a run request, answer the decision."""

    def create_run(
        self, req: RunRequest, *, now: datetime | None = None, dry_run: bool = False
    ) -> TriggerResult: ...

    async def create_run_async(
        self, req: RunRequest, *, now: datetime | None = None, dry_run: bool = False
    ) -> TriggerResult: ...

    def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    def debounce_step(
        self,
        job_id: str,
        now: datetime,
        interval: float,
        decide: Callable[[DebounceState], Step],
        *,
        request: dict[str, Any] | None = None,
        fired_run: tuple[int, str | None] | None = None,
    ) -> Any:
        """One step of the job's debouncer (`store/debounce.py`), decided and kept at once."""
        ...

    # -- intervals, freshness and refresh (`store/intervals.py`) --------------------------------

    def active_jobs_cached(self, ws_id: str) -> list[dict[str, Any]]: ...

    def interval_runs(self, job_id: str) -> tuple[list[dict[str, Any]], datetime | None]: ...

    def last_completed(self, job_ids: Sequence[str]) -> dict[str, datetime | None]: ...

    def first_run_since_reset(self, job_id: str) -> bool: ...

    def reset_intervals(
        self, jobs: Sequence[dict[str, Any]], now: datetime, *, cause: str
    ) -> None: ...

    def wait_for_freshness(
        self, job_id: str, request: dict[str, Any], reasons: list[str], now: datetime
    ) -> dict[str, Any]: ...
