"""The log pump of a remote worker: its lines go in only while the run is its attempt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from headwater.core.states import RunStatus
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import Store
from headwater.worker.logpump import LogPump
from tests.store.test_store import add_jobs, job_spec, run_request

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_a_worker_that_lost_its_run_writes_none_of_its_lines(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    store = Store(engine)
    ws = store.ensure_workspace(str(tmp_path), "demo")["id"]
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run
    assert run is not None
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=1, now=NOW)
    store.transition(run["id"], RunStatus.STARTING)
    assert store.take_run(run["id"], 1, "w1", now=NOW) is not None

    pump = LogPump(store)
    pump.open(run["id"], ["hunter2"], fence=("w1", 1))
    pump.queue(run["id"], "loading with hunter2", "user", "run", "stdout")
    assert pump.flush()
    assert [r["content"] for r in store.read_logs(run["id"])] == ["loading with ***"]

    # the server ended the run as lost: what the worker still prints is dropped, once
    store.transition(run["id"], RunStatus.FAILED, reason="worker lost: w1")
    pump.queue(run["id"], "still running", "user", "run", "stdout")
    assert pump.flush()
    pump.queue(run["id"], "and more", "user", "run", "stdout")
    assert pump.buffered == [0, 0]
    assert pump.flush()
    assert [r["content"] for r in store.read_logs(run["id"])] == ["loading with ***"]
