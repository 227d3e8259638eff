"""Runs report what their pipelines did: real dlt pipelines into DuckDB under `headwater up`.

Nothing in the job code mentions Headwater: each run gets `RUNTIME__DLTHUB_DSN`, dlt
PUTs its traces and the declared job result to the run's beacon, and the run answers,
the telemetry routes, the SDK and the `dlthub` CLI read them back. Every test runs
three times: runs forked from the warm launcher, runs in a new interpreter (`--no-warm`),
and runs on a remote worker (`headwater worker`, PostgreSQL and RabbitMQ).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlthub_sdk
import httpx
import pytest

from headwater.core import beacon
from headwater.store.vault import load_key
from tests.integration.harness import Server, remote_server, run_dlthub

pytestmark = pytest.mark.integration

WORKSPACE = """
import os

import dlt
import dlt.hub.run as run


def _pipeline(name):
    path = os.path.join(os.getcwd(), "telemetry.duckdb")
    return dlt.pipeline(name, destination=dlt.destinations.duckdb(path), dataset_name="raw")


@run.job
def load():
    _pipeline("tele_items").run([{"n": i} for i in range(5)], table_name="items")
    run.result({"rows": 5, "tables": ["items"]}, type="etl_summary")


@run.job
def two():
    _pipeline("tele_one").run([{"a": 1}], table_name="one")
    _pipeline("tele_two").run([{"b": 1}, {"b": 2}, {"b": 3}], table_name="two")


@run.job
def broken():
    @dlt.resource
    def bad():
        yield {"a": 1}
        raise ValueError("source exploded")

    _pipeline("tele_broken").run(bad())


@run.job
def quiet():
    print("no pipeline here")


