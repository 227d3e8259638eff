"""The worker's start-up window: what counts as a run still starting."""

from __future__ import annotations

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
    import os

    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    assert Worker(Store(engine), tmp_path, "ws", warm=False).max_starting == len(
        os.sched_getaffinity(0)
    )
