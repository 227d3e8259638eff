"""The worker's start-up window (what counts as a run still starting) and its log pump."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from headwater.core.states import RunStatus
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import Store
from headwater.worker.coordinator import IDLE_WAIT_S
from headwater.worker.supervisor import STARTUP_WINDOW_S, RunHandle
from headwater.worker.worker import Worker


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
        worker.supervisor.adopt([h])

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
    monkeypatch.setattr(worker.supervisor, "spawn", lambda run: (spawned, "fork"))

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(worker.store, "transition_many", broken)

    with pytest.raises(RuntimeError, match="database is locked"):
        worker.supervisor.start_runs([{"id": "4242"}])

    assert worker.active()["4242"] is spawned
    assert worker.supervisor.handle_of(4242) is spawned
    worker.supervisor.close_stream(out_r, spawned)


def test_a_worker_at_its_start_limit_claims_nothing_until_a_start_slot_frees(
    worker: Worker,
) -> None:
    run = a_run(worker)
    now = time.monotonic()
    worker.supervisor.adopt([handle(1, now - 0.1), handle(2, now - 0.3)])  # max_starting=2

    wait = worker.coordinator.run_once(now)

    assert wait == pytest.approx(STARTUP_WINDOW_S - 0.3)
    stored_run = worker.store.get_run(run["id"])
    assert stored_run is not None and stored_run["status"] == RunStatus.PENDING.value


def test_a_worker_with_nothing_pending_waits_for_a_wake_up(worker: Worker) -> None:
    assert worker.coordinator.run_once(time.monotonic()) == IDLE_WAIT_S


# -- the log pump ---------------------------------------------------------------------------


def a_run(worker: Worker) -> dict[str, Any]:
    """A run in the worker's store, claimed: its log starts at line 0."""
    from tests.store.test_store import add_jobs, job_spec, run_request

    ws = worker.store.ensure_workspace("/srv/ws", "ws")["id"]
    job = add_jobs(worker.store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    run = worker.store.create_run(run_request(job, concurrency=None)).run
    assert run is not None
    worker.logs.open(run["id"], [])
    return run


def failing_for(worker: Worker, monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """Make the store's log writes fail `times` times (as a full disk or a read-only file
    would), then work again; answers the count of attempts so far."""
    real = worker.store.append_logs
    attempts = [0]

    def append(batches: Any, fences: Any = None) -> set[str]:
        attempts[0] += 1
        if attempts[0] <= times:
            raise OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))
        return real(batches, fences)

    monkeypatch.setattr(worker.store, "append_logs", append)
    return attempts


def flush_until_written(worker: Worker, turns: int = 20) -> None:
    for _ in range(turns):
        worker.logs.retry_at = 0.0  # no back-off wait in a test
        if worker.logs.flush():
            return
    raise AssertionError("the buffered lines were never written")


def stored(worker: Worker, run_id: str) -> list[dict[str, Any]]:
    return worker.store.read_logs(run_id)


