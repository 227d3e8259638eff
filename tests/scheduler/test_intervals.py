"""Interval jobs, backfills, freshness, refresh and deadlines, on a real SQLite store with
time passed in: several days of fake time, across DST changes in three time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.core import intervals as core_intervals
from headwater.core.policy import TriggerStatus
from headwater.core.states import LOST_RUN_REASON, RunStatus
from headwater.scheduler.intervals import IntervalPlanner
from headwater.scheduler.scheduler import Scheduler
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import JobSpec, Store
from headwater.workspace import intervals
from headwater.workspace.interval_reports import backfill_report, interval_report, plan_backfill
from headwater.workspace.launch import fire, refresh_jobs


def job_def(name: str, cron: str, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "engine_version": 2,
        "job_ref": f"jobs.m.{name}",
        "entry_point": {
            "module": "m",
            "function": name,
            "job_type": "batch",
            "launcher": "dlt._workspace.deployment.launchers.job",
        },
        "triggers": [f"schedule:{cron}"],
        "default_trigger": f"schedule:{cron}",
        "execute": {"concurrency": extra.pop("concurrency", 1)},
    }
    if tz := extra.pop("tz", None):
        d["require"] = {"timezone": tz}
    d.update(extra)
    return d


def make_store(path: Path) -> Store:
    engine = make_engine(sqlite_url(path / "hw.db"))
    upgrade(engine)
    return Store(engine)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return make_store(tmp_path)


def deploy(store: Store, *defs: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    ws = store.ensure_workspace("/w", "w")["id"]
    specs = [
        JobSpec(
            d["job_ref"], "batch", d, d["job_ref"] + repr(d), d["triggers"], d["triggers"][0], None
        )
        for d in defs
    ]
    store.deploy(ws, {"jobs": list(defs)}, "h" + str(len(defs)), [], specs, "m")
    return ws, jobs_of(store, ws)


def jobs_of(store: Store, ws: str) -> dict[str, dict[str, Any]]:
    jobs, _ = store.list_jobs(ws)
    return {j["job_ref"].rsplit(".", 1)[-1]: j for j in jobs}


def runs_of(store: Store, ws: str, job_id: str) -> list[dict[str, Any]]:
    runs = store.list_runs(ws, job_id=job_id, limit=10_000)[0]
    return sorted(runs, key=lambda r: r["number"])


def finish(store: Store, run: dict[str, Any], status: RunStatus, now: datetime, **f: Any) -> None:
    store.transition(run["id"], RunStatus.STARTING, now=now)
    store.transition(run["id"], RunStatus.RUNNING, now=now)
    assert store.transition(run["id"], status, now=now, **f) is not None


def active(store: Store, ws: str, job_id: str) -> list[dict[str, Any]]:
    return [r for r in runs_of(store, ws, job_id) if r["status"] == "pending"]


def settle(
    store: Store,
    ws: str,
    planner: IntervalPlanner,
    now: datetime,
    fail: set[datetime] = frozenset(),
) -> None:
    """Plan and complete runs at `now` until nothing more starts (a worker that is instant)."""
    for _ in range(2000):
        planner.run_once(now)
        pending = [r for j in jobs_of(store, ws).values() for r in active(store, ws, j["id"])]
        if not pending:
            return
        for run in pending:
            failed = run["interval_start"] in fail
            finish(store, run, RunStatus.FAILED if failed else RunStatus.COMPLETED, now)
    raise AssertionError("did not settle")


def completed_intervals(store: Store, ws: str, job_id: str) -> list[tuple[datetime, datetime]]:
    return [
        (r["interval_start"], r["interval_end"])
        for r in runs_of(store, ws, job_id)
        if r["status"] == "completed"
    ]


# -- interval jobs ----------------------------------------------------------------------------


def test_sequential_job_catches_up_interval_by_interval_in_order_across_dst(store: Store) -> None:
    ws, jobs = deploy(
        store,
        job_def("daily", "0 0 * * *", tz="Europe/Berlin", interval={"start": "2026-03-25"}),
    )
    planner = IntervalPlanner(store, ws)
    now = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
    planner.run_once(now)
    planner.run_once(now)  # one at a time: the second pass starts nothing
    assert len(runs_of(store, ws, jobs["daily"]["id"])) == 1
    settle(store, ws, planner, now)
    done = completed_intervals(store, ws, jobs["daily"]["id"])
    assert len(done) == 8  # March 25 .. April 1, Berlin days
    assert done[0][0] == datetime(2026, 3, 24, 23, 0, tzinfo=UTC)  # midnight CET
    for (_s, e), (s2, _e2) in zip(done, done[1:], strict=False):
        assert e == s2  # no gap, no overlap, in order
    # March 29, the day clocks go forward, is 23 hours long
    lengths = {s.date().isoformat(): (e - s) for s, e in done}
    assert lengths["2026-03-28"] == timedelta(hours=23)
    assert done[-1][1] == datetime(2026, 4, 1, 22, 0, tzinfo=UTC)  # midnight CEST
    report = interval_report(store, jobs_of(store, ws)["daily"], now)
    assert report["watermark"] == done[-1][1].isoformat()
    assert report["open"] == 0 and report["failed"] == []


def test_a_run_carries_its_interval_and_the_api_fields(store: Store) -> None:
    ws, jobs = deploy(store, job_def("h", "0 * * * *", interval={"start": "2026-03-07T10:00:00Z"}))
    IntervalPlanner(store, ws).run_once(datetime(2026, 3, 7, 12, 30, tzinfo=UTC))
    (run,) = runs_of(store, ws, jobs["h"]["id"])
    assert run["interval_start"] == datetime(2026, 3, 7, 10, tzinfo=UTC)
    assert run["interval_end"] == datetime(2026, 3, 7, 11, tzinfo=UTC)
    assert run["dedupe_key"] == core_intervals.interval_key(run["interval_start"], 0)


def test_parallel_mode_runs_several_within_concurrency(store: Store) -> None:
    ws, jobs = deploy(
        store,
        job_def(
            "p", "0 * * * *", concurrency=3, interval={"start": "2026-03-07", "mode": "parallel"}
        ),
    )
    planner = IntervalPlanner(store, ws)
    now = datetime(2026, 3, 7, 10, 5, tzinfo=UTC)
    planner.run_once(now)
    first = active(store, ws, jobs["p"]["id"])
    assert [r["interval_start"].hour for r in first] == [0, 1, 2]
    finish(store, first[1], RunStatus.COMPLETED, now)
    planner.run_once(now)
    assert [r["interval_start"].hour for r in active(store, ws, jobs["p"]["id"])] == [0, 2, 3]
    settle(store, ws, planner, now)
    assert len(completed_intervals(store, ws, jobs["p"]["id"])) == 10


def test_a_failed_interval_stays_open_and_the_next_tick_retries_it(store: Store) -> None:
    ws, jobs = deploy(store, job_def("s", "0 0 * * *", interval={"start": "2026-03-01"}))
    planner = IntervalPlanner(store, ws)
    sched = Scheduler(store, ws)
    now = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
    sched.run_once(now)
    bad = datetime(2026, 3, 2, tzinfo=UTC)
    settle(store, ws, planner, now, fail={bad})
    runs = runs_of(store, ws, jobs["s"]["id"])
    # March 1 completed, March 2 failed, March 3 waits behind it (sequential: no gap)
    assert [(r["interval_start"].day, r["status"]) for r in runs] == [
        (1, "completed"),
        (2, "failed"),
    ]
    planner.run_once(now + timedelta(hours=1))
    assert len(runs_of(store, ws, jobs["s"]["id"])) == 2  # not retried in a loop
    report = interval_report(store, jobs_of(store, ws)["s"], now)
    assert report["failed"][0]["start"] == bad.isoformat()
    # the next tick retries it, then the planner catches up
    tick = datetime(2026, 3, 5, 0, 0, 1, tzinfo=UTC)
    sched.run_once(tick)
    settle(store, ws, planner, tick)
    days = [
        r["interval_start"].day
        for r in runs_of(store, ws, jobs["s"]["id"])
        if r["status"] == "completed"
    ]
    assert days == [1, 2, 3, 4]


def test_ticks_outside_the_interval_window_are_skipped(store: Store) -> None:
    ws, jobs = deploy(
        store, job_def("w", "0 0 * * *", interval={"start": "2026-03-01", "end": "2026-03-03"})
    )
    job = jobs["w"]
    late = datetime(2026, 3, 10, tzinfo=UTC)
    result = fire(store, job, "schedule:0 0 * * *", now=late)
    assert result.decision.status is TriggerStatus.SKIPPED_OUT_OF_INTERVAL
    early = datetime(2026, 2, 20, tzinfo=UTC)
    assert (
        fire(store, job, "schedule:0 0 * * *", now=early).decision.status
        is TriggerStatus.SKIPPED_OUT_OF_INTERVAL
    )
    settle(store, ws, IntervalPlanner(store, ws), late)
    assert len(completed_intervals(store, ws, job["id"])) == 2
    manual = fire(store, job, "manual:jobs.m.w", now=late)
    assert manual.decision.status is TriggerStatus.SKIPPED_ALREADY_COVERED


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(outcomes=st.lists(st.sampled_from(["ok", "fail", "lost"]), min_size=1, max_size=30))
def test_sequential_mode_never_runs_two_intervals_and_never_skips_one(
    tmp_path_factory: pytest.TempPathFactory, outcomes: list[str]
) -> None:
    store = make_store(tmp_path_factory.mktemp("seq"))
    ws, jobs = deploy(store, job_def("q", "0 * * * *", interval={"start": "2026-03-07"}))
    job_id = jobs["q"]["id"]
    planner = IntervalPlanner(store, ws)
    sched = Scheduler(store, ws)
    now = datetime(2026, 3, 7, 6, 30, tzinfo=UTC)
    for outcome in outcomes:
        planner.run_once(now)
        live = active(store, ws, job_id)
        assert len(live) <= 1
        if not live:
            # a failure waits for a tick: the next hour comes
            now += timedelta(hours=1)
            sched.run_once(now)
            continue
        run = live[0]
        done = completed_intervals(store, ws, job_id)
        # the run is the first interval not completed: order kept, nothing skipped
        expected = done[-1][1] if done else datetime(2026, 3, 7, tzinfo=UTC)
        assert run["interval_start"] == expected
        if outcome == "ok":
            finish(store, run, RunStatus.COMPLETED, now)
        elif outcome == "fail":
            finish(store, run, RunStatus.FAILED, now)
        else:
            finish(store, run, RunStatus.FAILED, now, reason=f"{LOST_RUN_REASON}: gone")
    done = completed_intervals(store, ws, job_id)
    assert all(e == s2 for (_s, e), (s2, _e) in zip(done, done[1:], strict=False))
    assert len(set(done)) == len(done)  # no interval completed twice


# -- freshness across time zones --------------------------------------------------------------

ZONES = [
    ("America/New_York", datetime(2026, 3, 6, tzinfo=UTC)),  # DST starts March 8
    ("Europe/Berlin", datetime(2026, 10, 23, tzinfo=UTC)),  # DST ends October 25
    ("Australia/Sydney", datetime(2026, 4, 3, tzinfo=UTC)),  # DST ends April 5
]


@pytest.mark.parametrize(("tz", "start"), ZONES, ids=[z for z, _ in ZONES])
def test_interval_jobs_feed_each_other_through_freshness_over_days(
    store: Store, tz: str, start: datetime
) -> None:
    up = job_def("up", "0 * * * *", tz=tz, interval={"start": start.isoformat()})
    # the downstream processes days, and only once the upstream's hours are all in
    down = job_def(
        "down",
        "0 0 * * *",
        tz=tz,
        interval={"start": start.isoformat()},
        freshness=["job.is_fresh:jobs.m.up"],
    )
    ws, jobs = deploy(store, up, down)
    planner = IntervalPlanner(store, ws)
    sched = Scheduler(store, ws)
    now = start + timedelta(hours=1)
    for _ in range(24 * 5):  # five days, an hour at a time, with a one-hour outage
        now += timedelta(hours=1, minutes=7)
        sched.run_once(now)
        # the downstream never starts while the upstream is behind
        before = {r["id"] for r in runs_of(store, ws, jobs["down"]["id"])}
        planner.run_once(now)
        started = [r for r in runs_of(store, ws, jobs["down"]["id"]) if r["id"] not in before]
        if started:
            last_up = store.last_completed([jobs["up"]["id"]])[jobs["up"]["id"]]
            assert last_up is not None and last_up >= intervals.interval_job(up).last_tick(now)
        settle(store, ws, planner, now)
    ups = completed_intervals(store, ws, jobs["up"]["id"])
    downs = completed_intervals(store, ws, jobs["down"]["id"])
    basis_down = intervals.interval_job(down)
    assert downs == basis_down.between(downs[0][0], downs[-1][1])  # every day, in order
    assert downs[-1][1] == basis_down.last_tick(now)
    assert {e - s for s, e in downs} >= {timedelta(hours=24)}
    assert any(e - s != timedelta(hours=24) for s, e in downs), "a DST day is in the range"
    assert ups == intervals.interval_job(up).between(ups[0][0], ups[-1][1])


def test_a_job_whose_upstream_is_stale_waits_and_starts_when_fresh(store: Store) -> None:
    up = job_def("up", "0 * * * *")
    down = job_def("down", "30 * * * *", freshness=["job.is_fresh:jobs.m.up"])
    down["triggers"] = ["manual:jobs.m.down"]
    down.pop("default_trigger")
    ws, jobs = deploy(store, up, down)
    now = datetime(2026, 3, 7, 12, 10, tzinfo=UTC)
    result = fire(store, jobs["down"], "manual:jobs.m.down", now=now)
    assert result.decision.status is TriggerStatus.SKIPPED_UPSTREAM_PENDING
    assert "jobs.m.up" in result.decision.reasons[0]
    assert runs_of(store, ws, jobs["down"]["id"]) == []
    assert store.freshness_waits(ws)[0]["request"]["trigger"] == "manual:jobs.m.down"
    # skip_freshness overrides
    forced = fire(store, jobs["down"], "manual:jobs.m.down", now=now, skip_freshness=True)
    assert forced.decision.status is TriggerStatus.TRIGGERED
    finish(store, forced.run, RunStatus.COMPLETED, now)
    planner = IntervalPlanner(store, ws)
    planner.run_once(now)
    assert len(runs_of(store, ws, jobs["down"]["id"])) == 1  # still waiting
    # the upstream's hour completes: the waiting trigger fires
    run = fire(store, jobs["up"], "schedule:0 * * * *", now=now).run
    assert run is not None and run["interval_end"] == datetime(2026, 3, 7, 12, tzinfo=UTC)
    finish(store, run, RunStatus.COMPLETED, now)
    planner.run_once(now)
    runs = runs_of(store, ws, jobs["down"]["id"])
    assert len(runs) == 2 and runs[-1]["trigger"] == "manual:jobs.m.down"
    assert store.freshness_waits(ws) == []


# -- refresh ----------------------------------------------------------------------------------


def test_refresh_clears_intervals_and_cascades_downstream_but_not_past_block(store: Store) -> None:
    a = job_def("a", "0 0 * * *", interval={"start": "2026-03-01"})
    b = job_def(
        "b", "0 0 * * *", interval={"start": "2026-03-01"}, freshness=["job.is_fresh:jobs.m.a"]
    )
    c = job_def(
        "c",
        "0 0 * * *",
        interval={"start": "2026-03-01"},
        freshness=["job.is_fresh:jobs.m.a"],
        refresh_propagation="block",
    )
    ws, jobs = deploy(store, a, b, c)
    planner = IntervalPlanner(store, ws)
    now = datetime(2026, 3, 4, 1, tzinfo=UTC)
    settle(store, ws, planner, now - timedelta(minutes=1))
    assert {len(completed_intervals(store, ws, jobs[n]["id"])) for n in "abc"} == {3}
    result = fire(store, jobs_of(store, ws)["a"], "manual:jobs.m.a", now=now, refresh=True)
    # dlt's refresh interval: from the declared start to the newest tick, in one run
    assert result.run is not None and result.run["refresh"] is True
    assert (result.run["interval_start"], result.run["interval_end"]) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 4, tzinfo=UTC),
    )
    now2 = now + timedelta(minutes=1)
    settle(store, ws, planner, now2)
    b_runs = runs_of(store, ws, jobs["b"]["id"])
    new_b = [r for r in b_runs if r["created_at"] >= now]
    assert [r["interval_start"].day for r in new_b] == [1, 2, 3]  # cleared: all again
    assert [r["refresh"] for r in new_b] == [True, False, False]  # the first carries it
    assert [r for r in runs_of(store, ws, jobs["c"]["id"]) if r["created_at"] >= now] == []
    assert refresh_jobs(store, jobs_of(store, ws)["a"], now2) == ["jobs.m.b"]


# -- backfills ---------------------------------------------------------------------------------


def test_backfill_runs_missing_intervals_in_order_and_skips_covered(store: Store) -> None:
    ws, jobs = deploy(store, job_def("d", "0 0 * * *"))
    job = jobs["d"]
    now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    # March 3 ran already (a tick): covered
    fire(store, job, "schedule:0 0 * * *", now=datetime(2026, 3, 4, tzinfo=UTC))
    finish(store, runs_of(store, ws, job["id"])[0], RunStatus.COMPLETED, now)
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)
    _basis, slots = plan_backfill(store, job, start, end, now)
    assert [s.state for s in slots].count("skipped_already_covered") == 1
    backfill = store.create_backfill(job, start, end, refresh=False, created_by=None, now=now)
    planner = IntervalPlanner(store, ws)
    settle(store, ws, planner, now)
    planner.run_once(now)
    report = backfill_report(store, store.get_backfill(ws, "1") or {})
    assert report["status"] == "completed"
    assert report["counts"] == {"completed": 6, "skipped_already_covered": 1}
    days = [r["interval_start"].day for r in store.backfill_runs(backfill["id"])]
    assert days == [1, 2, 4, 5, 6, 7]
    # a second backfill of the same range has nothing left to do
    again = store.create_backfill(job, start, end, refresh=False, created_by=None, now=now)
    planner.run_once(now)
    assert store.backfill_runs(again["id"]) == []
    assert (store.get_backfill(ws, "2") or {})["status"] == "completed"


def test_a_sequential_backfill_stops_at_a_failed_interval_and_resumes_a_lost_one(
    store: Store,
) -> None:
    ws, jobs = deploy(store, job_def("d", "0 0 * * *"))
    job = jobs["d"]
    now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)
    backfill = store.create_backfill(job, start, end, refresh=False, created_by=None, now=now)
    planner = IntervalPlanner(store, ws)
    planner.run_once(now)
    (first,) = active(store, ws, job["id"])
    # the server died under the run: its interval runs again, nothing is skipped
    finish(store, first, RunStatus.FAILED, now, reason=f"{LOST_RUN_REASON}: its process is gone")
    planner.run_once(now)
    (again,) = active(store, ws, job["id"])
    assert again["interval_start"] == first["interval_start"]
    finish(store, again, RunStatus.COMPLETED, now)
    planner.run_once(now)
    (second,) = active(store, ws, job["id"])
    finish(store, second, RunStatus.FAILED, now, reason="exit code 1")
    planner.run_once(now)
    planner.run_once(now)
    b = store.get_backfill(ws, backfill["id"]) or {}
    assert b["status"] == "failed" and "2026-03-02" in (b["reason"] or "")
    report = backfill_report(store, b)
    assert report["counts"] == {"completed": 1, "failed": 1, "pending": 3}


def test_cancelling_a_backfill_cancels_its_runs_and_starts_no_more(store: Store) -> None:
    ws, jobs = deploy(
        store,
        job_def(
            "d", "0 0 * * *", concurrency=2, interval={"start": "2026-03-01", "mode": "parallel"}
        ),
    )
    job = jobs["d"]
    store.set_paused(job["id"], True)  # the planner's own catch-up stays out of the way
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    backfill = store.create_backfill(
        job, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC),
        refresh=False, created_by=None, now=now,
    )  # fmt: skip
    planner = IntervalPlanner(store, ws)
    planner.run_once(now)
    assert len(active(store, ws, job["id"])) == 2
    store.cancel_backfill(store.get_backfill(ws, backfill["id"]) or {}, "stop")
    planner.run_once(now)
    assert active(store, ws, job["id"]) == []
    assert all(r["status"] == "cancelled" for r in store.backfill_runs(backfill["id"]))


# -- deadlines ---------------------------------------------------------------------------------


def test_a_run_not_completed_by_its_deadline_raises_deadline_missed(store: Store) -> None:
    d = job_def("late", "0 6 * * *", deliver={"deadline": "8am"}, tz="Europe/Berlin")
    ws, jobs = deploy(store, d)
    tick = datetime(2026, 3, 7, 5, 0, tzinfo=UTC)  # 06:00 in Berlin
    late = fire(store, jobs["late"], "schedule:0 6 * * *", now=tick).run
    assert late is not None and late["deadline_at"] == datetime(2026, 3, 7, 7, 0, tzinfo=UTC)
    planner = IntervalPlanner(store, ws)
    assert planner.run_once(tick) == late["deadline_at"]  # wakes at the deadline
    planner.run_once(late["deadline_at"] + timedelta(seconds=1))
    planner.run_once(late["deadline_at"] + timedelta(seconds=2))  # raised once
    events = [e for e in store.events_after(0) if e["kind"] == "deadline.missed"]
    assert len(events) == 1 and events[0]["run_id"] == late["id"]
    assert store.deadlines_missed([jobs["late"]["id"]])
    finish(store, late, RunStatus.COMPLETED, late["deadline_at"] + timedelta(minutes=5))
    # a run completed in time raises nothing
    tick2 = tick + timedelta(days=1)
    on_time = fire(store, jobs["late"], "schedule:0 6 * * *", now=tick2).run
    assert on_time is not None
    finish(store, on_time, RunStatus.COMPLETED, tick2 + timedelta(minutes=30))
    planner.run_once(tick2 + timedelta(hours=5))
    assert len([e for e in store.events_after(0) if e["kind"] == "deadline.missed"]) == 1
