"""Trigger policy: what a trigger does to a job, given facts about the job.

Pure functions: the store gathers the facts (inside the transaction that will
act on the decision), the policy decides, the store carries it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class TriggerStatus(StrEnum):
    """`TriggeredJob.status` values of the dltHub runtime API that Headwater answers."""

    TRIGGERED = "triggered"
    SKIPPED_PAUSED = "skipped_paused"
    SKIPPED_CONCURRENCY_LIMIT = "skipped_concurrency_limit"
    SKIPPED_ALREADY_COVERED = "skipped_already_covered"
    """Every interval the trigger could run is completed already."""
    SKIPPED_OUT_OF_INTERVAL = "skipped_out_of_interval"
    """The tick lies outside the job's declared `interval` window."""
    SKIPPED_UPSTREAM_PENDING = "skipped_upstream_pending"
    """An upstream of the job's `freshness` constraints is not fresh; the trigger waits and
    fires when it is."""
    SKIPPED_NOT_SERVED = "skipped_not_served"
    SKIPPED_ARCHIVED = "skipped_workspace_archived"
    """The workspace is archived, or the job is: the API has no status of its own for
    an archived job, so both answer this one and tell them apart by their reasons."""


TIMED_TRIGGER_KINDS = frozenset({"schedule", "every", "once"})
"""Trigger kinds a paused job stops firing; every other kind still works."""

SERVED_JOB_TYPES = frozenset({"batch", "dbt_cloud"})
"""Job types Headwater runs (dbt Cloud jobs through its monitors). Interactive (notebooks,
apps) and stream jobs are listed and published, but not run here yet: their triggers answer
`skipped_not_served`."""


MONITOR_ID = "dbt-cloud-monitor"
"""The `worker_id` of runs the dbt Cloud monitor drives: they own no process, and after a
restart the monitor (not the worker's recovery) takes them up again."""


def is_served(job_type: str) -> bool:
    """Whether Headwater runs jobs of this type (the one "not served" rule)."""
    return job_type in SERVED_JOB_TYPES


def not_served_reason(job_type: str) -> str:
    """Why a trigger of a job Headwater does not serve creates no run."""
    return f"{job_type} jobs are not served by Headwater"


@dataclass(frozen=True)
class JobFacts:
    """What the policy needs to know about a job at the moment of a trigger."""

    concurrency: int | None
    """Most active runs allowed; `None` means no limit."""
    active_runs: int
    is_paused: bool = False
    is_archived: bool = False
    workspace_archived: bool = False
    """The job's workspace is archived: nothing of it runs until it is unarchived."""
    overlap: str = "skip"
    """What a trigger does while the job is at its concurrency (`headwater.toml`): `skip`
    it, `replace` the active runs (they are cancelled), or `ignore` the limit."""


OVERLAP_MODES = ("skip", "replace", "ignore")


@dataclass(frozen=True)
class Decision:
    status: TriggerStatus
    reasons: list[str] = field(default_factory=list)
    replaces_active: bool = False
    """The new run replaces the job's active runs: the store cancels them with it."""

    @property
    def creates_run(self) -> bool:
        return self.status is TriggerStatus.TRIGGERED


def trigger_kind(trigger: str) -> str:
    """`schedule:0 6 * * *` -> `schedule`; `job.success:jobs.a.b` -> `job.success`."""
    return trigger.split(":", 1)[0]


def decide(facts: JobFacts, trigger: str) -> Decision:
    """Whether a trigger creates a run, or why it does not."""
    if facts.workspace_archived:
        return Decision(
            TriggerStatus.SKIPPED_ARCHIVED, ["workspace is archived; unarchive it to run jobs"]
        )
    if facts.is_archived:
        return Decision(TriggerStatus.SKIPPED_ARCHIVED, ["job is archived"])
    if facts.is_paused and trigger_kind(trigger) in TIMED_TRIGGER_KINDS:
        return Decision(TriggerStatus.SKIPPED_PAUSED, ["job is paused"])
    at_limit = facts.concurrency is not None and facts.active_runs >= facts.concurrency
    if at_limit and facts.overlap == "ignore":
        return Decision(
            TriggerStatus.TRIGGERED,
            [f"overlap ignore: started beside {facts.active_runs} active run(s)"],
        )
    if facts.overlap == "replace" and (facts.active_runs or at_limit):
        return Decision(
            TriggerStatus.TRIGGERED,
            [f"overlap replace: cancels {facts.active_runs} active run(s)"],
            replaces_active=facts.active_runs > 0,
        )
    if at_limit:
        return Decision(
            TriggerStatus.SKIPPED_CONCURRENCY_LIMIT,
            [
                f"job already has {facts.active_runs} active run(s);"
                f" concurrency limit is {facts.concurrency}"
            ],
        )
    return Decision(TriggerStatus.TRIGGERED)


def pipeline_conflict(pipeline_name: str | None, busy_pipelines: set[str]) -> str | None:
    """Why a run must wait: another live run loads the same dlt pipeline (shared state)."""
    if pipeline_name and pipeline_name in busy_pipelines:
        return f"waiting: pipeline {pipeline_name!r} is in use by another run"
    return None


def lock_conflict(wanted: Mapping[str, int] | None, holders: Mapping[str, list[str]]) -> str | None:
    """Why a run must wait for a lock of `headwater.toml`: `wanted` maps each lock the run
    needs to its capacity, `holders` each lock to the live runs holding it (as people read
    them: `run 12 of jobs.a.b`). None: every lock has room."""
    for name in sorted(wanted or {}):
        held = holders.get(name, [])
        capacity = (wanted or {})[name]
        if len(held) >= capacity:
            return (
                f"waiting for lock {name!r} ({len(held)} of {capacity} held by"
                f" {', '.join(held[:3])}{' and more' if len(held) > 3 else ''})"
            )
    return None
