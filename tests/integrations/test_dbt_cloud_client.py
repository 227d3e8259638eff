"""The dbt Cloud client against the local fake of the API: envelopes, the transport rules
(R5) and the acceptance cases T11-T13 of debounced-trigger.md."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from headwater.integrations.dbt_cloud import (
    DbtCloudClient,
    DbtCloudError,
    Retry,
    RunPostUnknown,
)
from tests.fakes.dbt_cloud import FakeDbtCloud

JOB = 67890


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDbtCloud]:
    with FakeDbtCloud() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(fake: FakeDbtCloud) -> None:
    fake.reset()
    fake.add_job(JOB, account_id=12345)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def client(
    fake: FakeDbtCloud, token: str | None = None, **kw: Any
) -> tuple[DbtCloudClient, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return (
        DbtCloudClient(fake.url, 12345, token or fake.token, sleep=sleep, rand=lambda: 1.0, **kw),
        slept,
    )


def test_a_run_is_started_read_and_listed_with_status_in_as_one_json_list(
    fake: FakeDbtCloud,
) -> None:
    c, _ = client(fake)

    async def go() -> tuple[dict, dict, list]:
        started = await c.trigger_run(JOB, "Headwater: manual", steps_override=["dbt build"])
        got = await c.get_run(started["id"])
        active = await c.list_runs(JOB, [1, 2, 3])
        return started, got, active

    started, got, active = run(go())
    assert started["status"] == 1 and started["href"].endswith(f"/runs/{started['id']}/")
    assert got["id"] == started["id"]
    assert [r["id"] for r in active] == [started["id"]]
    listed = fake.requests("GET", r"/runs/$")
    assert listed[-1]["query"].count("status__in") == 1
    assert "status__in=%5B1%2C+2%2C+3%5D" in listed[-1]["query"]


def test_t11_429_with_retry_after_is_honoured_then_one_run_is_made(fake: FakeDbtCloud) -> None:
    fake.fault("POST", r"/jobs/\d+/run/$", status=429, retry_after=2, times=2)
    c, slept = client(fake)
    started = run(c.trigger_run(JOB, "x"))
    assert slept == [2.0, 2.0]
    assert len(fake.requests("POST", r"/run/$")) == 3
    assert [r["id"] for r in fake.runs()] == [started["id"]]


def test_t12_500_on_listing_after_retries_fails_without_posting(fake: FakeDbtCloud) -> None:
    fake.fault("GET", r"/runs/$", status=500, times=10)
    c, slept = client(fake, retry=Retry(attempts=3, base_s=1, max_s=4))
    with pytest.raises(DbtCloudError, match="500"):
        run(c.list_runs(JOB, [1, 2, 3]))
    assert slept == [1.0, 2.0]  # capped exponential backoff (jitter pinned to the full step)
    assert fake.requests("POST") == []


def test_t13_a_cause_with_quotes_and_non_ascii_is_escaped_and_cut_to_255(
    fake: FakeDbtCloud,
) -> None:
    c, _ = client(fake)
    cause = 'Héadwater "load" ✓ ' + "x" * 400
    started = run(c.trigger_run(JOB, cause))
    assert len(started["cause"]) == 255
    assert started["cause"].startswith('Héadwater "load" ✓ ')


def test_a_bad_token_or_job_fails_with_dbt_clouds_message_and_no_retry(fake: FakeDbtCloud) -> None:
    c, slept = client(fake, token="wrong")
    with pytest.raises(DbtCloudError, match="401: Invalid token"):
        run(c.trigger_run(JOB, "x"))
    c, slept = client(fake)
    with pytest.raises(DbtCloudError, match="404: Job not found"):
        run(c.trigger_run(1, "x"))
    assert slept == []


def test_a_post_that_timed_out_is_never_repeated_blindly(fake: FakeDbtCloud) -> None:
    fake.fault("POST", r"/run/$", delay=2.0)
    c, _ = client(fake, http=httpx.AsyncClient(timeout=httpx.Timeout(0.5, connect=5)))
    with pytest.raises(RunPostUnknown):
        run(c.trigger_run(JOB, "look me up"))
    assert len(fake.requests("POST", r"/run/$")) == 1


def test_cancel_of_a_finished_run_answers_it_as_it_is(fake: FakeDbtCloud) -> None:
    done = fake.add_run(JOB, frozen=True, status=10)
    active = fake.add_run(JOB, frozen=True, status=3)
    c, _ = client(fake)

    async def go() -> list[int]:
        return [(await c.cancel_run(r["id"]))["status"] for r in (done, active)]

    assert run(go()) == [10, 30]


def test_artifacts_come_back_raw(fake: FakeDbtCloud) -> None:
    done = fake.add_run(JOB, frozen=True, status=20)
    c, _ = client(fake)
    results = json.loads(run(c.get_artifact(done["id"], "run_results.json")))
    assert results["results"][1]["status"] == "fail"
