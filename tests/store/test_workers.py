"""Remote workers in the store: dispatch by pool capacity, one take per attempt, leases
renewed or lost, fenced writes; and the server's reaper (`worker/remote_dispatch.py`)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from headwater.core import leases
from headwater.core.specs import LogLine
from headwater.core.states import RunStatus
from headwater.store import db
from headwater.store.store import Store
from headwater.worker.remote_dispatch import DISPATCH_LEASES, RemoteDispatcher
from tests.store.test_store import add_jobs, all_at_once, job_spec, run_request

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
LEASE = leases.LEASE_S


def pending_runs(store: Store, ws: str, n: int, pool: str | None = None) -> list[dict[str, Any]]:
    jobs = add_jobs(store, ws, *(job_spec(f"jobs.m.j{i}") for i in range(n)))
    out = []
    for i in range(n):
        result = store.create_run(run_request(jobs[f"jobs.m.j{i}"], pool=pool))
        assert result.run is not None
        out.append(result.run)
    return out


def dispatch(store: Store, now: datetime = T0) -> list[dict[str, Any]]:
    capacity = store.pool_capacity(now)
    return store.claim_many(
        None,
        max(1, sum(capacity.values())),
        now,
        pools=capacity,
        lease_until=leases.lease_until(now, DISPATCH_LEASES * LEASE),
    )


def test_runs_wait_for_a_live_worker_of_their_pool_and_its_free_slots(
    store: Store, ws: str
) -> None:
    runs = pending_runs(store, ws, 3)
    assert dispatch(store) == []
    reason = store.get_run(runs[0]["id"])["reason"]  # type: ignore[index]
    assert "no live worker serves pool 'default'" in reason

    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=2, now=T0)
    sent = dispatch(store)
    assert [r["id"] for r in sent] == [r["id"] for r in runs[:2]]
    assert all(r["status"] == "starting" and r["worker_id"] is None for r in sent)
    assert all(r["lease_expires_at"] is not None for r in sent)
    assert "free slot in pool 'default'" in store.get_run(runs[2]["id"])["reason"]  # type: ignore[index]
    assert store.pool_capacity(T0) == {"default": 0}

    # a worker of another pool gives this one nothing; a silent worker counts for nothing
    store.register_worker("w2", host="h2", pid=2, pools=["big"], slots=4, now=T0)
    assert dispatch(store) == []
    later = T0 + timedelta(seconds=LEASE + 1)
    assert store.pool_capacity(later) == {}


def test_a_run_goes_to_its_own_pool(store: Store, ws: str) -> None:
    big = pending_runs(store, ws, 1, pool="big")[0]
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=4, now=T0)
    assert dispatch(store) == []
    assert "pool 'big'" in store.get_run(big["id"])["reason"]  # type: ignore[index]
    store.register_worker("w2", host="h2", pid=2, pools=["big"], slots=1, now=T0)
    assert [r["id"] for r in dispatch(store)] == [big["id"]]


def test_a_dispatched_attempt_is_taken_once_whatever_the_broker_delivers(
    store: Store, ws: str
) -> None:
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=1, now=T0)
    run = pending_runs(store, ws, 1)[0]
    assert dispatch(store)
    assert store.take_run(run["id"], 2, "w1", now=T0) is None  # not this attempt
    taken = all_at_once(8, lambda i: store.take_run(run["id"], 1, f"w{i}", now=T0))
    winners = [t for t in taken if t is not None]
    assert len(winners) == 1
    assert store.get_run(run["id"])["worker_id"] == winners[0]["worker_id"]  # type: ignore[index]


def test_a_heartbeat_renews_leases_and_names_those_lost(store: Store, ws: str) -> None:
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=2, now=T0)
    a, b = pending_runs(store, ws, 2)
    dispatch(store)
    for run in (a, b):
        assert store.take_run(run["id"], 1, "w1", now=T0) is not None
    t1 = T0 + timedelta(seconds=LEASE / 2)
    assert store.heartbeat("w1", [(a["id"], 1)], now=t1) == []
    assert store.expired_leases(T0 + timedelta(seconds=LEASE + 1)) != []
    expired = {r["id"] for r in store.expired_leases(T0 + timedelta(seconds=LEASE + 1))}
    assert expired == {b["id"]}  # a was renewed, b was not
    # once run out, a lease stays lost: the server may be ending the run right now
    late = T0 + timedelta(seconds=LEASE * 3)
    assert store.heartbeat("w1", [(a["id"], 1), (b["id"], 1)], now=late) == [a["id"], b["id"]]
    # and one that is not its own is not renewed either
    assert store.heartbeat("w2", [(a["id"], 1)], now=t1) == [a["id"]]
    worker = {w["name"]: w for w in store.workers()}["w1"]
    assert worker["in_use"] == 0 and worker["heartbeat_at"] == late


def test_a_worker_that_lost_its_attempt_cannot_write_its_outcome(store: Store, ws: str) -> None:
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=2, now=T0)
    run, other = pending_runs(store, ws, 2)
    dispatch(store)
    taken = store.take_run(run["id"], 1, "w1", now=T0)
    assert taken is not None
    assert store.transition_many(
        [(run["id"], RunStatus.RUNNING, {})], fences={run["id"]: ("w1", 1)}
    )[0]
    # the server retries it: attempt 2, which w2 takes and runs
    assert store.retry_run(taken, exit_code=None, reason="worker lost", retry_at=T0) is not None
    store.register_worker("w2", host="h2", pid=2, pools=["default"], slots=1, now=T0)
    dispatch(store, T0 + timedelta(seconds=1))
    assert store.take_run(run["id"], 2, "w2", now=T0) is not None
    # w1 comes back and says its attempt completed: nothing moves
    done = store.transition_many(
        [(run["id"], RunStatus.COMPLETED, {"exit_code": 0})], fences={run["id"]: ("w1", 1)}
    )
    assert done == [None]
    assert store.get_run(run["id"])["status"] == "starting"  # type: ignore[index]
    again = store.transition_many(
        [(run["id"], RunStatus.RUNNING, {})], fences={run["id"]: ("w2", 2)}
    )
    assert again[0] is not None
    # nor its log lines, while w2's go in (one write holding both)
    refused = store.append_logs(
        {run["id"]: (0, [line("w1 late")]), other["id"]: (0, [line("free")])},
        {run["id"]: ("w1", 1)},
    )
    assert refused == {run["id"]}
    assert store.append_logs({run["id"]: (0, [line("w2 on")])}, {run["id"]: ("w2", 2)}) == set()
    assert [r["content"] for r in store.read_logs(run["id"])] == ["w2 on"]
    assert [r["content"] for r in store.read_logs(other["id"])] == ["free"]
    # once the run ended, not even its holder adds lines
    store.transition_many([(run["id"], RunStatus.COMPLETED, {})], fences={run["id"]: ("w2", 2)})
    assert store.append_logs({run["id"]: (1, [line("after")])}, {run["id"]: ("w2", 2)}) == {
        run["id"]
    }


def line(text: str) -> LogLine:
    return LogLine(text, "user", "run", "stdout", T0)


def test_the_reaper_sends_again_cancels_and_ends_lost_runs(store: Store, ws: str) -> None:
    sent: list[tuple[str, int, str]] = []
    now = [T0]
    reaper = RemoteDispatcher(store, lambda *a: sent.append(a), clock=lambda: now[0])
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=3, now=T0)
    lost, untaken, cancelled = pending_runs(store, ws, 3)
    reaper.dispatch(T0)
    assert sorted(s[0] for s in sent) == sorted(r["id"] for r in (lost, untaken, cancelled))
    assert store.take_run(lost["id"], 1, "w1", now=T0) is not None
    assert store.transition(cancelled["id"], RunStatus.CANCELLING, reason="stop it")

    # a cancelled run no worker took ends at the next look, lease or no lease
    reaper.reap(T0 + timedelta(seconds=1))
    assert store.get_run(cancelled["id"])["status"] == "cancelled"  # type: ignore[index]

    sent.clear()
    past = T0 + timedelta(seconds=DISPATCH_LEASES * LEASE + 1)
    reaper.reap(past)
    assert sent == [(untaken["id"], 1, "default")]
    ended = store.get_run(lost["id"])
    assert ended is not None and ended["status"] == "failed"
    assert ended["reason"].startswith("worker lost: worker w1 stopped renewing")
    lines = [x["content"] for x in store.read_logs(lost["id"])]
    assert any("worker lost" in line for line in lines)
    # the untaken run's lease was extended: nothing more is sent until it runs out again
    sent.clear()
    reaper.reap(past + timedelta(seconds=1))
    assert sent == []


def test_a_lost_run_whose_job_retries_crashes_is_queued_again(store: Store, ws: str) -> None:
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=1, now=T0)
    jobs = add_jobs(store, ws, job_spec("jobs.m.r"))
    policy = {"retries": 1, "delay_s": 0.0, "backoff": 2.0, "retry_on": ["crashed"]}
    result = store.create_run(run_request(jobs["jobs.m.r"], retry_policy=policy))
    assert result.run is not None
    reaper = RemoteDispatcher(store, lambda *a: None, clock=lambda: T0)
    reaper.dispatch(T0)
    assert store.take_run(result.run["id"], 1, "w1", now=T0) is not None
    reaper.reap(T0 + timedelta(seconds=LEASE + 1))
    again = store.get_run(result.run["id"])
    assert again is not None
    assert again["status"] == "pending" and again["attempt"] == 2
    assert again["worker_id"] is None and again["lease_expires_at"] is None
    assert "worker lost" in again["reason"]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_worker_frozen_inside_a_transaction_does_not_hold_the_reaper(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker frozen (SIGSTOP) between two statements of its heartbeat holds row locks
    on its runs: PostgreSQL ends that session, so the reaper ends the runs instead of
    waiting for the locks, and every dispatch of the fleet with it (seen in test_fleet)."""
    migrating = db.make_engine(db_url)  # the migrations under the usual timeout
    db.upgrade(migrating)
    migrating.dispose()
    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION_MS", 2000)
    engine = db.make_engine(db_url)
    store = Store(engine)
    ws = store.ensure_workspace("/srv/workspace", "demo")["id"]
    reaper = RemoteDispatcher(store, lambda *a: None)
    store.register_worker("w1", host="h1", pid=1, pools=["default"], slots=1, now=T0)
    (run,) = pending_runs(store, ws, 1)
    reaper.dispatch(T0)
    assert store.take_run(run["id"], 1, "w1", now=T0) is not None
    frozen = engine.connect()
    frozen.begin()
    frozen.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": run["id"]})
    try:
        reaping = threading.Thread(
            target=reaper.reap, args=(T0 + timedelta(seconds=LEASE + 1),), daemon=True
        )
        reaping.start()
        reaping.join(30)
        assert not reaping.is_alive(), "the reaper still waits for the frozen worker's lock"
        ended = store.get_run(run["id"])
        assert ended is not None and ended["reason"].startswith("worker lost")
        with pytest.raises(DBAPIError):  # the frozen worker's transaction is gone
            frozen.execute(text("SELECT 1"))
    finally:
        frozen.close()
        engine.dispose()
