"""`/metrics` on a real server: what a scrape with a read key shows after runs completed,
failed and were rejected; refused without a key or with a trigger key; the same answer
from any of several API processes (prometheus-client's multiprocess mode); the optional
keyless address."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Server, free_port, served

pytestmark = pytest.mark.integration

WORKSPACE = """
import dlt.hub.run as run
from dlt.hub.run import trigger


@run.job
def good():
    print("fine")


@run.job
def bad():
    raise RuntimeError("no")


@run.job(trigger=trigger.schedule("0 3 * * *"))
def nightly():
    print("night")


__all__ = ["good", "bad", "nightly"]
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict, name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module", params=["one-process", "two-api-processes", "remote"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`up` with its own worker (one API process or two), or with remote workers."""
    ws = tmp_path_factory.mktemp("metrics") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    extra = ("--api-processes", "2") if request.param == "two-api-processes" else ()
    where = "remote" if request.param == "remote" else "local"
    with served(ws, where, *extra, "--metrics-address", f"127.0.0.1:{free_port()}") as server:
        yield server


def scrape(srv: Server, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{srv.url}/metrics", headers=headers, timeout=30)


def test_a_scrape_shows_runs_outcomes_durations_queue_and_rejections(srv: Server) -> None:
    for name in ("good", "good", "bad"):
        srv.wait_run(srv.start_run(name)["id"], timeout=60)
    srv.post(f"{srv.w}/jobs/{srv.job_id('nightly')}/-pause")
    srv.post(f"{srv.w}/jobs/-trigger", json={"selectors": ["schedule:*"]})  # paused: rejected
    read_key = srv.cli("key", "create", "--name", "prometheus", "--scope", "read").stdout.strip()
    for _ in range(4):  # any API process answers for the whole server
        answer = scrape(srv, read_key)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        got = samples(answer.text)
        good, bad = "jobs.__deployment__.good", "jobs.__deployment__.bad"
        assert value(got, "headwater_runs_ended_total", job=good, outcome="completed") == 2
        assert value(got, "headwater_runs_ended_total", job=bad, outcome="failed") == 1
        assert value(got, "headwater_runs_started_total", job=good) == 2
        assert value(got, "headwater_run_duration_seconds_count", job=good) == 2
        assert value(got, "headwater_run_duration_seconds_bucket", job=good, le="+Inf") == 2
        assert ("headwater_queue_depth", ()) in got
        assert ("headwater_oldest_pending_age_seconds", ()) in got
        assert (
            value(
                got,
                "headwater_trigger_rejections_total",
                job="jobs.__deployment__.nightly",
                status="skipped_paused",
            )
            == 1
        )
        latency = [k for k in got if k[0] == "headwater_api_request_duration_seconds_count"]
        routes = {dict(k[1])["route"] for k in latency}
        assert "/api/v1/workspaces/{ws}/jobs/-trigger" in routes  # templates, not ids
        assert not any(srv.ws_id in r for r in routes)


def test_a_scrape_needs_a_read_key(srv: Server) -> None:
    assert scrape(srv, None).status_code == 401
    trigger_key = srv.cli("key", "create", "--name", "ci", "--scope", "trigger").stdout.strip()
    assert scrape(srv, trigger_key).status_code == 403
    assert scrape(srv, srv.key).status_code == 200  # admin


def test_the_metrics_address_answers_without_a_key(srv: Server) -> None:
    address = srv.extra[srv.extra.index("--metrics-address") + 1]
    answer = httpx.get(f"http://{address}/metrics", timeout=30)
    assert answer.status_code == 200
    assert "headwater_runs_ended_total" in answer.text


def test_run_lists_page_by_cursor(srv: Server) -> None:
    first = srv.get(f"{srv.w}/job-runs", params={"limit": 1})
    seen = [r["id"] for r in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = srv.get(f"{srv.w}/job-runs", params={"limit": 1, "cursor": cursor})
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
    everything = [r["id"] for r in srv.get(f"{srv.w}/job-runs", params={"limit": 1000})["items"]]
    assert seen == everything and len(seen) >= 3
    bad = srv.http.get(f"{srv.w}/job-runs", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    manual = srv.get(f"{srv.w}/job-runs", params={"trigger_kind": "manual", "limit": 1000})
    assert {r["trigger"].split(":")[0] for r in manual["items"]} == {"manual"}


def test_interval_and_backfill_routes_check_keys_and_input(srv: Server) -> None:
    job = srv.job_id("nightly")
    reader = key_for(srv, "read")
    trigger = key_for(srv, "trigger")
    routes = [f"{srv.w}/jobs/{job}/intervals", f"{srv.w}/backfills", f"{srv.w}/backfills/1"]
    for path in routes:
        assert httpx.get(srv.url + path, timeout=30).status_code == 401
    assert httpx.get(srv.url + routes[0], headers=bearer(reader), timeout=30).status_code == 200
    body = {"start": "2026-11-01", "end": "2026-11-03", "dry_run": True}
    url = f"{srv.url}{srv.w}/jobs/{job}/-backfill"
    for k in (None, reader, trigger):
        headers = bearer(k) if k else {}
        assert httpx.post(url, json=body, headers=headers, timeout=30).status_code in (401, 403)
    admin = bearer(srv.key)
    for odd in ({"start": "x", "end": "y"}, {"start": "2026-11-03", "end": "2026-11-01"},
                {**body, "extra": 1}, {"start": "9" * 5000, "end": "2026-11-01"}):  # fmt: skip
        answer = httpx.post(url, json=odd, headers=admin, timeout=30)
        assert answer.status_code == 400, (odd, answer.text[:200])
    cancel = httpx.post(f"{srv.url}{srv.w}/backfills/999/-cancel", headers=admin, timeout=30)
    assert cancel.status_code == 404


def key_for(srv: Server, scope: str) -> str:
    return srv.cli(
        "key", "create", "--name", f"k-{scope}-{free_port()}", "--scope", scope
    ).stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
