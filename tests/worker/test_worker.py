"""The worker's start-up window: what counts as a run still starting."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import Store
from headwater.worker.worker import STARTUP_WINDOW_S, RunHandle, Worker


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    return Worker(Store(engine), tmp_path, "ws", warm=False, max_starting=2)


def handle(pid: int, started: float, exit_code: int | None = None) -> RunHandle:
    return RunHandle(
        run={"id": str(pid)}, pid=pid, streams={}, started=started, exit_code=exit_code
    )


def test_only_live_runs_inside_the_window_count_as_starting(worker: Worker) -> None:
    now = time.monotonic()
    for h in (
        handle(1, now - 0.1),  # starting
        handle(2, now - 0.3),  # starting, leaves the window first
        handle(3, now - STARTUP_WINDOW_S - 0.1),  # past its start-up
        handle(4, now - 0.05, exit_code=0),  # already over
    ):
        worker._handles[h.run["id"]] = h

    count, next_leaves = worker.starting(now)

    assert count == 2
    assert next_leaves == pytest.approx(STARTUP_WINDOW_S - 0.3)


def test_no_run_no_wait(worker: Worker) -> None:
    assert worker.starting() == (0, None)


def test_the_default_is_one_start_per_core(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    assert Worker(Store(engine), tmp_path, "ws", warm=False).max_starting == len(
        os.sched_getaffinity(0)
    )


def test_started_processes_are_supervised_even_when_the_store_fails(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's process exists once forked: if marking it running fails, the worker must still
    read its output and reap it, not lose it."""
    out_r, out_w = os.pipe()
    os.close(out_w)
    spawned = handle(4242, time.monotonic())
    spawned.streams = {out_r: "stdout"}
    monkeypatch.setattr(worker, "_spawn", lambda run: (spawned, "fork"))

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(worker.store, "transition_many", broken)

    with pytest.raises(RuntimeError, match="database is locked"):
        worker._start_all([{"id": "4242"}])

    assert worker._handles["4242"] is spawned
    assert worker._by_pid[4242] is spawned
    worker._close_stream(out_r, spawned)
