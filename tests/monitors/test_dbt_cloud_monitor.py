"""The dbt Cloud monitor's polling of a job watched many times (its list of active runs),
driven turn by turn against a stub client and store: no HTTP, no clock waits."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.monitors.dbt_cloud import BATCH_MIN, PAGE, PAGES_AT_ONCE, DbtCloudMonitor, Watch

JOB = 4242


class Client:
    """dbt Cloud's runs of one job, every one running; `list_runs` waits for `release`."""

    def __init__(self, run_ids: list[int]) -> None:
        self.run_ids = run_ids
        self.release = asyncio.Event()
        self.release.set()
        self.listed: list[int] = []
        self.listing_now = 0
        self.most_at_once = 0
        self.got: list[int] = []

    async def list_runs(self, job: int, statuses: Any, **kw: Any) -> list[dict[str, Any]]:
        self.listing_now += 1
        self.most_at_once = max(self.most_at_once, self.listing_now)
        await self.release.wait()
        await asyncio.sleep(0)  # the wave's other pages are sent meanwhile
        self.listing_now -= 1
        self.listed.append(kw["offset"])
        page = self.run_ids[kw["offset"] : kw["offset"] + kw["limit"]]
        return [{"id": i, "status": 3} for i in page]

    async def get_run(self, run_id: int) -> dict[str, Any]:
        self.got.append(run_id)
        return {"id": run_id, "status": 3}


class Store:
    def active_jobs_cached(self, ws_id: str) -> list[dict[str, Any]]:
        return []

    def external_runs(self, ws_id: str, statuses: Any, limit: int = 500) -> list[Any]:
        return []


def monitor() -> DbtCloudMonitor:
    mon = DbtCloudMonitor(Store(), "ws")  # type: ignore[arg-type]
    mon._gate = asyncio.Semaphore(200)
    return mon


def watch(mon: DbtCloudMonitor, client: Client, dbt_run_id: int) -> Watch:
    w = Watch(
        f"run-{dbt_run_id}",
        dbt_run_id,
        "jobs.dbt_cloud.many",
        {"job_id": JOB, "poll_interval": 30},
        client,  # type: ignore[arg-type]
        dbt_run_id,
        None,
        3,
        datetime.now(UTC) + timedelta(days=1),
    )
    mon._watches[w.run_id] = w
    mon._schedule(w, 0)
    return w


async def settle(mon: DbtCloudMonitor) -> None:
    while mon._tasks:
        await asyncio.wait(set(mon._tasks))


def test_a_watch_due_while_its_jobs_list_is_in_flight_is_polled_after_it() -> None:
    async def scenario() -> None:
        mon = monitor()
        client = Client(list(range(1, BATCH_MIN + 2)))
        for i in range(1, BATCH_MIN + 1):
            watch(mon, client, i)
        client.release.clear()
        await mon.turn()  # the job's list poll starts and waits for its answer
        assert [k[1] for k in mon._batching] == [JOB]
        late = watch(mon, client, BATCH_MIN + 1)  # started meanwhile, due at once
        await mon.turn()
        client.release.set()
        await settle(mon)
        # the list was asked for the watches it started with: the newcomer on its own
        assert client.got == [late.dbt_run_id]
        assert late.due > time.monotonic()  # and it is on the heap again
        assert any(run_id == late.run_id and at == late.due for at, _, run_id in mon._due)

    asyncio.run(scenario())


def test_a_job_watched_many_times_is_listed_several_pages_at_once() -> None:
    async def scenario() -> None:
        mon = monitor()
        runs = list(range(1, 25 * PAGE + 1))
        client = Client(runs)
        watches = [watch(mon, client, i) for i in runs]
        await mon.turn()
        await settle(mon)
        assert sorted(client.listed) == [i * PAGE for i in range(25)]
        assert client.most_at_once == PAGES_AT_ONCE
        assert client.got == []  # every watch seen in a page
        assert all(w.due > time.monotonic() for w in watches)

    asyncio.run(scenario())
