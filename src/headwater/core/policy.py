"""Trigger policy: what a trigger does to a job, given facts about the job.

Pure functions: the store gathers the facts (inside the transaction that will
act on the decision), the policy decides, the store carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class TriggerStatus(StrEnum):
    """`TriggeredJob.status` values of the dltHub runtime API that Headwater answers."""

    TRIGGERED = "triggered"
    SKIPPED_PAUSED = "skipped_paused"
    SKIPPED_CONCURRENCY_LIMIT = "skipped_concurrency_limit"
    SKIPPED_NOT_SERVED = "skipped_not_served"
    SKIPPED_ARCHIVED = "skipped_workspace_archived"
    """The workspace is archived, or the job is: the API has no status of its own for
    an archived job, so both answer this one and tell them apart by their reasons."""


TIMED_TRIGGER_KINDS = frozenset({"schedule", "every", "once"})
"""Trigger kinds a paused job stops firing; every other kind still works."""

SERVED_JOB_TYPES = frozenset({"batch"})
"""Job types Headwater runs. Interactive (notebooks, apps) and stream jobs are listed and
published, but not run here yet: their triggers answer `skipped_not_served`."""


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


@dataclass(frozen=True)
class Decision:
    status: TriggerStatus
    reasons: list[str] = field(default_factory=list)

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
    if facts.concurrency is not None and facts.active_runs >= facts.concurrency:
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
