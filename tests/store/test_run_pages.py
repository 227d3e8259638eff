"""Runs paged by key on both backends: every run once, newest first, however runs were
created meanwhile; filters by trigger kind and time range; the intervals a job's runs
cover; the metrics a scrape reads; the runs of the timeline's window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.core.states import RunStatus
from headwater.store.metrics import DURATION_BUCKETS
from headwater.store.store import Store
from tests.store.test_store import add_jobs, job_spec, run_request

T0 = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def test_key_pages_walk_every_run_once_newest_first(store: Store, ws: str) -> None:
    jobs = add_jobs(
        store, ws, job_spec("jobs.m.a", concurrency=None), job_spec("jobs.m.b", concurrency=None)
    )
    made = []
    for i in range(23):
        job = jobs["jobs.m.a" if i % 2 else "jobs.m.b"]
        trigger = "schedule:0 * * * *" if i % 3 == 0 else None
        # three runs share each instant: the key breaks ties by number and id
        made.append(
            store.create_run(
                run_request(job, trigger, concurrency=None), now=T0 + timedelta(seconds=i // 3)
            ).run
        )
    seen: list[str] = []
    after = None
    while True:
        page, total = store.list_runs(ws, limit=5, after=after)
        assert total >= 23
        if not page:
            break
        seen += [r["id"] for r in page]
        last = page[-1]
        after = (last["created_at"], last["number"], last["id"])
        # a run created while paging lands before the cursor: it shifts nothing
        store.create_run(
            run_request(jobs["jobs.m.a"], concurrency=None), now=T0 + timedelta(hours=1)
        )
        if len(seen) >= 23:
            break
    assert len(seen) == len(set(seen)) == 23
    newest_first = sorted(made, key=lambda r: (r["created_at"], r["number"], r["id"]), reverse=True)
    assert seen == [r["id"] for r in newest_first]
    timed, _ = store.list_runs(ws, trigger_kinds=["schedule"], end=T0 + timedelta(minutes=1))
    assert len(timed) == 8 and all(r["trigger"].startswith("schedule:") for r in timed)
    window, _ = store.list_runs(ws, start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=4))
    assert len(window) == 6


def test_metrics_read_outcomes_durations_and_the_queue(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    for seconds, outcome in (
        (3, RunStatus.COMPLETED),
        (40, RunStatus.COMPLETED),
        (2, RunStatus.FAILED),
    ):
        run = store.create_run(run_request(job, concurrency=None), now=T0).run
        store.transition(run["id"], RunStatus.STARTING, now=T0)
        store.transition(run["id"], RunStatus.RUNNING, now=T0)
        store.transition(run["id"], outcome, now=T0 + timedelta(seconds=seconds))
    store.create_run(run_request(job, concurrency=None), now=T0 + timedelta(minutes=5))
    counts = {(r["status"], r["n"], r["started"]) for r in store.run_counts(ws)}
    assert counts == {("completed", 2, 2), ("failed", 1, 1), ("pending", 1, 0)}
    (hist,) = store.histogram(ws, "duration", DURATION_BUCKETS)
    assert hist["count"] == 3 and round(hist["sum"]) == 45
    assert [hist[f"le_{i}"] for i in range(4)] == [0, 2, 2, 3]  # <=1, <=5, <=15, <=60
    depth, oldest = store.queue(ws)
    assert depth == 1 and oldest == T0 + timedelta(minutes=5)


def test_timeline_holds_the_runs_overlapping_its_window_and_every_run_not_ended(
    store: Store, ws: str
) -> None:
    jobs = add_jobs(
        store, ws, job_spec("jobs.m.a", concurrency=None), job_spec("jobs.m.b", concurrency=1)
    )
    a, b = jobs["jobs.m.a"], jobs["jobs.m.b"]
    end = T0
    start = end - timedelta(hours=24)

    def ran(job: dict[str, Any], created: datetime, started: datetime, ended: datetime) -> str:
        run = store.create_run(run_request(job, concurrency=None), now=created).run
        store.transition(run["id"], RunStatus.STARTING, now=started)
        store.transition(run["id"], RunStatus.RUNNING, now=started)
        store.transition(run["id"], RunStatus.COMPLETED, now=ended)
        return str(run["id"])

    h = timedelta(hours=1)
    ran(a, end - 30 * h, end - 30 * h, end - 25 * h)  # ended before the window
    crossing = ran(a, end - 30 * h, end - 29 * h, end - 23 * h)
    late = ran(a, end - 2 * h, end - 2 * h + timedelta(seconds=1.5), end - h)
    queued = store.create_run(run_request(a, concurrency=None), now=end - 72 * h).run["id"]
    running = store.create_run(run_request(b), now=end - 3 * h).run
    store.transition(running["id"], RunStatus.STARTING, now=end - 3 * h)
    skipped = store.create_run(run_request(b), now=end - h).run
    assert skipped["status"] == "skipped"
    store.create_run(run_request(a, concurrency=None), now=end + h)  # after the window

    rows, more = store.runs_between(ws, start, end)
    by_id = {r[0]: r for r in rows}
    assert set(by_id) == {crossing, late, queued, running["id"]} and not more
    # (id, job_ref, number, status, created, started, finished), ms after `start`
    ms = 3_600_000
    assert by_id[late] == (late, "jobs.m.a", 3, "completed", 22 * ms, 22 * ms + 1500, 23 * ms)
    assert by_id[crossing][4:] == (-6 * ms, -5 * ms, ms)
    assert by_id[queued][3:] == ("pending", -48 * ms, None, None)
    assert by_id[running["id"]][1:] == ("jobs.m.b", 1, "starting", 21 * ms, 21 * ms, None)

    # past the limit: the runs that ended last, and every run not ended
    rows, more = store.runs_between(ws, start, end, limit=1)
    assert {r[0] for r in rows} == {late, queued, running["id"]} and more