def test_log_lines_wait_while_the_store_cannot_write_and_none_are_lost(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = a_run(worker)
    attempts = failing_for(worker, monkeypatch, 3)
    for i in range(150):
        worker.logs.queue(run["id"], f"line {i}", "user", "run", "stdout")
    assert worker.logs.flush() is False  # the store failed: the lines stay buffered
    for i in range(150, 300):
        worker.logs.queue(run["id"], f"line {i}", "user", "run", "stdout")
    flush_until_written(worker)

    assert attempts[0] == 4
    lines = stored(worker, run["id"])
    assert [x["content"] for x in lines] == [f"line {i}" for i in range(300)]
    assert [x["line_num"] for x in lines] == list(range(300))
    assert worker.logs.buffered == [0, 0]


def test_lines_beyond_the_buffer_are_counted_in_a_stored_line_and_the_runs_reason(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = {**a_run(worker), "number": 1}
    worker.logs.max_buffered_lines = 60
    failing_for(worker, monkeypatch, 2)
    for i in range(300):
        worker.logs.queue(run["id"], f"line {i}", "user", "run", "stdout")
    assert worker.logs.flush() is False
    worker.logs.retry_at = 0.0
    assert worker.logs.flush() is False
    flush_until_written(worker)
    worker.logs.queue(run["id"], "after the outage", "user", "run", "stdout")

    moves: list[Any] = []
    monkeypatch.setattr(worker.store, "transition_many", moves.extend)
    h = RunHandle(run=run, pid=4343, streams={}, exit_code=0, exited_at=time.monotonic())
    worker.supervisor.adopt([h])
    worker.supervisor.finish_exited(time.monotonic())

    contents = [x["content"] for x in stored(worker, run["id"])]
    assert contents[:60] == [f"line {i}" for i in range(60)]
    assert contents[60] == (
        "[headwater] 240 log lines lost: the store could not write them and the buffer was full"
    )
    assert contents[61] == "after the outage"
    assert contents[62].startswith("run #1 completed")
    ((run_id, status, fields),) = moves
    assert run_id == run["id"] and status is RunStatus.COMPLETED
    assert fields["reason"] == "240 log lines lost (the store could not write them)"


def test_a_run_past_its_cap_stores_one_marker_and_ends_normally(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = {**a_run(worker), "number": 2}
    worker.logs.max_log_lines = 5
    for i in range(20):
        worker.logs.queue(run["id"], f"line {i}", "user", "run", "stdout")
    moves: list[Any] = []
    monkeypatch.setattr(worker.store, "transition_many", moves.extend)
    worker.supervisor.adopt(
        [RunHandle(run=run, pid=4344, streams={}, exit_code=0, exited_at=time.monotonic())]
    )
    worker.supervisor.finish_exited(time.monotonic())

    contents = [x["content"] for x in stored(worker, run["id"])]
    assert contents[:5] == [f"line {i}" for i in range(5)]
    assert contents[5].startswith("[headwater] log truncated: this run printed more than its cap")
    assert contents[6] == (
        "run #2 completed (exit code 0); 15 lines over the log cap were not stored"
    )
    assert len(contents) == 7
    assert moves == [(run["id"], RunStatus.COMPLETED, {"exit_code": 0, "reason": None})]


def test_a_failed_runs_reason_names_the_exception_it_died_of(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = {**a_run(worker), "number": 3}
    for text in (
        "about to fail",
        "Traceback (most recent call last):",
        '  File "job.py", line 2, in <module>',
        '    raise ValueError("boom")',
        "ValueError: boom",
    ):
        worker.logs.queue(run["id"], text, "user", "run", "stderr")
    worker.logs.queue(run["id"], "printed meanwhile", "user", "run", "stdout")
    moves: list[Any] = []
    monkeypatch.setattr(worker.store, "transition_many", moves.extend)
    worker.supervisor.adopt(
        [RunHandle(run=run, pid=4345, streams={}, exit_code=1, exited_at=time.monotonic())]
    )
    worker.supervisor.finish_exited(time.monotonic())

    assert moves == [
        (run["id"], RunStatus.FAILED, {"exit_code": 1, "reason": "ValueError: boom (exit code 1)"})
    ]


def test_an_ended_run_whose_lines_cannot_be_written_ends_in_time_saying_so(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = {**a_run(worker), "number": 4}
    failing_for(worker, monkeypatch, 10**6)
    for i in range(10):
        worker.logs.queue(run["id"], f"line {i}", "user", "run", "stdout")
    moves: list[Any] = []
    monkeypatch.setattr(worker.store, "transition_many", moves.extend)
    h = RunHandle(run=run, pid=4346, streams={}, exit_code=0, exited_at=time.monotonic())
    worker.supervisor.adopt([h])
    worker.supervisor.finish_exited(time.monotonic())
    assert moves == [] and run["id"] in worker.active()  # waits for the store a while

    worker.supervisor.log_give_up_s = 0.0
    worker.supervisor.finish_exited(time.monotonic())
    # the 10 lines and the run's own last line
    assert moves == [
        (
            run["id"],
            RunStatus.COMPLETED,
            {"exit_code": 0, "reason": "11 log lines lost (the store could not write them)"},
        )
    ]
    assert worker.logs.runs == {} and worker.logs.buffered == [0, 0]
