"""headwater.toml on a real `headwater up`: read at start, reloaded with the manifest, a bad
file refused with its key and line while the last good configuration keeps serving, and
dbt Cloud jobs listed as jobs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.integration

WORKSPACE = """
import dlt.hub.run as run


@run.job(expose={"tags": ["ingest"]})
def load():
    print("loaded")


@run.job(trigger=[load.success])
def report():
    print("reported")


__all__ = ["load", "report"]
"""

GOOD = """
[jobs."tag:ingest"]
locks = ["warehouse"]

[jobs.report]
overlap = "replace"
triggers = ["job.success:jobs.dbt_cloud.transform"]

[locks]
warehouse = 2

[dbt_cloud.connections.prod]
account_id = 12345
token = "env:DBT_CLOUD_TOKEN"

[[dbt_cloud.jobs]]
name = "transform"
connection = "prod"
job_id = 67890
trigger = ["job.success:load"]
tags = ["transform"]
"""

LOAD = "jobs.__deployment__.load"
REPORT = "jobs.__deployment__.report"
TRANSFORM = "jobs.dbt_cloud.transform"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("config") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    (ws / "headwater.toml").write_text(GOOD)
    server = Server(ws).start()
    try:
        yield server
    finally:
        server.stop()


def by_ref(srv: Server) -> dict[str, dict]:
    return {j["job_ref"]: j for j in srv.get(f"{srv.w}/jobs")["items"]}


def test_settings_reach_the_jobs_they_select(srv: Server) -> None:
    jobs = by_ref(srv)
    assert jobs[LOAD]["settings"] == {"locks": {"warehouse": 2}}
    assert jobs[REPORT]["settings"] == {
        "overlap": "replace",
        "triggers": [f"job.success:{TRANSFORM}"],
    }
    assert f"job.success:{TRANSFORM}" in jobs[REPORT]["triggers"]


def test_dbt_cloud_jobs_are_listed_like_any_job(srv: Server) -> None:
    transform = by_ref(srv)[TRANSFORM]
    assert transform["job_type"] == "dbt_cloud"
    definition = transform["job_definition"]
    assert definition["triggers"] == [f"job.success:{LOAD}"]
    assert definition["dbt_cloud"]["connection"]["token"] == "env:DBT_CLOUD_TOKEN"
    assert "tag:transform" in transform["triggers"]
    listed = srv.cli("job", "ls").stdout
    assert TRANSFORM in listed


def test_a_bad_file_is_refused_with_key_and_line_and_the_last_good_one_serves(
    srv: Server,
) -> None:
    path = srv.workspace / "headwater.toml"
    try:
        path.write_text(GOOD.replace('overlap = "replace"', 'overlap = "sometimes"'))
        error = srv.wait_for(lambda: srv.get(srv.w)["manifest"]["config_error"], 30, "config error")
        assert "jobs.report.overlap (line 6)" in error, error
        # the last good settings still hold
        assert by_ref(srv)[REPORT]["settings"]["overlap"] == "replace"
        deployed = srv.cli("deploy", check=False)
        assert deployed.returncode == 1
        assert "headwater.toml not loaded" in deployed.stderr + deployed.stdout
        assert "line 6" in deployed.stderr + deployed.stdout
        listed = srv.cli("job", "ls").stdout
        assert "headwater.toml error" in listed and "line 6" in listed, listed
    finally:
        path.write_text(GOOD)
        srv.wait_for(lambda: srv.get(srv.w)["manifest"]["config_error"] is None, 30, "fixed")
    assert "headwater.toml error" not in srv.cli("job", "ls").stdout


def test_a_dropped_dbt_cloud_job_is_archived_and_a_changed_setting_applies(
    srv: Server,
) -> None:
    path = srv.workspace / "headwater.toml"
    lean = GOOD.split("[dbt_cloud.connections.prod]")[0].replace(
        'triggers = ["job.success:jobs.dbt_cloud.transform"]\n', ""
    )
    try:
        path.write_text(lean.replace('overlap = "replace"', 'overlap = "ignore"'))
        srv.wait_for(
            lambda: by_ref(srv)[REPORT]["settings"].get("overlap") == "ignore", 30, "ignore"
        )
        assert by_ref(srv)[TRANSFORM]["is_archived"] is True
    finally:
        path.write_text(GOOD)
        srv.wait_for(lambda: not by_ref(srv)[TRANSFORM]["is_archived"], 30, "restored")


def test_a_remote_deploy_with_a_bad_file_exits_1_before_uploading(
    srv: Server, tmp_path: Path
) -> None:
    ws = tmp_path / "remote"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    (ws / "headwater.toml").write_text('[jobs.nope]\noverlap = "skip"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater.cli.main",
            "deploy",
            "-w",
            str(ws),
            "--to",
            srv.url,
            "--key",
            srv.key,
            "--workspace-id",
            srv.ws_id,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "headwater.toml not loaded" in proc.stdout + proc.stderr
    assert "selects no job" in proc.stdout + proc.stderr


def test_the_new_read_routes_want_a_read_key(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("load")["id"])
    trigger_key = srv.cli("key", "create", "--name", "ci", "--scope", "trigger").stdout.strip()
    read_key = srv.cli("key", "create", "--name", "viewer", "--scope", "read").stdout.strip()
    routes = [
        f"{srv.w}/automations",
        f"{srv.w}/deliveries",
        f"{srv.w}/job-runs/{run['id']}/artifacts",
        f"{srv.w}/job-runs/{run['id']}/artifacts/run_results.json",
    ]
    import httpx

    for route in routes:
        assert httpx.get(srv.url + route).status_code == 401, route
        by_trigger = httpx.get(srv.url + route, headers={"Authorization": f"Bearer {trigger_key}"})
        assert by_trigger.status_code in (403, 404), (route, by_trigger.status_code)
    by_reader = httpx.get(srv.url + routes[2], headers={"Authorization": f"Bearer {read_key}"})
    assert by_reader.status_code == 200 and by_reader.json() == {"items": [], "dbt": None}
    odd = httpx.get(
        srv.url + f"{srv.w}/job-runs/{run['id']}/artifacts/..%2F..%2Fheadwater.db",
        headers={"Authorization": f"Bearer {read_key}"},
    )
    assert odd.status_code == 404
    assert httpx.get(
        srv.url + f"{srv.w}/deliveries?limit=100000",
        headers={"Authorization": f"Bearer {read_key}"},
    ).status_code in (400, 422)
