"""The store's behaviour, the same on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, insert, text

from headwater.core.policy import TriggerStatus
from headwater.core.specs import JobSpec, LogLine, RunRequest
from headwater.core.states import RunStatus
from headwater.store.db import make_engine, sqlite_url, upgrade, write
from headwater.store.models import Cursor, ScheduleCursor
from headwater.store.store import Store

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
MODULE = "__deployment__"
T = TypeVar("T")


# -- helpers ----------------------------------------------------------------------------------


def job_spec(
    ref: str = "jobs.m.a",
    *,
    concurrency: int | None = 1,
    pipeline_name: str | None = None,
    triggers: tuple[str, ...] = (),
    function: str | None = None,
) -> JobSpec:
    """A job as dlt would hand it over: a minimal definition plus what is derived from it."""
    definition: dict[str, Any] = {
        "engine_version": 2,
        "job_ref": ref,
        "entry_point": {
            "module": "m",
            "function": function or ref.rsplit(".", 1)[-1],
            "job_type": "batch",
            "launcher": "dlt._workspace.deployment.launchers.job",
        },
        "triggers": list(triggers),
        "execute": {"concurrency": concurrency},
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    return JobSpec(
        job_ref=ref,
        job_type="batch",
        definition=definition,
        definition_hash=digest,
        triggers=[*triggers, f"manual:{ref}"],
        default_trigger=None,
        pipeline_name=pipeline_name,
    )


def manifest_of(*specs: JobSpec) -> tuple[dict[str, Any], str]:
    manifest = {"engine_version": 2, "jobs": [s.definition for s in specs]}
    return manifest, hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def deploy(
    store: Store, ws: str, *specs: JobSpec, module: str | None = MODULE, dry_run: bool = False
) -> tuple[int | None, dict[str, Any]]:
    """Deploy `specs` as one manifest; answers the new version and outcomes by job ref."""
    manifest, digest = manifest_of(*specs)
    version, outcomes = store.deploy(ws, manifest, digest, [], specs, module, dry_run=dry_run)
    return version, {o.job["job_ref"]: o for o in outcomes}


def add_jobs(store: Store, ws: str, *specs: JobSpec) -> dict[str, dict[str, Any]]:
    deploy(store, ws, *specs)
    jobs, _ = store.list_jobs(ws)
    return {j["job_ref"]: j for j in jobs}


def run_request(
    job: dict[str, Any], trigger: str | None = None, *, concurrency: int | None = 1, **kw: Any
) -> RunRequest:
    return RunRequest(
        job_id=job["id"],
        trigger=trigger or f"manual:{job['job_ref']}",
        concurrency=concurrency,
        **kw,
    )


def all_at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run `fn(i)` in `n` threads released together by a barrier; answers the results."""
    barrier = threading.Barrier(n)

    def go(i: int) -> T:
        barrier.wait(timeout=10)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(go, range(n)))


def event_kinds(store: Store, after: int = 0) -> list[str]:
    return [e["kind"] for e in store.events_after(after)]


def to_running(store: Store, run_id: str) -> None:
    assert store.transition(run_id, RunStatus.STARTING, worker_id="w") is not None
    assert store.transition(run_id, RunStatus.RUNNING) is not None


def wait_until_blocked(engine: Engine, backend: str, thread: threading.Thread) -> None:
    """Until `thread` waits for a lock held by another transaction (or has finished)."""
    if backend != "postgresql":
        # a SQLite writer waits inside the driver's busy handler, which cannot be observed
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while thread.is_alive() and time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.01)
    assert not thread.is_alive(), f"{thread.name} neither blocked on a lock nor finished"


# -- workspace --------------------------------------------------------------------------------


def test_workspace_keeps_its_id_and_follows_a_moved_path(store: Store) -> None:
    first = store.ensure_workspace("/a", "demo")
    again = store.ensure_workspace("/b", "demo")
    assert again["id"] == first["id"]
    assert again["path"] == "/b"
    assert store.get_workspace(first["id"])["path"] == "/b"  # type: ignore[index]


# -- deploy -----------------------------------------------------------------------------------


def test_first_deploy_creates_jobs_and_manifest_version(store: Store, ws: str) -> None:
    version, outcomes = deploy(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))

    assert version == 1
    assert {ref: o.outcome for ref, o in outcomes.items()} == {
        "jobs.m.a": "created",
        "jobs.m.b": "created",
    }
    jobs, total = store.list_jobs(ws)
    assert total == 2
    assert [j["job_ref"] for j in jobs] == ["jobs.m.a", "jobs.m.b"]
    job = jobs[0]
    assert job["version"] == 1 and job["run_counter"] == 0
    assert job["definition"] == job_spec("jobs.m.a").definition
    first = store.get_job_version(job["current_version_id"])
    assert first is not None
    assert first["version"] == 1 and first["definition_hash"] == job["definition_hash"]
    latest = store.latest_manifest(ws)
    assert latest is not None and latest["version"] == 1
    assert latest["hash"] == manifest_of(job_spec("jobs.m.a"), job_spec("jobs.m.b"))[1]
    assert event_kinds(store) == ["deployment.loaded"]


def test_redeploy_with_same_definition_leaves_job_unchanged(store: Store, ws: str) -> None:
    deploy(store, ws, job_spec("jobs.m.a"))
    before = store.list_jobs(ws)[0][0]

    # same job definition, but a different manifest (another job joins)
    version, outcomes = deploy(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))

    assert version == 2
    assert outcomes["jobs.m.a"].outcome == "unchanged"
    assert outcomes["jobs.m.a"].previous_version is None
    after = store.get_job(before["id"])
    assert after == before


def test_redeploy_of_same_manifest_hash_adds_no_manifest_version(store: Store, ws: str) -> None:
    deploy(store, ws, job_spec("jobs.m.a"))
    last_event = store.last_event_id()

    version, outcomes = deploy(store, ws, job_spec("jobs.m.a"))

    assert version is None
    assert outcomes["jobs.m.a"].outcome == "unchanged"
    assert store.latest_manifest(ws)["version"] == 1  # type: ignore[index]
    assert store.events_after(last_event) == []


