"""Debounced jobs end to end over the store (SQLite and PostgreSQL): triggers through
`launch.fire`, the timer loop on injected wall and monotonic clocks, restarts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from headwater.core.states import RunStatus
from headwater.events.debouncer import Debouncer
from headwater.store.store import Store
from headwater.workspace.launch import fire
from tests.store.test_store import add_jobs, job_spec

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


class Clocks:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def advance(self, by: timedelta) -> None:
        self.wall += by
        self.mono += by.total_seconds()


def debounced(store: Store, ws: str, **settings: object) -> dict:
    spec = dataclasses.replace(
        job_spec("jobs.m.a", concurrency=None),
        settings={"run_interval": 1800.0, **settings},
    )
    return add_jobs(store, ws, spec)["jobs.m.a"]


def runs_of(store: Store, ws: str, job: dict) -> list[dict]:
    return sorted(store.list_runs(ws, job_id=job["id"])[0], key=lambda r: r["number"])


def start_all(store: Store, ws: str, job: dict) -> None:
    """What a worker does: the fire's run starts, so the fire lands."""
    for run in runs_of(store, ws, job):
        if run["status"] == "pending":
            store.transition(run["id"], RunStatus.STARTING, worker_id="w")
            store.transition(run["id"], RunStatus.RUNNING)


def test_signals_inside_the_interval_fold_into_one_fire_at_its_end(store: Store, ws: str) -> None:
    job = debounced(store, ws)
    clocks = Clocks()
    timer = Debouncer(store, ws, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    timer.run_once()  # T1: the start fires at once
    assert len(runs_of(store, ws, job)) == 1
    start_all(store, ws, job)
    answers = []
    for minute in (1, 5, 20):  # T2
        clocks.wall = T0 + minute * MIN
        clocks.mono = 1000.0 + minute * 60
        answers.append(fire(store, job, "tag:x", now=clocks.wall))
    assert len(runs_of(store, ws, job)) == 1
    due = (T0 + 30 * MIN).isoformat()
    assert all(a.run is None for a in answers)
    assert answers[-1].decision.reasons == [f"debounced: folded into the fire at {due}"]
    timer.run_once()  # woken by the scheduling: it holds the fire on its monotonic clock
    # T10: the wall clock jumps +2 h, then -1 h; the fire still happens at monotonic +30 min
    clocks.wall += timedelta(hours=2)
    timer.run_once()
    assert len(runs_of(store, ws, job)) == 1
    clocks.wall -= timedelta(hours=1)
    clocks.mono = 1000.0 + 29 * 60
    assert timer.run_once() <= 60.0
    assert len(runs_of(store, ws, job)) == 1
    clocks.mono = 1000.0 + 30 * 60
    timer.run_once()
    runs = runs_of(store, ws, job)
    assert len(runs) == 2
    # the fire runs with the newest folded trigger
    assert runs[1]["trigger"] == "tag:x" and runs[1]["dedupe_key"] == "debounce:2"


def test_a_trigger_while_the_fire_is_in_flight_gets_one_follow_up(store: Store, ws: str) -> None:
    job = debounced(store, ws, run_interval=0.0)
    first = fire(store, job, "manual:jobs.m.a", now=T0)
    assert first.run is not None and first.decision.creates_run
    # its run has not started: the fire is in flight; two triggers queue one follow-up
    second = fire(store, job, "manual:jobs.m.a", now=T0 + MIN)
    third = fire(store, job, "manual:jobs.m.a", now=T0 + 2 * MIN)
    assert second.run is not None and second.run["id"] == first.run["id"]
    assert "follow-up" in third.decision.reasons[0]
    assert len(runs_of(store, ws, job)) == 1
    start_all(store, ws, job)
    timer = Debouncer(store, ws, clock=lambda: T0 + 3 * MIN)
    timer.run_once()  # the start (R1) of this process: fires
    timer.run_once()
    assert len(runs_of(store, ws, job)) == 2


def test_a_pending_fire_survives_a_restart_and_happens_once(store: Store, ws: str) -> None:
    job = debounced(store, ws, trigger_on_start=False)
    clocks = Clocks()
    fire(store, job, "manual:jobs.m.a", now=T0)  # fires
    start_all(store, ws, job)
    clocks.advance(10 * MIN)
    fire(store, job, "manual:jobs.m.a", now=clocks.wall)  # scheduled at 30
    # the server restarts at 16: a new timer, monotonic clock from scratch
    clocks.advance(6 * MIN)
    clocks.mono = 5.0
    timer = Debouncer(store, ws, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    timer.run_once()
    timer.run_once()
    assert len(runs_of(store, ws, job)) == 1
    clocks.advance(14 * MIN)
    timer.run_once()
    timer.run_once()
    assert len(runs_of(store, ws, job)) == 2
    clocks.advance(60 * MIN)
    timer.run_once()
    assert len(runs_of(store, ws, job)) == 2


def test_a_job_without_run_interval_is_not_debounced(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    for i in range(3):
        assert fire(store, job, "manual:jobs.m.a", now=T0 + i * MIN).decision.creates_run
    assert store.debounce_state(job["id"]) is None