__all__ = ["load", "two", "broken", "quiet"]
"""


@pytest.fixture(scope="module", params=["fork", "fresh", "remote"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp(f"telemetry-{request.param}") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    if request.param == "remote":
        # on a worker of another host: its dlt reports to the server it was sent from
        with remote_server(ws) as server:
            server.start()
            server.mode = "fork"  # type: ignore[attr-defined]
            yield server
        return
    server = Server(ws, *(["--no-warm"] if request.param == "fresh" else []))
    server.start(wait_warm=request.param == "fork")
    server.mode = request.param  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def finished(srv: Server, name: str) -> dict[str, Any]:
    run = srv.wait_run(srv.start_run(name)["id"], timeout=90)
    assert run["launch_mode"] == srv.mode  # type: ignore[attr-defined]
    return run


def tele(srv: Server) -> str:
    return f"/telemetry/v1/workspaces/{srv.ws_id}"


def test_a_pipeline_run_shows_in_the_run_answer(srv: Server) -> None:
    run = finished(srv, "load")
    assert run["status"] == "completed", srv.logs(run["id"])
    (summary,) = run["pipeline_run_summaries"]
    assert summary["pipeline_name"] == "tele_items"
    assert summary["status"] == "succeeded"
    assert summary["total_rows"] == 5
    assert (summary["destination_name"], summary["dataset_name"]) == ("duckdb", "raw")
    assert summary["transaction_id"] and summary["pipeline_run_id"]
    assert summary["duration_ms"] >= 0 and summary["started_at"] <= summary["finished_at"]

    detail = srv.get(f"{tele(srv)}/pipeline-runs/{summary['pipeline_run_id']}")
    assert detail["job_run_id"] == run["id"]
    assert detail["total_rows_extracted"] == detail["total_rows_loaded"] == 5
    assert [t["table_name"] for t in detail["tables"]] == ["items"]
    assert detail["tables"][0]["rows_loaded"] == 5
    assert (
        detail["load_package_count"] == 1 and detail["load_packages"][0]["load_status"] == "loaded"
    )
    trace = srv.get(f"{tele(srv)}/pipeline-runs/{summary['pipeline_run_id']}/trace")
    assert trace["transaction_id"] == summary["transaction_id"]
    assert [s["step"] for s in trace["steps"]] == ["extract", "normalize", "load"]


def test_every_pipeline_of_a_run_is_listed_and_run_lists_carry_them(srv: Server) -> None:
    run = finished(srv, "two")
    names = [(s["pipeline_name"], s["total_rows"]) for s in run["pipeline_run_summaries"]]
    assert names == [("tele_one", 1), ("tele_two", 3)]
    listed = {r["id"]: r for r in srv.runs()}
    assert listed[run["id"]]["pipeline_run_summaries"] == run["pipeline_run_summaries"]
    quiet = finished(srv, "quiet")
    assert quiet["status"] == "completed" and quiet["pipeline_run_summaries"] == []

    page = srv.get(f"{tele(srv)}/pipeline-runs", params={"job_run_id": run["id"]})
    assert page["total"] == 2
    assert {p["pipeline_name"] for p in page["items"]} == {"tele_one", "tele_two"}
    only = srv.get(f"{tele(srv)}/pipeline-runs", params={"pipeline_name": "tele_two"})
    assert [p["job_run_id"] for p in only["items"]] == [run["id"]]


def test_a_failing_pipeline_is_a_failed_pipeline_run(srv: Server) -> None:
    run = finished(srv, "broken")
    assert run["status"] == "failed"
    (summary,) = run["pipeline_run_summaries"]
    assert (summary["pipeline_name"], summary["status"]) == ("tele_broken", "failed")
    detail = srv.get(f"{tele(srv)}/pipeline-runs/{summary['pipeline_run_id']}")
    assert detail["error_step"] == "extract"
    assert "source exploded" in detail["error_message"]
    assert (
        "ValueError" in detail["error_traceback"] or "source exploded" in detail["error_traceback"]
    )
    failed = srv.get(f"{tele(srv)}/pipeline-runs", params={"status": "failed"})
    assert [p["id"] for p in failed["items"]] == [summary["pipeline_run_id"]]


def test_the_declared_job_result_is_served(srv: Server) -> None:
    run = finished(srv, "load")
    result = srv.get(f"{tele(srv)}/job-runs/{run['id']}/result")
    assert result["job_run_id"] == run["id"]
    assert result["job_ref"] == "jobs.__deployment__.load"
    assert result["result_type"] == "job.etl_summary"
    assert result["result"] == {"rows": 5, "tables": ["items"]}
    envelope = srv.get(f"{tele(srv)}/job-runs/{run['id']}/result-trace")
    assert envelope["type"] == "job.etl_summary" and envelope["engine_version"] == 1
    quiet = finished(srv, "quiet")
    missing = srv.http.get(f"{tele(srv)}/job-runs/{quiet['id']}/result-trace")
    assert missing.status_code == 404 and missing.json()["code"] == "job_result_not_found"


def test_the_sdk_reads_pipeline_runs_and_the_job_result(srv: Server) -> None:
    run = finished(srv, "load")
    with dlthub_sdk.connect(token=srv.key, base_url=srv.url) as runtime:
        ws = runtime.workspaces.get(id=srv.ws_id)
        (listed,) = list(ws.telemetry.pipeline_runs.list(job_run_id=run["id"]))
        assert listed.pipeline_name == "tele_items" and listed.total_rows_loaded == 5
        got = ws.telemetry.pipeline_runs.get(id=listed.id)
        assert [t.table_name for t in got.tables] == ["items"]
        result = ws.job_runs.result(id=run["id"])
        assert result.result == {"rows": 5, "tables": ["items"]}
        assert result.result_type == "job.etl_summary"
        assert ws.telemetry.status().updated_at is not None
        (summary,) = ws.job_runs.get(id=run["id"]).pipeline_run_summaries
        assert (summary.pipeline_name, summary.status, summary.total_rows) == (
            "tele_items",
            "succeeded",
            5,
        )
        assert summary.pipeline_run_id == listed.id


def test_pipeline_and_dataset_stats_add_up_the_window_s_runs(srv: Server) -> None:
    finished(srv, "two")
    finished(srv, "two")
    finished(srv, "broken")
    runs = srv.get(f"{tele(srv)}/pipeline-runs", params={"limit": 1000})["items"]
    two = [r for r in runs if r["pipeline_name"] == "tele_two"]

    page = srv.get(f"{tele(srv)}/pipelines/-/stats", params={"pipeline_name": "tele_two"})
    (stats,) = page["items"]
    assert page["total"] == 1 and stats["pipeline_name"] == "tele_two"
    assert stats["total_pipeline_run_count"] == len(two) >= 2
    assert stats["succeeded_pipeline_run_count"] == len(two) and stats["success_ratio"] == 1.0
    assert stats["total_rows_loaded"] == sum(r["total_rows_loaded"] for r in two)
    assert stats["latest_dataset_name"] == "raw" and stats["latest_destination_name"]
    assert stats["latest_status"] == "succeeded"

    failing = srv.get(f"{tele(srv)}/pipelines/-/stats", params={"latest_status": "failed"})
    assert [x["pipeline_name"] for x in failing["items"]] == ["tele_broken"]
    newest_first = srv.get(f"{tele(srv)}/pipelines/-/stats")["items"]
    assert newest_first[0]["pipeline_name"] == "tele_broken"  # ran last
    by_count = srv.get(
        f"{tele(srv)}/pipelines/-/stats",
        params=[("sort", "total_pipeline_run_count"), ("order", "desc")],
    )["items"]
    counts = [x["total_pipeline_run_count"] for x in by_count]
    assert counts == sorted(counts, reverse=True)
    bad = srv.http.get(f"{tele(srv)}/pipelines/-/stats", params={"sort": "nope", "order": "asc"})
    assert bad.status_code == 400 and bad.json()["code"] == "bad_sort"

    (raw,) = srv.get(f"{tele(srv)}/datasets/-/stats", params={"dataset_name": "raw"})["items"]
    in_raw = [r for r in runs if r["dataset_name"] == "raw"]
    assert raw["total_pipeline_run_count"] == len(in_raw)
    assert raw["distinct_pipeline_count"] == len({r["pipeline_name"] for r in in_raw})
    newest = max(in_raw, key=lambda r: (r["started_at"], r["id"]))
    assert raw["latest_pipeline_run_id"] == newest["id"]
    assert raw["latest_pipeline_name"] == newest["pipeline_name"]
    assert raw["latest_status"] == newest["status"]
    assert raw["succeeded_pipeline_run_count"] == sum(r["status"] == "succeeded" for r in in_raw)

    # the official SDK reads both
    with dlthub_sdk.connect(token=srv.key, base_url=srv.url) as runtime:
        ws = runtime.workspaces.get(id=srv.ws_id)
        (activity,) = list(ws.telemetry.pipelines(pipeline_name="tele_two"))
        assert activity.total_pipeline_run_count == len(two)
        assert activity.failed_pipeline_run_count == 0
        (dataset,) = list(ws.telemetry.datasets(dataset_name="raw"))
        assert dataset.distinct_pipeline_count == raw["distinct_pipeline_count"]


def dlthub(srv: Server, local: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_dlthub(srv, srv.key, local, local.parent / "home", *args)


def test_dlthub_job_runs_result_prints_the_result(srv: Server) -> None:
    finished(srv, "quiet")
    run = finished(srv, "load")
    local = srv.workspace.parent / "local"
    (local / ".dlt").mkdir(parents=True, exist_ok=True)
    (local / ".dlt" / ".workspace").touch()  # the dlthub plugin registers only in a workspace
    (local / "__deployment__.py").write_text(WORKSPACE)
    (local.parent / "home").mkdir(exist_ok=True)

    shown = dlthub(srv, local, "job", "runs", "result", "load")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "job.etl_summary" in shown.stdout, shown.stdout
    assert "jobs.__deployment__.load" in shown.stdout, shown.stdout
    assert '"rows": 5' in shown.stdout, shown.stdout

    payload = dlthub(srv, local, "job", "runs", "result", "load", "--only-payload")
    assert payload.returncode == 0, payload.stdout + payload.stderr
    assert json.loads(payload.stdout) == {"rows": 5, "tables": ["items"]}

    as_json = dlthub(srv, local, "job", "runs", "result", run["id"], "--json")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    assert json.loads(as_json.stdout)["type"] == "job.etl_summary"

    none = dlthub(srv, local, "job", "runs", "result", "quiet")
    assert none.returncode != 0
    assert "declared no job result" in none.stdout + none.stderr


def beacon_url(srv: Server, run_id: str, kind: str) -> str:
    return f"{tele(srv)}/job-runs/{run_id}/-beacon/{kind}"


def run_secret(srv: Server, run_id: str) -> str:
    """What the server puts in the run's DSN: derived from the workspace's secret key."""
    key = beacon.derive_key(load_key(srv.workspace / ".headwater"))
    return beacon.run_secret(key, run_id)


def test_the_beacon_takes_only_the_run_s_own_secret_and_sound_payloads(srv: Server) -> None:
    run, other = finished(srv, "quiet"), finished(srv, "quiet")
    ok = {"type": "job.quiet", "engine_version": 1, "result": "made up"}
    anon = httpx.Client(base_url=srv.url, timeout=30)

    def put(kind: str, body: Any, secret: str | None, run_id: str = run["id"]) -> httpx.Response:
        auth = None if secret is None else ("run", secret)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return anon.put(beacon_url(srv, run_id, kind), content=data, auth=auth)

    secret = run_secret(srv, run["id"])
    assert put("job_result", ok, None).status_code == 401
    assert put("job_result", ok, "nope").json()["code"] == "invalid_beacon_secret"
    assert put("job_result", ok, run_secret(srv, other["id"])).status_code == 401
    # the admin key is no beacon secret either
    admin = anon.put(
        beacon_url(srv, run["id"], "job_result"),
        json=ok,
        headers={"Authorization": f"Bearer {srv.key}"},
    )
    assert admin.status_code == 401
    assert put("metrics", ok, secret).status_code == 404
    assert put("job_result", b"{not json", secret).json()["code"] == "invalid_payload"
    assert put("job_result", [ok], secret).status_code == 400
    assert put("job_result", {"result": 1}, secret).status_code == 400  # no `type`
    assert put("trace", {"steps": []}, secret).status_code == 400  # no pipeline, transaction
    too_big = put("state", {"pipeline_name": "p", "blob": "x" * (16 * 1024 * 1024)}, secret)
    assert too_big.status_code == 413
    missing = "00000000-0000-4000-8000-000000000000"
    assert put("job_result", ok, run_secret(srv, missing), run_id=missing).status_code == 404
    # refused payloads left nothing behind
    assert srv.http.get(f"{tele(srv)}/job-runs/{run['id']}/result").status_code == 404

    accepted = put("job_result", ok, secret)
    assert accepted.status_code == 200, accepted.text
    assert srv.get(f"{tele(srv)}/job-runs/{run['id']}/result")["result"] == "made up"
    # what the route answers without a key: nothing
    assert anon.get(f"{tele(srv)}/job-runs/{run['id']}/result").status_code == 401


def test_a_trigger_key_reads_the_telemetry_of_its_own_runs_only(srv: Server) -> None:
    admin_run = finished(srv, "load")
    key = srv.cli("key", "create", "--name", f"ci-{srv.mode}", "--scope", "trigger").stdout  # type: ignore[attr-defined]
    as_ci = httpx.Client(
        base_url=srv.url, timeout=30, headers={"Authorization": f"Bearer {key.strip()}"}
    )
    started = as_ci.post(f"{srv.w}/jobs/-trigger", json={"job_ids": [srv.job_id("load")]}).json()
    own = srv.wait_run(started["succeeded"][0]["job_run"]["id"], timeout=90)
    assert as_ci.get(f"{tele(srv)}/job-runs/{own['id']}/result").status_code == 200
    denied = as_ci.get(f"{tele(srv)}/job-runs/{admin_run['id']}/result")
    assert denied.status_code == 403
    listed = as_ci.get(f"{tele(srv)}/pipeline-runs", params={"limit": 1000}).json()
    assert {p["job_run_id"] for p in listed["items"]} == {own["id"]}
    other = admin_run["pipeline_run_summaries"][0]["pipeline_run_id"]
    assert as_ci.get(f"{tele(srv)}/pipeline-runs/{other}").status_code == 403
