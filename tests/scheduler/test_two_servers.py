"""Two servers on one PostgreSQL database, for availability: each schedule tick still
becomes exactly one run, each chain fires once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from headwater.core.states import RunStatus
from headwater.events.dispatcher import Dispatcher
from headwater.scheduler.scheduler import Scheduler
from headwater.store.db import make_engine, upgrade
from headwater.store.store import Store
from tests.scheduler.test_scheduler import T0, deploy, job_def
from tests.store.conftest import db_url, pg_database  # noqa: F401 (fixtures used below)

pytestmark = [pytest.mark.postgres]
JOBS = 1000


@pytest.fixture
def two_stores(db_url: str) -> Iterator[tuple[Store, Store]]:  # noqa: F811
    """Two stores, each on its own engine (its own connections), on one database."""
    # commits need not wait for the disk here: what is tested is who writes what, and
    # 1,000 jobs x 5 ticks x 2 servers are ~20,000 commits
    url = make_url(db_url)
    options = f"{url.query.get('options', '')} -csynchronous_commit=off".strip()
    fast = url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    a, b = make_engine(fast), make_engine(fast)
    upgrade(a)
    try:
        yield Store(a), Store(b)
    finally:
        a.dispose()
        b.dispose()


@pytest.fixture
def backend() -> str:
    return "postgresql"


def test_two_schedulers_make_each_tick_one_run_none_missed(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    ws = a.ensure_workspace("/w", "w")["id"]
    deploy(a, ws, *(job_def(f"j{i}", ["schedule:* * * * *"]) for i in range(JOBS)))
    servers = [Scheduler(a, ws), Scheduler(b, ws)]
    with ThreadPoolExecutor(2) as pool:
        # five minutes of fake time, both servers looking at each moment together: first
        # sight, then a second past each minute
        for minute in range(6):
            at = T0 + timedelta(minutes=minute, seconds=1 if minute else 0)
            list(pool.map(lambda s, at=at: s.run_once(at), servers))
    with a.engine.connect() as conn:
        per_tick = conn.execute(
            text("SELECT job_id, dedupe_key, count(*) FROM runs GROUP BY job_id, dedupe_key")
        ).all()
        jobs_with_runs = conn.execute(text("SELECT count(DISTINCT job_id) FROM runs")).scalar()
    assert all(n == 1 for _job, _key, n in per_tick)
    counts = Counter(job for job, _key, _n in per_tick)
    assert jobs_with_runs == JOBS
    assert set(counts.values()) == {5}  # 12:01 ... 12:05, each once


def test_two_dispatchers_fire_each_chain_once(two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    ws = a.ensure_workspace("/w", "w")["id"]
    jobs = deploy(
        a,
        ws,
        job_def("up", []),
        job_def("down", ["job.success:jobs.m.up"]),
    )
    from headwater.workspace.launch import fire

    ups = []
    for i in range(20):
        result = fire(a, jobs["up"], "manual:jobs.m.up", now=T0 + timedelta(seconds=i))
        assert result.run is not None
        a.transition(result.run["id"], RunStatus.STARTING, worker_id="w")
        a.transition(result.run["id"], RunStatus.RUNNING)
        a.transition(result.run["id"], RunStatus.COMPLETED, exit_code=0)
        ups.append(result.run["id"])
    dispatchers = [Dispatcher(a, ws), Dispatcher(b, ws)]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            list(pool.map(lambda d: d.run_once(T0 + timedelta(minutes=1)), dispatchers))
    downs = a.list_runs(ws, job_id=jobs["down"]["id"], limit=1000)[0]
    assert sorted(r["previous_run_id"] for r in downs) == sorted(ups)
