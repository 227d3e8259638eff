"""Overlap modes and locks of headwater.toml in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

from headwater.core.states import RunStatus
from headwater.store.store import Store
from tests.store.test_store import add_jobs, job_spec, run_request, to_running


def test_replace_cancels_a_pending_run_and_stops_a_running_one(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    running = store.create_run(run_request(job, concurrency=None)).run
    pending = store.create_run(run_request(job, concurrency=None)).run
    assert running is not None and pending is not None
    to_running(store, running["id"])

    result = store.create_run(run_request(job, overlap="replace"))

    new = result.run
    assert result.decision.creates_run and new is not None
    assert result.decision.reasons == ["overlap replace: cancels 2 active run(s)"]
    gone = store.get_run(pending["id"])
    stopping = store.get_run(running["id"])
    assert gone is not None and gone["status"] == "cancelled"
    assert gone["reason"] == f"replaced by run {new['number']} (overlap replace)"
    assert stopping is not None and stopping["status"] == "cancelling"
    assert stopping["cancel_requested"] is True
    assert store.get_run(new["id"])["status"] == "pending"  # type: ignore[index]


def test_replace_within_one_batch_cancels_the_run_the_batch_made(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    first = store.create_run(run_request(job, overlap="replace")).run
    second = store.create_run(run_request(job, overlap="replace")).run
    assert first is not None and second is not None
    assert store.get_run(first["id"])["status"] == "cancelled"  # type: ignore[index]
    assert store.get_run(second["id"])["status"] == "pending"  # type: ignore[index]


def test_ignore_starts_beside_an_active_run(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    assert store.create_run(run_request(job)).run is not None
    skipped = store.create_run(run_request(job))
    assert not skipped.decision.creates_run
    ignored = store.create_run(run_request(job, overlap="ignore"))
    assert ignored.decision.creates_run


def test_runs_sharing_a_lock_wait_for_it_and_name_the_holder(store: Store, ws: str) -> None:
    jobs = add_jobs(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"), job_spec("jobs.m.c"))
    lock = {"warehouse": 1}
    a = store.create_run(run_request(jobs["jobs.m.a"], locks=lock)).run
    b = store.create_run(run_request(jobs["jobs.m.b"], locks=lock)).run
    c = store.create_run(run_request(jobs["jobs.m.c"])).run
    assert a is not None and b is not None and c is not None

    claimed = store.claim_many("w", 10)

    assert [r["id"] for r in claimed] == [a["id"], c["id"]]
    waiting = store.get_run(b["id"])
    assert waiting is not None and waiting["status"] == "pending"
    assert waiting["reason"] == (
        f"waiting for lock 'warehouse' (1 of 1 held by run {a['number']} of jobs.m.a)"
    )
    assert store.claim_many("w", 10) == []
    # the lock frees when its holder ends: the waiting run is claimed next
    assert store.transition(a["id"], RunStatus.RUNNING) is not None
    assert store.transition(a["id"], RunStatus.COMPLETED, exit_code=0) is not None
    assert [r["id"] for r in store.claim_many("w", 10)] == [b["id"]]


def test_a_lock_of_capacity_two_admits_two(store: Store, ws: str) -> None:
    jobs = add_jobs(store, ws, *(dataclasses.replace(job_spec(f"jobs.m.j{i}")) for i in range(3)))
    runs = [
        store.create_run(run_request(jobs[f"jobs.m.j{i}"], locks={"w": 2})).run for i in range(3)
    ]
    assert len(store.claim_many("w", 10)) == 2
    last = store.get_run(runs[2]["id"])  # type: ignore[index]
    assert last is not None and last["reason"].startswith("waiting for lock 'w' (2 of 2 held by")