def test_changed_definition_updates_job_to_new_version(store: Store, ws: str) -> None:
    deploy(store, ws, job_spec("jobs.m.a"))
    v1 = store.list_jobs(ws)[0][0]

    version, outcomes = deploy(store, ws, job_spec("jobs.m.a", function="a2"))

    assert version == 2
    updated = outcomes["jobs.m.a"]
    assert updated.outcome == "updated"
    assert updated.previous_version is not None
    assert updated.previous_version["id"] == v1["current_version_id"]
    assert updated.previous_version["version"] == 1
    assert updated.previous_version["definition_hash"] == v1["definition_hash"]
    v2 = store.get_job(v1["id"])
    assert v2 is not None
    assert v2["version"] == 2
    assert v2["definition"]["entry_point"]["function"] == "a2"
    assert v2["current_version_id"] != v1["current_version_id"]
    new_version = store.get_job_version(v2["current_version_id"])
    assert new_version is not None
    assert new_version["version"] == 2
    assert new_version["definition_hash"] == v2["definition_hash"] != v1["definition_hash"]
    # the old version stays readable: runs made with it still point at it
    assert store.get_job_version(v1["current_version_id"]) == updated.previous_version


def test_job_missing_from_next_manifest_is_archived_and_keeps_its_runs(
    store: Store, ws: str
) -> None:
    jobs = add_jobs(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))
    run = store.create_run(run_request(jobs["jobs.m.b"])).run
    assert run is not None

    _, outcomes = deploy(store, ws, job_spec("jobs.m.a"))

    assert outcomes["jobs.m.b"].outcome == "archived"
    assert outcomes["jobs.m.a"].outcome == "unchanged"
    b = store.get_job(jobs["jobs.m.b"]["id"])
    assert b is not None and b["is_archived"] is True
    assert [j["job_ref"] for j in store.list_jobs(ws, is_archived=True)[0]] == ["jobs.m.b"]
    assert [j["job_ref"] for j in store.active_jobs(ws)] == ["jobs.m.a"]
    assert store.get_run(run["id"]) == run
    assert store.list_runs(ws, job_id=b["id"])[1] == 1
    # an archived job takes no new runs
    refused = store.create_run(run_request(b))
    assert refused.decision.status is TriggerStatus.SKIPPED_ARCHIVED
    assert refused.run is None


def test_jobs_of_another_deployment_module_are_not_archived(store: Store, ws: str) -> None:
    deploy(store, ws, job_spec("jobs.other.x"), module="other")
    deploy(store, ws, job_spec("jobs.m.a"), module=MODULE)

    _, outcomes = deploy(store, ws, job_spec("jobs.m.b"), module=MODULE)

    assert {ref: o.outcome for ref, o in outcomes.items()} == {
        "jobs.m.b": "created",
        "jobs.m.a": "archived",
    }
    assert sorted(j["job_ref"] for j in store.active_jobs(ws)) == ["jobs.m.b", "jobs.other.x"]


def test_archived_job_that_returns_is_revived(store: Store, ws: str) -> None:
    deploy(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))
    deploy(store, ws, job_spec("jobs.m.a"))

    _, outcomes = deploy(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))

    assert outcomes["jobs.m.b"].outcome == "updated"
    b = store.list_jobs(ws, ref="jobs.m.b")[0][0]
    assert b["is_archived"] is False
    assert b["version"] == 1  # same definition: no new job version


def test_dry_run_deploy_writes_nothing(store: Store, ws: str) -> None:
    version, outcomes = deploy(store, ws, job_spec("jobs.m.a"), dry_run=True)

    assert version is None
    assert outcomes["jobs.m.a"].outcome == "created"
    assert store.list_jobs(ws) == ([], 0)
    assert store.latest_manifest(ws) is None
    assert store.last_event_id() == 0

    # nor on a deployed workspace: no update, no archive, no version
    deploy(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))
    jobs_before = store.list_jobs(ws)
    last_event = store.last_event_id()
    version, outcomes = deploy(store, ws, job_spec("jobs.m.a", function="a2"), dry_run=True)
    assert version is None
    assert outcomes["jobs.m.a"].outcome == "updated"
    assert outcomes["jobs.m.b"].outcome == "archived"
    assert store.list_jobs(ws) == jobs_before
    assert store.latest_manifest(ws)["version"] == 1  # type: ignore[index]
    assert store.last_event_id() == last_event


# -- create_run -------------------------------------------------------------------------------


def test_runs_are_numbered_per_job(store: Store, ws: str) -> None:
    jobs = add_jobs(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))
    a, b = jobs["jobs.m.a"], jobs["jobs.m.b"]

    numbers_a = [store.create_run(run_request(a, concurrency=None)).run["number"] for _ in range(3)]  # type: ignore[index]
    number_b = store.create_run(run_request(b, concurrency=None)).run["number"]  # type: ignore[index]

    assert numbers_a == [1, 2, 3]
    assert number_b == 1
    assert store.get_job(a["id"])["run_counter"] == 3  # type: ignore[index]


