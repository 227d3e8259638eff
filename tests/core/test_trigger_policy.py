"""The trigger policy: pure decisions from facts about a job."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.core.access import Action, Scope, allows
from headwater.core.policy import JobFacts, TriggerStatus, decide, pipeline_conflict

TIMED = st.sampled_from(["schedule:0 6 * * *", "every:5m", "once:2026-12-01T00:00:00Z"])
UNTIMED = st.sampled_from(
    ["manual:jobs.a.b", "tag:nightly", "job.success:jobs.a.b", "job.fail:jobs.a.b", "webhook:x"]
)


@given(active=st.integers(0, 50), trigger=st.one_of(TIMED, UNTIMED))
def test_unlimited_concurrency_never_skips_for_concurrency(active: int, trigger: str) -> None:
    assert decide(JobFacts(concurrency=None, active_runs=active), trigger).creates_run


@given(limit=st.integers(1, 10), active=st.integers(0, 20), trigger=st.one_of(TIMED, UNTIMED))
def test_second_trigger_of_busy_job_is_skipped(limit: int, active: int, trigger: str) -> None:
    decision = decide(JobFacts(concurrency=limit, active_runs=active), trigger)
    if active >= limit:
        assert decision.status is TriggerStatus.SKIPPED_CONCURRENCY_LIMIT
        assert f"concurrency limit is {limit}" in decision.reasons[0]
    else:
        assert decision.creates_run


@given(trigger=TIMED)
def test_paused_job_skips_timed_triggers(trigger: str) -> None:
    decision = decide(JobFacts(concurrency=None, active_runs=0, is_paused=True), trigger)
    assert decision.status is TriggerStatus.SKIPPED_PAUSED


@given(trigger=UNTIMED)
def test_paused_job_still_runs_manual_tag_chain_and_webhook_triggers(trigger: str) -> None:
    assert decide(JobFacts(concurrency=None, active_runs=0, is_paused=True), trigger).creates_run


@given(trigger=st.one_of(TIMED, UNTIMED), paused=st.booleans())
def test_archived_job_never_runs(trigger: str, paused: bool) -> None:
    facts = JobFacts(concurrency=None, active_runs=0, is_paused=paused, is_archived=True)
    assert decide(facts, trigger).status is TriggerStatus.SKIPPED_ARCHIVED


@given(name=st.text(min_size=1, max_size=20), busy=st.sets(st.text(min_size=1, max_size=20)))
def test_run_waits_only_while_its_pipeline_is_busy(name: str, busy: set[str]) -> None:
    reason = pipeline_conflict(name, busy)
    assert (reason is not None) == (name in busy)
    assert pipeline_conflict(None, busy) is None


def test_scopes_allow_what_the_api_promises() -> None:
    assert allows(Scope.ADMIN, Action.ADMIN)
    assert allows(Scope.TRIGGER, Action.TRIGGER) and not allows(Scope.TRIGGER, Action.ADMIN)
    assert not allows(Scope.TRIGGER, Action.READ) and allows(Scope.TRIGGER, Action.READ, owns=True)
    assert allows(Scope.READ, Action.READ) and not allows(Scope.READ, Action.TRIGGER)
    assert all(allows(s, Action.SEE_JOBS) for s in Scope)
