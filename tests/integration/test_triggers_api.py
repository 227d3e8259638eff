"""The older `scripts/trigger` route, bare names, and `Idempotency-Key`, on a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("trig") / "ws")
    srv = Server(ws).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("ref", ["jobs.__deployment__.ok", "__deployment__.ok", "ok"])
def test_scripts_trigger_accepts_full_half_and_bare_names(server: Server, ref: str) -> None:
    resp = server.http.post(f"{server.w}/scripts/trigger", json={"job_refs": [ref]})
    assert resp.status_code == 201, resp.text
    (item,) = resp.json()["triggered"]
    assert item["job_ref"] == "jobs.__deployment__.ok"
    assert item["status"] == "triggered"
    assert item["script_id"] == item["job_id"] and item["run_id"] == item["job_run_id"]
    assert server.wait_run(item["run_id"])["status"] == "completed"


def test_scripts_trigger_dry_run_creates_nothing(server: Server) -> None:
    before = len(server.runs("tagged_one"))
    resp = server.http.post(
        f"{server.w}/scripts/trigger", json={"job_refs": ["tagged_one"], "dry_run": True}
    )
    assert resp.status_code == 201
    (item,) = resp.json()["triggered"]
    assert item["run_id"] is None and item["status"] == "triggered"
    assert len(server.runs("tagged_one")) == before


def test_scripts_trigger_unknown_name_is_404_and_ambiguous_is_400(server: Server) -> None:
    missing = server.http.post(f"{server.w}/scripts/trigger", json={"job_refs": ["nope"]})
    assert missing.status_code == 404 and missing.json()["code"] == "job_not_found"
    bad = server.http.post(f"{server.w}/scripts/trigger", json={"job_refs": ["a.b.c.d"]})
    assert bad.status_code == 404


def test_idempotency_key_repeat_returns_the_first_answer_and_creates_nothing(
    server: Server,
) -> None:
    job_id = server.job_id("tagged_two")
    headers = {"Idempotency-Key": "nightly-2026-11-22"}
    first = server.http.post(
        f"{server.w}/jobs/-trigger", json={"job_ids": [job_id]}, headers=headers
    )
    again = server.http.post(
        f"{server.w}/jobs/-trigger", json={"job_ids": [job_id]}, headers=headers
    )
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    run_id = first.json()["succeeded"][0]["job_run_id"]
    server.wait_run(run_id)
    # tagged_two runs only in this test: one run for two requests
    assert [r["id"] for r in server.runs("tagged_two")] == [run_id]
    other = server.http.post(
        f"{server.w}/jobs/-trigger", json={"selectors": ["tag:nightly"]}, headers=headers
    )
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


def test_idempotency_key_on_create_run(server: Server) -> None:
    body = {
        "job_id": server.job_id("greet"),
        "trigger": "manual:",
        "parameters": {"greeting": "hi"},
    }
    headers = {"Idempotency-Key": "once"}
    first = server.http.post(f"{server.w}/job-runs", json=body, headers=headers)
    second = server.http.post(f"{server.w}/job-runs", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