def test_new_run_is_pending_with_an_event(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", pipeline_name="p"))["jobs.m.a"]
    last_event = store.last_event_id()

    result = store.create_run(
        run_request(job, parameters={"x": 1}, profile="prod", dedupe_key="k"), now=T0
    )

    assert result.decision.status is TriggerStatus.TRIGGERED
    assert result.existing is False
    run = result.run
    assert run is not None
    assert store.get_run(run["id"]) == run
    assert run["status"] == "pending"
    assert run["job_version_id"] == job["current_version_id"]
    assert run["pipeline_name"] == "p"
    assert run["parameters"] == {"x": 1} and run["profile"] == "prod"
    assert run["created_at"] == T0 and run["finished_at"] is None
    (event,) = store.events_after(last_event)
    assert event["kind"] == "run.pending" and event["run_id"] == run["id"]
    assert event["payload"] == {"trigger": "manual:jobs.m.a", "job_ref": "jobs.m.a"}


def test_second_trigger_of_busy_job_is_skipped(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    first = store.create_run(run_request(job), now=T0).run
    assert first is not None

    second = store.create_run(run_request(job), now=T0 + timedelta(seconds=1))

    assert second.decision.status is TriggerStatus.SKIPPED_CONCURRENCY_LIMIT
    assert second.run is not None
    assert second.run["status"] == "skipped"
    assert second.run["number"] == 2
    assert "concurrency limit is 1" in second.run["reason"]
    assert second.run["finished_at"] == T0 + timedelta(seconds=1)
    assert store.get_run(second.run["id"]) == second.run
    assert event_kinds(store)[-1] == "run.skipped"

    # still busy while the first one runs ...
    to_running(store, first["id"])
    third = store.create_run(run_request(job))
    assert third.decision.status is TriggerStatus.SKIPPED_CONCURRENCY_LIMIT
    assert third.run["status"] == "skipped"  # type: ignore[index]
    # ... and free once it ended
    store.transition(first["id"], RunStatus.COMPLETED, exit_code=0)
    fourth = store.create_run(run_request(job))
    assert fourth.decision.status is TriggerStatus.TRIGGERED
    assert fourth.run["number"] == 4  # type: ignore[index]


def test_job_without_concurrency_limit_never_skips(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]

    results = [store.create_run(run_request(job, concurrency=None)) for _ in range(5)]

    assert {r.decision.status for r in results} == {TriggerStatus.TRIGGERED}
    runs, total = store.list_runs(ws, job_id=job["id"], statuses=["pending"])
    assert total == 5


def test_paused_job_skips_timed_trigger_without_recording_a_run(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", triggers=("schedule:0 6 * * *",)))["jobs.m.a"]
    paused = store.set_paused(job["id"], True)
    assert paused is not None and paused["is_paused"] is True
    assert store.get_job(job["id"])["is_paused"] is True  # type: ignore[index]

    tick = store.create_run(run_request(job, "schedule:0 6 * * *"))

    assert tick.decision.status is TriggerStatus.SKIPPED_PAUSED
    assert tick.run is None
    assert store.list_runs(ws, job_id=job["id"]) == ([], 0)
    assert store.get_job(job["id"])["run_counter"] == 0  # type: ignore[index]


def test_paused_job_still_runs_manual_trigger(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    store.set_paused(job["id"], True)

    manual = store.create_run(run_request(job, "manual:jobs.m.a"))

    assert manual.decision.status is TriggerStatus.TRIGGERED
    assert manual.run is not None and manual.run["status"] == "pending"


def test_same_dedupe_key_twice_gives_one_run(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    key = f"schedule:0 6 * * *@{T0.isoformat()}"

    first = store.create_run(run_request(job, concurrency=None, dedupe_key=key))
    second = store.create_run(run_request(job, concurrency=None, dedupe_key=key))

    assert first.existing is False and second.existing is True
    assert second.run == first.run
    assert store.list_runs(ws, job_id=job["id"])[1] == 1
    # another key is another run
    third = store.create_run(run_request(job, concurrency=None, dedupe_key=key + "x"))
    assert third.existing is False and third.run["number"] == 2  # type: ignore[index]


def test_dry_run_trigger_creates_nothing(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    last_event = store.last_event_id()

    result = store.create_run(run_request(job), dry_run=True)

    assert result.decision.status is TriggerStatus.TRIGGERED
    assert result.run is None
    assert store.list_runs(ws) == ([], 0)
    assert store.get_job(job["id"])["run_counter"] == 0  # type: ignore[index]
    assert store.last_event_id() == last_event


def test_trigger_of_unknown_job_raises_key_error(store: Store, ws: str) -> None:
    with pytest.raises(KeyError):
        store.create_run(RunRequest(job_id="no-such-job", trigger="manual:x"))


def test_runs_are_listed_newest_first(store: Store, ws: str) -> None:
    jobs = add_jobs(store, ws, job_spec("jobs.m.a"), job_spec("jobs.m.b"))
    a, b = jobs["jobs.m.a"], jobs["jobs.m.b"]
    made = [
        store.create_run(run_request(job, concurrency=None), now=T0 + timedelta(minutes=i)).run
        for i, job in enumerate([a, b, a, a])
    ]

    runs, total = store.list_runs(ws)
    assert total == 4
    assert [r["id"] for r in runs] == [r["id"] for r in reversed(made)]  # type: ignore[index]
    page, total = store.list_runs(ws, job_id=a["id"], limit=2, offset=1)
    assert total == 3 and [r["number"] for r in page] == [2, 1]
    assert [r["id"] for r in store.list_runs(ws, number=2)[0]] == [made[2]["id"]]  # type: ignore[index]

    latest = store.latest_runs([a["id"], b["id"]])
    assert {k: v["id"] for k, v in latest.items()} == {
        a["id"]: made[3]["id"],  # type: ignore[index]
        b["id"]: made[1]["id"],  # type: ignore[index]
    }
    assert store.latest_runs([]) == {}


def test_datetimes_come_back_as_aware_utc(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    cest = timezone(timedelta(hours=2))
    start = datetime(2026, 3, 1, 8, 0, tzinfo=cest)

    run = store.create_run(
        run_request(job, interval_start=start, interval_end=start + timedelta(days=1)), now=T0
    ).run
    stored = store.get_run(run["id"])  # type: ignore[index]

    assert stored is not None
    assert stored["interval_start"] == start
    assert stored["interval_start"].tzinfo is UTC
    assert stored["interval_start"].hour == 6
    assert stored["created_at"] == T0 and stored["created_at"].tzinfo is UTC


def test_naive_datetime_is_refused(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    with pytest.raises(Exception, match="naive datetime"):
        store.create_run(run_request(job), now=datetime(2026, 3, 1))
    assert store.list_runs(ws) == ([], 0)


# -- the concurrency invariant under real concurrency ------------------------------------------


def test_concurrent_triggers_of_busy_job_create_exactly_one_pending_run(
    store: Store, ws: str
) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]

    results = all_at_once(20, lambda i: store.create_run(run_request(job, concurrency=1)))

    statuses = Counter(r.decision.status for r in results)
    assert statuses == {
        TriggerStatus.TRIGGERED: 1,
        TriggerStatus.SKIPPED_CONCURRENCY_LIMIT: 19,
    }
    runs, total = store.list_runs(ws, job_id=job["id"])
    assert total == 20
    assert Counter(r["status"] for r in runs) == {"pending": 1, "skipped": 19}
    assert sorted(r["number"] for r in runs) == list(range(1, 21))
    assert store.get_job(job["id"])["run_counter"] == 20  # type: ignore[index]


def test_concurrent_triggers_with_distinct_keys_are_all_numbered(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]

    results = all_at_once(
        20, lambda i: store.create_run(run_request(job, concurrency=None, dedupe_key=f"k{i}"))
    )

    assert all(r.decision.status is TriggerStatus.TRIGGERED for r in results)
    runs, total = store.list_runs(ws, job_id=job["id"])
    assert total == 20
    assert {r["status"] for r in runs} == {"pending"}
    assert sorted(r["number"] for r in runs) == list(range(1, 21))
    assert sorted(r["dedupe_key"] for r in runs) == sorted(f"k{i}" for i in range(20))


def test_concurrent_triggers_with_the_same_dedupe_key_give_one_run(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]

    results = all_at_once(
        10, lambda i: store.create_run(run_request(job, concurrency=None, dedupe_key="tick"))
    )

    assert sum(not r.existing for r in results) == 1
    assert len({r.run["id"] for r in results}) == 1  # type: ignore[index]
    assert store.list_runs(ws, job_id=job["id"])[1] == 1


def test_a_failing_trigger_in_a_combined_batch_fails_alone(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    missing = {**job, "id": "no-such-job"}

    def trigger(i: int) -> object:
        try:
            return store.create_run(run_request(missing if i % 5 == 0 else job, concurrency=None))
        except KeyError as ex:
            return ex

    results = all_at_once(20, trigger)

    assert sum(isinstance(r, KeyError) for r in results) == 4
    runs, total = store.list_runs(ws, job_id=job["id"])
    assert total == 16
    assert sorted(r["number"] for r in runs) == list(range(1, 17))


# -- triggers from an event loop (the API's trigger routes) ---------------------------------------


def _gather(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """`fn(i)` for i < n, all awaited together on one event loop."""

    async def main() -> list[Any]:
        return await asyncio.gather(*(fn(i) for i in range(n)), return_exceptions=True)

    return asyncio.run(main())


def test_async_triggers_of_busy_job_create_exactly_one_pending_run(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]

    results = _gather(20, lambda i: store.create_run_async(run_request(job, concurrency=1)))

    assert Counter(r.decision.status for r in results) == {
        TriggerStatus.TRIGGERED: 1,
        TriggerStatus.SKIPPED_CONCURRENCY_LIMIT: 19,
    }
    runs, total = store.list_runs(ws, job_id=job["id"])
    assert Counter(r["status"] for r in runs) == {"pending": 1, "skipped": 19}
    assert sorted(r["number"] for r in runs) == list(range(1, 21))
    assert store.get_job(job["id"])["run_counter"] == 20  # type: ignore[index]


def test_async_triggers_of_two_jobs_are_numbered_per_job_and_deduped(store: Store, ws: str) -> None:
    jobs = add_jobs(
        store, ws, job_spec("jobs.m.a", concurrency=None), job_spec("jobs.m.b", concurrency=None)
    )
    a, b = jobs["jobs.m.a"], jobs["jobs.m.b"]

    def trigger(i: int) -> Any:
        job = a if i % 2 else b
        # every third trigger of a job repeats one dedupe key: one run for all of them
        key = "tick" if i % 3 == 0 else None
        return store.create_run_async(run_request(job, concurrency=None, dedupe_key=key))

    results = _gather(30, trigger)

    assert not [r for r in results if isinstance(r, BaseException)]
    for job in (a, b):
        runs, total = store.list_runs(ws, job_id=job["id"])
        assert sorted(r["number"] for r in runs) == list(range(1, total + 1))
        assert sum(r["dedupe_key"] == "tick" for r in runs) == 1
    assert len({r.run["id"] for r in results}) == 30 - 10 + 2  # type: ignore[union-attr]


def test_an_async_trigger_of_a_missing_job_fails_alone(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    missing = {**job, "id": "no-such-job"}

    results = _gather(
        10,
        lambda i: store.create_run_async(run_request(missing if i == 3 else job, concurrency=None)),
    )

    assert [type(r) for r in results].count(KeyError) == 1
    assert store.list_runs(ws, job_id=job["id"])[1] == 9


def test_async_triggers_wait_for_a_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    """SQLite: while another writer holds the database, the loop keeps running; the
    triggers are recorded once it lets go."""
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    store = Store(engine)
    ws = store.ensure_workspace(str(tmp_path), "ws")["id"]
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with write(store.engine):
            held.set()
            release.wait(5)

    threading.Thread(target=writer, daemon=True).start()
    assert held.wait(5)

    async def main() -> tuple[int, list[Any]]:
        triggers = asyncio.gather(
            *(store.create_run_async(run_request(job, concurrency=None)) for _ in range(5))
        )
        ticks = 0
        for _ in range(20):  # the loop turns while the triggers wait
            await asyncio.sleep(0.01)
            ticks += 1
        assert not triggers.done()
        release.set()
        return ticks, await asyncio.wait_for(triggers, 5)

    ticks, results = asyncio.run(main())
    assert ticks == 20
    assert sorted(r.run["number"] for r in results) == [1, 2, 3, 4, 5]


def test_two_stores_on_one_database_trigger_one_busy_job_once(
    store: Store, ws: str, db_url: str
) -> None:
    """Two processes (here two engines) combine their triggers apart, and still exclude."""
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    other = Store(make_engine(db_url))
    try:
        results = all_at_once(
            20, lambda i: (store if i % 2 else other).create_run(run_request(job, concurrency=1))
        )
    finally:
        other.engine.dispose()

    statuses = Counter(r.decision.status for r in results)
    assert statuses == {
        TriggerStatus.TRIGGERED: 1,
        TriggerStatus.SKIPPED_CONCURRENCY_LIMIT: 19,
    }
    assert sorted(r["number"] for r in store.list_runs(ws, job_id=job["id"])[0]) == list(
        range(1, 21)
    )


# -- transition -------------------------------------------------------------------------------


def test_transition_out_of_a_terminal_state_is_refused(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run
    to_running(store, run["id"])  # type: ignore[index]
    done = store.transition(run["id"], RunStatus.COMPLETED, exit_code=0)  # type: ignore[index]
    assert done is not None
    last_event = store.last_event_id()

    assert store.transition(run["id"], RunStatus.RUNNING) is None  # type: ignore[index]
    assert store.transition(run["id"], RunStatus.FAILED) is None  # type: ignore[index]
    assert store.get_run(run["id"]) == done  # type: ignore[index]
    assert store.last_event_id() == last_event


def test_transition_skipping_a_state_is_refused(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run

    assert store.transition(run["id"], RunStatus.RUNNING) is None  # type: ignore[index]
    assert store.transition(run["id"], RunStatus.COMPLETED) is None  # type: ignore[index]
    assert store.get_run(run["id"])["status"] == "pending"  # type: ignore[index]


def test_transition_of_unknown_run_answers_none(store: Store) -> None:
    assert store.transition("no-such-run", RunStatus.STARTING) is None


def test_racing_transitions_from_pending_have_one_winner(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run
    assert run is not None

    results = all_at_once(
        8, lambda i: store.transition(run["id"], RunStatus.STARTING, worker_id=f"w{i}")
    )

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert store.get_run(run["id"])["worker_id"] == winners[0]["worker_id"]  # type: ignore[index]
    assert event_kinds(store).count("run.starting") == 1


@pytest.mark.parametrize(
    ("path", "final"),
    [
        ([RunStatus.STARTING, RunStatus.RUNNING], RunStatus.COMPLETED),
        ([RunStatus.STARTING, RunStatus.RUNNING], RunStatus.FAILED),
        ([RunStatus.STARTING], RunStatus.FAILED),
        ([], RunStatus.CANCELLED),
        ([RunStatus.STARTING, RunStatus.RUNNING, RunStatus.CANCELLING], RunStatus.CANCELLED),
        ([RunStatus.STARTING, RunStatus.RUNNING, RunStatus.CANCELLING], RunStatus.COMPLETED),
    ],
    ids=lambda v: "-".join(s.value for s in v) if isinstance(v, list) else v.value,
)
def test_terminal_transition_sets_finished_at_and_writes_an_event(
    store: Store, ws: str, path: list[RunStatus], final: RunStatus
) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job), now=T0).run
    assert run is not None
    for i, step in enumerate(path, start=1):
        moved = store.transition(run["id"], step, now=T0 + timedelta(seconds=i))
        assert moved is not None and moved["finished_at"] is None
    last_event = store.last_event_id()
    end = T0 + timedelta(minutes=5)

    done = store.transition(run["id"], final, now=end, exit_code=3, reason="why")

    assert done is not None
    assert done["status"] == final.value
    assert done["finished_at"] == end and done["updated_at"] == end
    assert done["exit_code"] == 3
    assert store.get_run(run["id"]) == done
    (event,) = store.events_after(last_event)
    assert event["kind"] == f"run.{final.value}"
    assert event["run_id"] == run["id"] and event["job_id"] == job["id"]
    assert event["payload"] == {"reason": "why", "exit_code": 3}


def test_starting_sets_started_at(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job), now=T0).run

    started = store.transition(run["id"], RunStatus.STARTING, now=T0 + timedelta(seconds=2))  # type: ignore[index]

    assert started is not None
    assert started["started_at"] == T0 + timedelta(seconds=2)
    assert started["finished_at"] is None


# -- claim_next -------------------------------------------------------------------------------


def test_claim_next_takes_the_oldest_pending_run_first(store: Store, ws: str) -> None:
    jobs = add_jobs(store, ws, *(job_spec(f"jobs.m.{n}") for n in "abc"))
    # created out of job order, so FIFO is by creation time
    made = [
        store.create_run(run_request(jobs[ref]), now=T0 + timedelta(seconds=i)).run
        for i, ref in enumerate(["jobs.m.c", "jobs.m.a", "jobs.m.b"])
    ]
    skipped = store.create_run(run_request(jobs["jobs.m.a"]), now=T0 + timedelta(seconds=9)).run
    assert skipped is not None and skipped["status"] == "skipped"
    last_event = store.last_event_id()

    claimed = [store.claim_next("w1", now=T0 + timedelta(minutes=1)) for _ in range(4)]

    assert [c["id"] if c else None for c in claimed] == [r["id"] for r in made] + [None]  # type: ignore[index]
    first = claimed[0]
    assert first is not None
    assert first["status"] == "starting" and first["worker_id"] == "w1"
    assert first["started_at"] == T0 + timedelta(minutes=1)
    assert store.get_run(first["id"]) == first
    assert event_kinds(store, last_event) == ["run.starting"] * 3
    assert {r["id"] for r in store.live_runs()} == {r["id"] for r in made}  # type: ignore[index]
    assert store.live_runs("w2") == []


def test_claim_next_on_empty_queue_answers_none(store: Store) -> None:
    assert store.claim_next("w1") is None


def test_run_sharing_a_pipeline_waits_until_the_live_run_ends(store: Store, ws: str) -> None:
    jobs = add_jobs(
        store,
        ws,
        job_spec("jobs.m.a", pipeline_name="shared"),
        job_spec("jobs.m.b", pipeline_name="shared"),
    )
    first = store.create_run(run_request(jobs["jobs.m.a"]), now=T0).run
    second = store.create_run(run_request(jobs["jobs.m.b"]), now=T0 + timedelta(seconds=1)).run
    assert first is not None and second is not None

    assert store.claim_next("w1")["id"] == first["id"]  # type: ignore[index]
    assert store.claim_next("w2") is None

    waiting = store.get_run(second["id"])
    assert waiting is not None and waiting["status"] == "pending"
    assert waiting["reason"] is not None
    assert waiting["reason"].startswith("waiting: pipeline 'shared'")

    store.transition(first["id"], RunStatus.RUNNING)
    assert store.claim_next("w2") is None  # still live
    store.transition(first["id"], RunStatus.COMPLETED, exit_code=0)

    claimed = store.claim_next("w2")
    assert claimed is not None and claimed["id"] == second["id"]
    assert claimed["reason"] is None and claimed["worker_id"] == "w2"


def test_waiting_run_does_not_block_runs_of_other_pipelines(store: Store, ws: str) -> None:
    jobs = add_jobs(
        store,
        ws,
        job_spec("jobs.m.a", pipeline_name="shared"),
        job_spec("jobs.m.b", pipeline_name="shared"),
        job_spec("jobs.m.c", pipeline_name="other"),
        job_spec("jobs.m.d"),
    )
    for i, ref in enumerate(["jobs.m.a", "jobs.m.b", "jobs.m.c", "jobs.m.d"]):
        store.create_run(run_request(jobs[ref]), now=T0 + timedelta(seconds=i))

    claimed = [store.claim_next("w") for _ in range(4)]

    refs = [c["job_id"] if c else None for c in claimed]
    ids = {j["id"]: ref for ref, j in jobs.items()}
    assert [ids.get(r) if r else None for r in refs] == ["jobs.m.a", "jobs.m.c", "jobs.m.d", None]


def test_claim_many_takes_the_oldest_startable_runs_and_one_per_pipeline(
    store: Store, ws: str
) -> None:
    jobs = add_jobs(
        store,
        ws,
        job_spec("jobs.m.a", pipeline_name="shared"),
        job_spec("jobs.m.b", pipeline_name="shared"),
        job_spec("jobs.m.c", pipeline_name="other"),
        job_spec("jobs.m.d"),
        job_spec("jobs.m.e"),
    )
    for i, ref in enumerate(["jobs.m.a", "jobs.m.b", "jobs.m.c", "jobs.m.d", "jobs.m.e"]):
        store.create_run(run_request(jobs[ref]), now=T0 + timedelta(seconds=i))
    names = {j["id"]: ref for ref, j in jobs.items()}

    first = store.claim_many("w", 3)
    # b shares a's pipeline, claimed in the same call: it waits
    assert [names[r["job_id"]] for r in first] == ["jobs.m.a", "jobs.m.c", "jobs.m.d"]
    assert {r["status"] for r in first} == {"starting"}
    rest = store.claim_many("w", 10)
    assert [names[r["job_id"]] for r in rest] == ["jobs.m.e"]
    assert store.claim_many("w", 10) == []


def test_transition_many_moves_what_may_move_in_one_call(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    a, b = (store.create_run(run_request(job, concurrency=None)).run for _ in range(2))
    assert a is not None and b is not None
    store.claim_many("w", 2)

    moved = store.transition_many(
        [
            (a["id"], RunStatus.RUNNING, {"pid": 11}),
            (b["id"], RunStatus.COMPLETED, {"exit_code": 0}),  # starting -> completed: illegal
        ]
    )

    assert moved[0] is not None and moved[0]["status"] == "running" and moved[0]["pid"] == 11
    assert moved[1] is None
    assert store.get_run(b["id"])["status"] == "starting"  # type: ignore[index]
    done = store.transition_many([(a["id"], RunStatus.COMPLETED, {"exit_code": 0})])
    assert done[0] is not None and done[0]["finished_at"] is not None


def test_concurrent_claimers_never_claim_the_same_run_twice(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    for i in range(30):
        store.create_run(run_request(job, concurrency=None), now=T0 + timedelta(milliseconds=i))

    def drain(i: int) -> list[str]:
        mine: list[str] = []
        while (run := store.claim_next(f"w{i}")) is not None:
            mine.append(run["id"])
        return mine

    per_worker = all_at_once(8, drain)

    claimed = [run_id for ids in per_worker for run_id in ids]
    assert len(claimed) == 30
    assert len(set(claimed)) == 30
    runs, _ = store.list_runs(ws)
    assert {r["status"] for r in runs} == {"starting"}
    by_worker = {r["id"]: r["worker_id"] for r in runs}
    for i, ids in enumerate(per_worker):
        assert all(by_worker[run_id] == f"w{i}" for run_id in ids)
    assert event_kinds(store).count("run.starting") == 30


def test_claim_waits_for_a_pipeline_claimed_by_an_uncommitted_claim(
    store: Store,
    ws: str,
    engine: Engine,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Two workers claiming at the same moment never start two runs of one pipeline."""
    jobs = add_jobs(
        store,
        ws,
        job_spec("jobs.m.a", pipeline_name="shared"),
        job_spec("jobs.m.b", pipeline_name="shared"),
    )
    first = store.create_run(run_request(jobs["jobs.m.a"]), now=T0).run
    second = store.create_run(run_request(jobs["jobs.m.b"]), now=T0 + timedelta(seconds=1)).run
    assert first is not None and second is not None

    # worker A stops inside its claim transaction, after its UPDATE, before its commit
    in_claim, release = threading.Event(), threading.Event()
    write_event = store._event

    def event_then_pause(*args: Any, **kwargs: Any) -> None:
        write_event(*args, **kwargs)
        if threading.current_thread().name == "worker-a":
            in_claim.set()
            release.wait(10)

    monkeypatch.setattr(store, "_event", event_then_pause)
    claims: dict[str, dict[str, Any] | None] = {}

    def claim() -> None:
        name = threading.current_thread().name
        claims[name] = store.claim_next(name)

    a = threading.Thread(target=claim, name="worker-a")
    b = threading.Thread(target=claim, name="worker-b")
    try:
        a.start()
        assert in_claim.wait(10), "worker A never reached its claim"
        b.start()
        wait_until_blocked(engine, backend, b)
    finally:
        release.set()
        a.join(10)
        b.join(10)

    assert claims["worker-a"] is not None and claims["worker-a"]["id"] == first["id"]
    assert claims["worker-b"] is None, "a second run of pipeline 'shared' was started"
    waiting = store.get_run(second["id"])
    assert waiting is not None and waiting["status"] == "pending"
    assert waiting["reason"].startswith("waiting: pipeline 'shared'")
    assert [r["id"] for r in store.live_runs()] == [first["id"]]


# -- request_cancel ---------------------------------------------------------------------------


def test_cancel_of_pending_run_ends_it_at_once(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run

    cancelled = store.request_cancel(run["id"], reason="user said so")  # type: ignore[index]

    assert cancelled is not None
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_requested"] is True
    assert cancelled["reason"] == "user said so"
    assert cancelled["finished_at"] is not None
    assert store.claim_next("w") is None
    assert event_kinds(store)[-1] == "run.cancelled"


@pytest.mark.parametrize("live", [RunStatus.STARTING, RunStatus.RUNNING])
def test_cancel_of_live_run_asks_the_worker_to_stop(store: Store, ws: str, live: RunStatus) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run
    assert run is not None
    store.transition(run["id"], RunStatus.STARTING)
    if live is RunStatus.RUNNING:
        store.transition(run["id"], RunStatus.RUNNING)

    cancelling = store.request_cancel(run["id"])

    assert cancelling is not None
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancel_requested"] is True
    assert cancelling["finished_at"] is None
    assert [r["id"] for r in store.live_runs()] == [run["id"]]
    # the worker then ends it
    ended = store.transition(run["id"], RunStatus.CANCELLED)
    assert ended is not None and ended["finished_at"] is not None


def test_cancel_of_finished_run_changes_nothing(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    run = store.create_run(run_request(job)).run
    to_running(store, run["id"])  # type: ignore[index]
    done = store.transition(run["id"], RunStatus.COMPLETED, exit_code=0)  # type: ignore[index]

    assert store.request_cancel(run["id"]) == done  # type: ignore[index]
    assert store.request_cancel("no-such-run") is None


# -- logs -------------------------------------------------------------------------------------


def lines(*texts: str) -> list[LogLine]:
    return [
        LogLine(content=t, source="user", stage="run", io_stream="stdout", reported_at=T0)
        for t in texts
    ]


def test_logs_are_read_back_in_order_per_run(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", concurrency=None))["jobs.m.a"]
    a = store.create_run(run_request(job, concurrency=None)).run["id"]  # type: ignore[index]
    b = store.create_run(run_request(job, concurrency=None)).run["id"]  # type: ignore[index]
    assert store.next_line_num(a) == 0

    store.append_logs({a: (0, lines("a0", "a1")), b: (0, lines("b0"))})
    store.append_logs({a: (store.next_line_num(a), lines("a2", "a3", "a4"))})
    store.append_logs({b: (store.next_line_num(b), lines("b1"))})
    store.append_logs({})

    assert [r["content"] for r in store.read_logs(a)] == ["a0", "a1", "a2", "a3", "a4"]
    assert [r["line_num"] for r in store.read_logs(a)] == [0, 1, 2, 3, 4]
    assert [r["content"] for r in store.read_logs(b)] == ["b0", "b1"]
    assert [r["content"] for r in store.read_logs(a, after=2)] == ["a3", "a4"]
    assert [r["content"] for r in store.read_logs(a, after=0, limit=2)] == ["a1", "a2"]
    assert store.read_logs(a, after=4) == []
    assert store.next_line_num(a) == 5 and store.next_line_num(b) == 2
    first = store.read_logs(b)[0]
    assert first["source"] == "user" and first["io_stream"] == "stdout"
    assert first["reported_at"] == T0


# -- events and cursors -----------------------------------------------------------------------


def test_events_are_read_after_a_position_in_order(store: Store, ws: str) -> None:
    assert store.last_event_id() == 0
    assert store.events_after(0) == []
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    position = store.last_event_id()

    run = store.create_run(run_request(job)).run
    store.set_paused(job["id"], True)
    store.set_paused(job["id"], True)  # no change, no event
    store.set_paused(job["id"], False)

    events = store.events_after(position)
    assert [e["kind"] for e in events] == ["run.pending", "job.paused", "job.resumed"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(e["id"] > position for e in events)
    assert events[0]["run_id"] == run["id"]  # type: ignore[index]
    assert all(e["workspace_id"] == ws and e["job_id"] == job["id"] for e in events)
    assert store.last_event_id() == events[-1]["id"]
    assert [e["kind"] for e in store.events_after(position, limit=2)] == [
        "run.pending",
        "job.paused",
    ]


def test_cursor_is_stored_and_moved(store: Store) -> None:
    assert store.get_cursor("events") is None

    store.set_cursor("events", 5)
    store.set_cursor("other", 1)
    store.set_cursor("events", 2**40)

    assert store.get_cursor("events") == 2**40
    assert store.get_cursor("other") == 1


def test_first_writes_of_a_cursor_from_two_places_do_not_collide(
    store: Store, engine: Engine, backend: str, request: pytest.FixtureRequest
) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.set_cursor("events", 2)
        except BaseException as e:  # re-raised in the test's thread below
            errors.append(e)

    writer = threading.Thread(target=write)
    # another process writes the same new cursor and has not committed yet
    with engine.connect() as other:
        other.execute(insert(Cursor.__table__).values(name="events", position=1))
        writer.start()
        wait_until_blocked(engine, backend, writer)
        other.commit()
    writer.join(10)

    assert errors == []
    assert store.get_cursor("events") == 2


def test_schedule_cursor_never_moves_backwards(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    trigger = "schedule:0 * * * *"
    assert store.schedule_cursors() == {}

    store.advance_schedule(job["id"], trigger, T0)
    store.advance_schedule(job["id"], trigger, T0 - timedelta(hours=1))
    assert store.schedule_cursors() == {(job["id"], trigger): T0}

    store.advance_schedule(job["id"], trigger, T0 + timedelta(hours=1))
    store.advance_schedule(job["id"], trigger, T0 + timedelta(hours=1))
    store.advance_schedule(job["id"], "every:5m", T0)
    cursors = store.schedule_cursors()
    assert cursors == {(job["id"], trigger): T0 + timedelta(hours=1), (job["id"], "every:5m"): T0}
    assert all(t.tzinfo is UTC for t in cursors.values())

    store.drop_schedule(job["id"], keep=[trigger])
    assert list(store.schedule_cursors()) == [(job["id"], trigger)]


def test_first_advances_of_a_schedule_from_two_places_keep_the_newest_tick(
    store: Store, ws: str, engine: Engine, backend: str, request: pytest.FixtureRequest
) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    trigger = "schedule:0 * * * *"
    errors: list[BaseException] = []

    def advance() -> None:
        try:
            store.advance_schedule(job["id"], trigger, T0 + timedelta(hours=1))
        except BaseException as e:  # re-raised in the test's thread below
            errors.append(e)

    writer = threading.Thread(target=advance)
    # another scheduler records an older tick and has not committed yet
    with engine.connect() as other:
        other.execute(
            insert(ScheduleCursor.__table__).values(job_id=job["id"], trigger=trigger, last_tick=T0)
        )
        writer.start()
        wait_until_blocked(engine, backend, writer)
        other.commit()
    writer.join(10)

    assert errors == []
    assert store.schedule_cursors() == {(job["id"], trigger): T0 + timedelta(hours=1)}


def test_resuming_a_job_restarts_its_schedules_from_now(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    store.advance_schedule(job["id"], "schedule:0 * * * *", T0)
    store.set_paused(job["id"], True)

    store.set_paused(job["id"], False)

    (tick,) = store.schedule_cursors().values()
    assert abs(tick - datetime.now(UTC)) < timedelta(minutes=1)


# -- packages a run uses, archived workspaces, published jobs ---------------------------------


def test_a_run_records_the_packages_of_the_newest_manifest_version(store: Store, ws: str) -> None:
    spec = job_spec("jobs.m.a")
    job = add_jobs(store, ws, spec)["jobs.m.a"]
    local = store.create_run(run_request(job)).run
    assert local is not None  # the workspace folder: no packages
    assert (local["code_package_id"], local["config_package_id"]) == (None, None)
    store.transition(local["id"], RunStatus.CANCELLED)

    manifest, digest = manifest_of(spec)
    store.deploy(ws, manifest, digest, [], [spec], MODULE, code_package_id="c1")
    store.deploy(
        ws, manifest, digest, [], [spec], MODULE, code_package_id="c2", config_package_id="k1"
    )
    run = store.create_run(run_request(job)).run
    assert run is not None
    assert (run["code_package_id"], run["config_package_id"]) == ("c2", "k1")
    assert store.get_run(run["id"]) == run
    # runs created before keep what they were created on
    assert store.get_run(local["id"])["code_package_id"] is None  # type: ignore[index]


def test_an_archived_workspace_starts_no_run_until_unarchived(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a", triggers=("schedule:0 6 * * *",)))["jobs.m.a"]
    store.advance_schedule(job["id"], "schedule:0 6 * * *", T0 - timedelta(days=3))
    before = store.last_event_id()

    archived = store.set_workspace_archived(ws, True)
    assert archived is not None and archived["archived_at"] is not None
    # archiving again changes nothing, not even the moment it was archived
    again = store.set_workspace_archived(ws, True)
    assert again is not None and again["archived_at"] == archived["archived_at"]
    assert store.get_workspace(ws)["archived_at"] == archived["archived_at"]  # type: ignore[index]

    for trigger in ("manual:jobs.m.a", "schedule:0 6 * * *", "job.success:jobs.m.b"):
        refused = store.create_run(run_request(job, trigger))
        assert refused.decision.status is TriggerStatus.SKIPPED_ARCHIVED
        assert refused.decision.reasons == ["workspace is archived; unarchive it to run jobs"]
        assert refused.run is None
    dry = store.create_run(run_request(job), dry_run=True)
    assert dry.decision.status is TriggerStatus.SKIPPED_ARCHIVED
    assert store.list_runs(ws)[1] == 0

    back = store.set_workspace_archived(ws, False)
    assert back is not None and back["archived_at"] is None
    # schedule ticks missed while archived are not made up: the cursor restarts from now
    (cursor,) = store.schedule_cursors().values()
    assert cursor > T0
    assert store.create_run(run_request(job)).decision.status is TriggerStatus.TRIGGERED
    assert event_kinds(store, before)[:2] == ["workspace.archived", "workspace.unarchived"]


def test_publishing_gives_a_job_one_secret_until_unpublished(store: Store, ws: str) -> None:
    job = add_jobs(store, ws, job_spec("jobs.m.a"))["jobs.m.a"]
    assert job["public_secret"] is None

    published = store.set_published(job["id"], True)
    assert published is not None
    secret = published["public_secret"]
    assert secret is not None and str(uuid.UUID(secret)) == secret
    assert store.set_published(job["id"], True)["public_secret"] == secret  # type: ignore[index]
    assert store.published_job(secret)["id"] == job["id"]  # type: ignore[index]

    unpublished = store.set_published(job["id"], False)
    assert unpublished is not None and unpublished["public_secret"] is None
    assert store.get_job(job["id"])["public_secret"] is None  # type: ignore[index]
    assert store.published_job(secret) is None
    assert store.set_published("no-such-job", True) is None


# -- API keys -----------------------------------------------------------------------------------


def test_revoking_an_ambiguous_key_name_revokes_nothing_and_names_the_candidates(
    store: Store, ws: str
) -> None:
    from headwater.store.keys import AmbiguousKeyError

    a, _ = store.create_key(ws, "twin", "admin")
    b, _ = store.create_key(ws, "twin", "trigger")
    with pytest.raises(AmbiguousKeyError) as raised:
        store.revoke_key(ws, "twin")
    assert {c["id"] for c in raised.value.candidates} == {a["id"], b["id"]}
    assert all(k["revoked_at"] is None for k in store.list_keys(ws))

    (revoked,) = store.revoke_key(ws, b["id"])
    assert revoked["id"] == b["id"]
    # one active key left by that name: it is no longer ambiguous
    (revoked,) = store.revoke_key(ws, "twin")
    assert revoked["id"] == a["id"]
    assert store.revoke_key(ws, "twin") == []
