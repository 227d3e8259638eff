"""Trigger policy: what a trigger does to a job, given facts about the job."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.policy import (
    TIMED_TRIGGER_KINDS,
    JobFacts,
    TriggerStatus,
    decide,
    is_served,
    lock_conflict,
    not_served_reason,
    pipeline_conflict,
    trigger_kind,
)

SETTINGS = settings(max_examples=150, deadline=None)

TIMED_TRIGGERS = [
    "schedule:0 6 * * *",
    "schedule:*/15 * * * *",
    "every:5m",
    "every:1h",
    "once:2026-05-01T10:00:00Z",
]
UNTIMED_TRIGGERS = [
    "manual:jobs.batch.load",
    "manual:",
    "tag:nightly",
    "job.success:jobs.batch.extract",
    "job.fail:jobs.batch.extract",
    "http:",
    "http:8080/api",
    "webhook:hooks/in",
    "deployment:",
    "pipeline_name:chess",
]

timed_triggers = st.sampled_from(TIMED_TRIGGERS)
untimed_triggers = st.sampled_from(UNTIMED_TRIGGERS)
any_trigger = st.one_of(timed_triggers, untimed_triggers)
concurrency = st.one_of(st.none(), st.integers(min_value=0, max_value=50))
active_runs = st.integers(min_value=0, max_value=60)


def facts(**overrides: object) -> st.SearchStrategy[JobFacts]:
    fields: dict[str, st.SearchStrategy[object]] = {
        "concurrency": concurrency,
        "active_runs": active_runs,
        "is_paused": st.booleans(),
        "is_archived": st.booleans(),
        # an archived workspace overrides everything; the tests that want it say so
        "workspace_archived": st.just(False),
    }
    fields.update({k: st.just(v) for k, v in overrides.items()})
    return st.builds(JobFacts, **fields)


def test_trigger_kind_is_the_part_before_the_first_colon() -> None:
    assert trigger_kind("schedule:0 6 * * *") == "schedule"
    assert trigger_kind("job.success:jobs.a.b") == "job.success"
    assert trigger_kind("once:2026-05-01T10:00:00+00:00") == "once"
    assert trigger_kind("manual:") == "manual"


def test_timed_kinds_are_schedule_every_and_once() -> None:
    assert TIMED_TRIGGER_KINDS == {"schedule", "every", "once"}
    assert {trigger_kind(t) for t in TIMED_TRIGGERS} == TIMED_TRIGGER_KINDS
    assert not {trigger_kind(t) for t in UNTIMED_TRIGGERS} & TIMED_TRIGGER_KINDS


@SETTINGS
@given(job=facts(concurrency=None, is_paused=False, is_archived=False), trigger=any_trigger)
def test_job_without_concurrency_limit_is_never_skipped_for_concurrency(
    job: JobFacts, trigger: str
) -> None:
    decision = decide(job, trigger)
    assert decision.status is TriggerStatus.TRIGGERED
    assert decision.creates_run
    assert decision.reasons == []


@SETTINGS
@given(job=facts(concurrency=None), trigger=any_trigger)
def test_unlimited_job_skips_only_for_pause_or_archive(job: JobFacts, trigger: str) -> None:
    assert decide(job, trigger).status is not TriggerStatus.SKIPPED_CONCURRENCY_LIMIT


@SETTINGS
@given(data=st.data(), trigger=any_trigger)
def test_second_trigger_of_busy_job_is_skipped(data: st.DataObject, trigger: str) -> None:
    limit = data.draw(st.integers(min_value=0, max_value=50), label="limit")
    busy = data.draw(st.integers(min_value=limit, max_value=limit + 20), label="active")
    job = JobFacts(concurrency=limit, active_runs=busy)
    decision = decide(job, trigger)
    assert decision.status is TriggerStatus.SKIPPED_CONCURRENCY_LIMIT
    assert not decision.creates_run
    assert len(decision.reasons) == 1
    assert f"concurrency limit is {limit}" in decision.reasons[0]
    assert f"{busy} active run(s)" in decision.reasons[0]


@SETTINGS
@given(data=st.data(), trigger=any_trigger)
def test_trigger_below_concurrency_limit_creates_a_run(data: st.DataObject, trigger: str) -> None:
    limit = data.draw(st.integers(min_value=1, max_value=50), label="limit")
    busy = data.draw(st.integers(min_value=0, max_value=limit - 1), label="active")
    decision = decide(JobFacts(concurrency=limit, active_runs=busy), trigger)
    assert decision.status is TriggerStatus.TRIGGERED
    assert decision.creates_run


def test_single_concurrency_job_with_one_active_run_is_skipped() -> None:
    decision = decide(JobFacts(concurrency=1, active_runs=1), "schedule:0 6 * * *")
    assert decision.status is TriggerStatus.SKIPPED_CONCURRENCY_LIMIT
    assert decision.reasons == ["job already has 1 active run(s); concurrency limit is 1"]


@SETTINGS
@given(job=facts(is_paused=True, is_archived=False), trigger=timed_triggers)
def test_paused_job_skips_timed_triggers(job: JobFacts, trigger: str) -> None:
    decision = decide(job, trigger)
    assert decision.status is TriggerStatus.SKIPPED_PAUSED
    assert decision.reasons == ["job is paused"]
    assert not decision.creates_run


@SETTINGS
@given(job=facts(is_paused=True, is_archived=False, concurrency=None), trigger=untimed_triggers)
def test_paused_job_still_runs_manual_tag_and_event_triggers(job: JobFacts, trigger: str) -> None:
    assert decide(job, trigger).status is TriggerStatus.TRIGGERED


@SETTINGS
@given(job=facts(is_paused=True, is_archived=False), trigger=untimed_triggers)
def test_pause_never_explains_an_untimed_skip(job: JobFacts, trigger: str) -> None:
    paused = decide(job, trigger)
    unpaused = decide(JobFacts(job.concurrency, job.active_runs), trigger)
    assert paused.status is not TriggerStatus.SKIPPED_PAUSED
    assert paused == unpaused


@SETTINGS
@given(job=facts(is_archived=True), trigger=any_trigger)
def test_archived_job_always_skips(job: JobFacts, trigger: str) -> None:
    decision = decide(job, trigger)
    assert decision.status is TriggerStatus.SKIPPED_ARCHIVED
    assert decision.reasons == ["job is archived"]
    assert not decision.creates_run


@SETTINGS
@given(job=facts(workspace_archived=True), trigger=any_trigger)
def test_archived_workspace_always_skips_whatever_the_job(job: JobFacts, trigger: str) -> None:
    decision = decide(job, trigger)
    assert decision.status is TriggerStatus.SKIPPED_ARCHIVED
    assert decision.status.value == "skipped_workspace_archived"
    assert decision.reasons == ["workspace is archived; unarchive it to run jobs"]
    assert not decision.creates_run


@SETTINGS
@given(job=facts(), archived=st.booleans(), trigger=any_trigger)
def test_run_is_created_only_when_nothing_stands_in_the_way(
    job: JobFacts, archived: bool, trigger: str
) -> None:
    job = JobFacts(
        job.concurrency,
        job.active_runs,
        job.is_paused,
        job.is_archived,
        workspace_archived=archived,
    )
    decision = decide(job, trigger)
    blocked = (
        job.workspace_archived
        or job.is_archived
        or (job.is_paused and trigger_kind(trigger) in TIMED_TRIGGER_KINDS)
        or (job.concurrency is not None and job.active_runs >= job.concurrency)
    )
    assert decision.creates_run is (not blocked)
    assert decision.creates_run is (decision.status is TriggerStatus.TRIGGERED)
    # a refusal always says why; an acceptance has nothing to explain
    assert bool(decision.reasons) is blocked


@SETTINGS
@given(name=st.text(min_size=1, max_size=20), others=st.sets(st.text(max_size=20), max_size=5))
def test_run_waits_while_another_run_loads_the_same_pipeline(name: str, others: set[str]) -> None:
    reason = pipeline_conflict(name, others | {name})
    assert reason is not None
    assert repr(name) in reason


@SETTINGS
@given(name=st.text(min_size=1, max_size=20), others=st.sets(st.text(max_size=20), max_size=5))
def test_run_does_not_wait_for_other_pipelines(name: str, others: set[str]) -> None:
    assert pipeline_conflict(name, others - {name}) is None


@pytest.mark.parametrize("name", [None, ""])
def test_run_without_pipeline_never_waits(name: str | None) -> None:
    assert pipeline_conflict(name, {"", "chess"}) is None


@pytest.mark.parametrize("job_type", ["interactive", "stream"])
def test_only_batch_jobs_are_served(job_type: str) -> None:
    assert is_served("batch")
    assert not is_served(job_type)
    assert not_served_reason(job_type) == f"{job_type} jobs are not served by Headwater"


# -- overlap modes and locks (headwater.toml) ---------------------------------------------------


@SETTINGS
@given(job=facts(is_paused=False, is_archived=False), trigger=any_trigger)
def test_ignore_starts_a_run_whatever_the_concurrency(job: JobFacts, trigger: str) -> None:
    job = JobFacts(job.concurrency, job.active_runs, overlap="ignore")
    decision = decide(job, trigger)
    assert decision.creates_run and not decision.replaces_active


@SETTINGS
@given(job=facts(is_paused=False, is_archived=False), trigger=any_trigger)
def test_replace_starts_a_run_and_cancels_every_active_one(job: JobFacts, trigger: str) -> None:
    job = JobFacts(job.concurrency, job.active_runs, overlap="replace")
    decision = decide(job, trigger)
    assert decision.creates_run
    assert decision.replaces_active is (job.active_runs > 0)
    if job.active_runs:
        assert decision.reasons == [f"overlap replace: cancels {job.active_runs} active run(s)"]


@SETTINGS
@given(
    job=facts(is_paused=True), trigger=timed_triggers, mode=st.sampled_from(["replace", "ignore"])
)
def test_no_overlap_mode_starts_a_paused_jobs_schedule(
    job: JobFacts, trigger: str, mode: str
) -> None:
    job = JobFacts(job.concurrency, job.active_runs, True, job.is_archived, overlap=mode)
    assert not decide(job, trigger).creates_run


def test_a_full_lock_names_itself_and_its_holders() -> None:
    holders = {"warehouse": ["run 3 of jobs.a.load"]}
    assert lock_conflict({"warehouse": 1}, holders) == (
        "waiting for lock 'warehouse' (1 of 1 held by run 3 of jobs.a.load)"
    )
    assert lock_conflict({"warehouse": 2}, holders) is None
    assert lock_conflict({"other": 1}, holders) is None
    assert lock_conflict(None, holders) is None


@SETTINGS
@given(
    capacity=st.integers(min_value=1, max_value=5),
    held=st.integers(min_value=0, max_value=8),
)
def test_a_run_waits_exactly_while_its_lock_is_at_capacity(capacity: int, held: int) -> None:
    holders = {"w": [f"run {i}" for i in range(held)]}
    waits = lock_conflict({"w": capacity}, holders) is not None
    assert waits is (held >= capacity)
