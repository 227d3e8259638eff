"""The scheduler against a real SQLite store, with time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from headwater.scheduler.scheduler import Scheduler, tick_key
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import JobSpec, Store

T0 = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)


def job_def(name: str, triggers: list[str], tz: str | None = None) -> dict:
    d = {
        "engine_version": 2,
        "job_ref": f"jobs.m.{name}",
        "entry_point": {
            "module": "m",
            "function": name,
            "job_type": "batch",
            "launcher": "dlt._workspace.deployment.launchers.job",
        },
        "triggers": triggers,
        "execute": {"concurrency": None},
    }
    if tz:
        d["require"] = {"timezone": tz}
    return d


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    return Store(engine)


def deploy(store: Store, ws_id: str, *defs: dict) -> dict[str, dict]:
    specs = [
        JobSpec(
            d["job_ref"], "batch", d, d["job_ref"] + str(d["triggers"]), d["triggers"], None, None
        )
        for d in defs
    ]
    store.deploy(ws_id, {"jobs": list(defs)}, "h" + str(len(defs)), [], specs, "m")
    jobs, _ = store.list_jobs(ws_id)
    return {j["job_ref"].rsplit(".", 1)[-1]: j for j in jobs}


def runs_of(store: Store, ws_id: str, job_id: str) -> list[dict]:
    return store.list_runs(ws_id, job_id=job_id, limit=1000)[0]


def test_schedule_fires_once_per_tick_and_reports_the_next(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    jobs = deploy(store, ws, job_def("hourly", ["schedule:0 * * * *"]))
    sched = Scheduler(store, ws)
    nxt = sched.run_once(T0)  # first sight: starts now, nothing for the past
    assert nxt == T0 + timedelta(hours=1)
    assert runs_of(store, ws, jobs["hourly"]["id"]) == []
    sched.run_once(T0 + timedelta(hours=1, seconds=1))
    sched.run_once(T0 + timedelta(hours=1, seconds=2))
    runs = runs_of(store, ws, jobs["hourly"]["id"])
    assert len(runs) == 1
    assert runs[0]["trigger"] == "schedule:0 * * * *"
    assert runs[0]["dedupe_key"] == tick_key("schedule:0 * * * *", T0 + timedelta(hours=1))
    # the run carries dlt's interval: the hour that just elapsed
    assert runs[0]["interval_start"] == T0 and runs[0]["interval_end"] == T0 + timedelta(hours=1)
    assert store.get_job(jobs["hourly"]["id"])["next_run_at"] == T0 + timedelta(hours=2)


def test_missed_ticks_after_downtime_run_once(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    jobs = deploy(store, ws, job_def("q", ["schedule:*/15 * * * *"]))
    Scheduler(store, ws).run_once(T0)
    # down for five hours: twenty ticks missed, one run
    Scheduler(store, ws).run_once(T0 + timedelta(hours=5, minutes=1))
    runs = runs_of(store, ws, jobs["q"]["id"])
    assert len(runs) == 1
    assert runs[0]["dedupe_key"].endswith((T0 + timedelta(hours=5)).isoformat())


def test_a_tick_becomes_one_run_across_restarts(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    jobs = deploy(store, ws, job_def("e", ["every:5m"]))
    Scheduler(store, ws).run_once(T0)
    due = T0 + timedelta(minutes=5)
    # a crash after the run was created but before the cursor moved: the key holds
    from headwater.workspace.launch import fire

    fire(store, jobs["e"], "every:5m", now=due, dedupe_key=tick_key("every:5m", due))
    Scheduler(store, ws).run_once(due + timedelta(seconds=3))
    Scheduler(store, ws).run_once(due + timedelta(seconds=4))
    assert len(runs_of(store, ws, jobs["e"]["id"])) == 1


def test_paused_job_does_not_fire_and_resumes_from_now(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    jobs = deploy(store, ws, job_def("p", ["every:1m"]))
    sched = Scheduler(store, ws)
    sched.run_once(T0)
    store.set_paused(jobs["p"]["id"], True)
    assert sched.run_once(T0 + timedelta(minutes=10)) is None
    assert runs_of(store, ws, jobs["p"]["id"]) == []
    store.set_paused(jobs["p"]["id"], False)  # cursor moves to the real now
    cursor = store.schedule_cursors()[(jobs["p"]["id"], "every:1m")]
    sched.run_once(cursor + timedelta(seconds=30))
    assert runs_of(store, ws, jobs["p"]["id"]) == []
    sched.run_once(cursor + timedelta(minutes=1, seconds=1))
    assert len(runs_of(store, ws, jobs["p"]["id"])) == 1


def test_schedule_uses_the_jobs_time_zone_across_dst(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    jobs = deploy(store, ws, job_def("ny", ["schedule:30 2 * * *"], tz="America/New_York"))
    sched = Scheduler(store, ws)
    sched.run_once(datetime(2026, 3, 7, 12, 0, tzinfo=UTC))
    sched.run_once(datetime(2026, 3, 8, 7, 31, tzinfo=UTC))  # 02:30 does not exist that day
    runs = runs_of(store, ws, jobs["ny"]["id"])
    assert len(runs) == 1
    assert runs[0]["dedupe_key"].endswith("2026-03-08T07:30:00+00:00")


def test_once_trigger_fires_one_time(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    at = T0 + timedelta(minutes=2)
    jobs = deploy(store, ws, job_def("o", [f"once:{at.isoformat()}"]))
    sched = Scheduler(store, ws)
    sched.run_once(T0)
    for minutes in (1, 3, 30, 600):
        sched.run_once(T0 + timedelta(minutes=minutes))
    assert len(runs_of(store, ws, jobs["o"]["id"])) == 1


def test_a_changed_schedule_forgets_the_old_cursor_and_starts_from_now(store: Store) -> None:
    ws = store.ensure_workspace("/w", "w")["id"]
    jobs = deploy(store, ws, job_def("c", ["schedule:0 * * * *"]))
    Scheduler(store, ws).run_once(T0)
    jobs = deploy(store, ws, job_def("c", ["schedule:30 * * * *"]))
    later = T0 + timedelta(hours=3)
    Scheduler(store, ws).run_once(later)  # first sight of the new trigger: nothing for the past
    cursors = store.schedule_cursors()
    assert (jobs["c"]["id"], "schedule:0 * * * *") not in cursors
    assert cursors[(jobs["c"]["id"], "schedule:30 * * * *")] == later
    assert runs_of(store, ws, jobs["c"]["id"]) == []
