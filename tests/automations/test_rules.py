"""Late-start and deadline rules on an injected clock, against a real SQLite store: the
rule engine turns what the clock finds (a run not started 10 minutes after its tick) and
what the interval planner raises (`deadline.missed`) into deliveries, once each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from headwater.automations.rules import RuleEngine
from headwater.scheduler.intervals import IntervalPlanner
from headwater.store import notify
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import JobSpec, Store
from headwater.workspace.config import parse_config
from headwater.workspace.launch import fire

CONFIG = """
[[automations]]
name = "late daily load"
on = ["run.late:jobs.m.daily"]
after = "10m"
webhook = { url = "http://127.0.0.1:9/hook" }

[[automations]]
name = "missed delivery"
on = ["deadline.missed:*"]
notify = ["json://127.0.0.1:9/alerts"]
message = "{{ run.job_ref }} run {{ run.number }} missed its deadline"
"""

TICK = datetime(2026, 3, 7, 5, 0, tzinfo=UTC)


@pytest.fixture
def env(tmp_path: Path) -> tuple[Store, str, dict[str, Any]]:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    store = Store(engine)
    ws = store.ensure_workspace("/w", "w")["id"]
    d = {
        "engine_version": 2,
        "job_ref": "jobs.m.daily",
        "entry_point": {
            "module": "m",
            "function": "daily",
            "job_type": "batch",
            "launcher": "dlt._workspace.deployment.launchers.job",
        },
        "triggers": ["schedule:0 6 * * *"],
        "execute": {"concurrency": 1},
        "deliver": {"deadline": "8am"},
        "require": {"timezone": "Europe/Berlin"},
    }
    spec = JobSpec(d["job_ref"], "batch", d, "h", d["triggers"], d["triggers"][0], None)
    store.deploy(ws, {"jobs": [d]}, "h1", [], [spec], "m")
    config = parse_config(CONFIG)
    store.save_config(ws, config.model_dump(mode="json"), config.hash)
    job = store.list_jobs(ws)[0][0]
    return store, ws, job


def deliveries(store: Store, ws: str) -> list[dict[str, Any]]:
    return store.list_deliveries(ws, limit=100)


def test_a_run_not_started_ten_minutes_after_its_tick_is_late_once(
    env: tuple[Store, str, dict[str, Any]],
) -> None:
    store, ws, job = env
    engine = RuleEngine(store, ws, base_url=lambda: "http://hw")
    engine.run_once(TICK)
    run = fire(store, job, "schedule:0 6 * * *", now=TICK).run
    assert run is not None
    engine.run_once(TICK + timedelta(minutes=9))
    assert deliveries(store, ws) == []
    engine.run_once(TICK + timedelta(minutes=10, seconds=30))
    engine.run_once(TICK + timedelta(minutes=20))
    late = [d for d in deliveries(store, ws) if d["event"] == "run.late"]
    assert len(late) == 1 and late[0]["run_id"] == run["id"]
    assert late[0]["kind"] == "webhook"


def test_a_missed_deadline_notifies_once(env: tuple[Store, str, dict[str, Any]]) -> None:
    store, ws, job = env
    engine = RuleEngine(store, ws, base_url=lambda: "http://hw")
    engine.run_once(TICK)
    run = fire(store, job, "schedule:0 6 * * *", now=TICK).run
    assert run is not None
    planner = IntervalPlanner(store, ws)
    planner.run_once(TICK + timedelta(hours=1, minutes=59))  # 07:59 in Berlin
    engine.run_once(TICK + timedelta(hours=1, minutes=59))
    assert [d for d in deliveries(store, ws) if d["event"] == "deadline.missed"] == []
    for minutes in (121, 125, 180):
        planner.run_once(TICK + timedelta(minutes=minutes))
        engine.run_once(TICK + timedelta(minutes=minutes))
    missed = [d for d in deliveries(store, ws) if d["event"] == "deadline.missed"]
    assert len(missed) == 1
    assert missed[0]["payload"]["body"] == "jobs.m.daily run 1 missed its deadline"


def test_without_automations_or_hooks_events_cost_no_reads(
    env: tuple[Store, str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst writes several events a run: with nothing to match them, the engine moves
    its cursor past them without reading each one's run and job."""
    store, ws, job = env
    empty = parse_config("")
    store.save_config(ws, empty.model_dump(mode="json"), empty.hash)
    store.notifier.notify_local(notify.JOBS)  # the engine reads the configuration again
    engine = RuleEngine(store, ws, base_url=lambda: "http://hw")
    engine.run_once(TICK)
    run = fire(store, job, "schedule:0 6 * * *", now=TICK).run
    assert run is not None
    reads: list[str] = []
    for name in ("get_run", "get_job"):
        real = getattr(store, name)
        monkeypatch.setattr(
            store, name, lambda *a, _n=name, _r=real, **k: (reads.append(_n), _r(*a, **k))[1]
        )
    assert engine.run_once(TICK + timedelta(seconds=1)) >= 1  # the run's events were read
    assert reads == [] and deliveries(store, ws) == []
