"""Which automations an event fires: event names, selectors, streaks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.core.automations import matching, selects, streak, user_events

REF = "jobs.__deployment__.load_products"


def test_a_failed_run_is_run_failed_and_job_fail_and_says_how() -> None:
    assert user_events("run.failed", {}, "exit code 1") == ["run.failed", "job.fail"]
    assert "run.crashed" in user_events("run.failed", {}, "runtime lost: its process is gone")
    assert "run.timed_out" in user_events("run.failed", {}, "timed out after 5s")
    assert "run.timed_out" in user_events("run.failed", {}, "timeout: dbt Cloud run 1 ...")
    assert user_events("run.completed", {}, None) == ["run.completed", "job.success"]
    assert user_events("dbt_cloud.finished", {"status": "error"}, None) == ["dbt_cloud.failed"]
    assert user_events("dbt_cloud.finished", {"status": "success"}, None) == []
    assert user_events("run.starting", {}, None) == []


def test_selectors_pick_jobs_as_dlts_do() -> None:
    for selector in (REF, "__deployment__.load_products", "load_products", "load_*", "*", ""):
        assert selects(selector, REF, []), selector
    assert selects("tag:ing*", REF, ["ingest"])
    assert not selects("tag:ingest", REF, ["other"])
    assert not selects("products", REF, [])
    assert not selects("load_products", None, [])


def test_the_first_matching_rule_entry_is_answered() -> None:
    on = ["job.fail:tag:ingest", "run.crashed:*"]
    assert matching(on, ["run.failed", "job.fail"], REF, ["ingest"]) == "job.fail:tag:ingest"
    assert matching(on, ["run.failed", "job.fail", "run.crashed"], REF, []) == "run.crashed:*"
    assert matching(on, ["run.completed"], REF, ["ingest"]) is None
    # workspace events take no selector
    assert matching(["config.failed"], ["config.failed"], None, []) == "config.failed"


def test_three_in_a_row() -> None:
    assert streak(["failed", "failed", "failed", "completed"], 3, "failed")
    assert not streak(["failed", "failed", "completed", "failed"], 3, "failed")
    assert streak(["failed"] * 6, 3, "failed")
    assert not streak(["failed"] * 4, 3, "failed")
    assert streak(["completed"], 1, "failed")


@given(st.lists(st.sampled_from(["failed", "completed"]), max_size=20), st.integers(1, 5))
def test_a_streak_fires_exactly_on_each_count_th_failure_in_a_row(
    outcomes: list[str], count: int
) -> None:
    run = next((i for i, o in enumerate(outcomes) if o != "failed"), len(outcomes))
    expected = count == 1 or (run > 0 and run % count == 0)
    assert streak(outcomes, count, "failed") is expected
