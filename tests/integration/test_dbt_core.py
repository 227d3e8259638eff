"""dbt Core in a job, with no Headwater-specific code: its artifacts are kept per run, its
models and tests shown, and a failing test named in the run's failure reason (dbt run as a
subprocess here; the demo's test covers `dbtRunner` in-process). On `up`'s own worker and
on remote workers (`[remote]`), whose artifacts reach the server's store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import WHERE, Server, served

pytestmark = pytest.mark.integration

WORKSPACE = """
import os
import subprocess
import sys
from pathlib import Path

import dlt.hub.run as run

PROJECT = Path(__file__).parent / "project"


@run.job
def build():
    dbt = Path(sys.executable).parent / "dbt"
    os.environ["DUCKDB_FILE"] = os.path.join(os.getcwd(), "warehouse.duckdb")
    done = subprocess.run(
        [str(dbt), "build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT)]
    )
    if done.returncode:
        raise SystemExit(done.returncode)


__all__ = ["build"]
"""

FILES = {
    "dbt_project.yml": "name: mini\nversion: '1.0'\nprofile: mini\nmodel-paths: [models]\n",
    "profiles.yml": (
        "mini:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        "      path: \"{{ env_var('DUCKDB_FILE') }}\"\n      threads: 1\n"
    ),
    "models/ids.sql": "select 1 as id union all select 1 as id union all select 2 as id\n",
    "models/schema.yml": (
        "version: 2\nmodels:\n  - name: ids\n    columns:\n      - name: id\n"
        "        data_tests: [not_null, unique]\n"
    ),
}


@pytest.fixture(scope="module", params=WHERE)
def srv(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("dbt-core") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    for name, text in FILES.items():
        path = ws / "project" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with served(ws, request.param) as server:
        yield server


def test_a_failing_dbt_test_fails_the_run_and_is_named(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("build")["id"], timeout=180)
    assert run["status"] == "failed"
    assert "dbt: test unique_ids_id fail (1 failing rows)" in (run["reason"] or ""), run
    artifacts = srv.get(f"{srv.w}/job-runs/{run['id']}/artifacts")
    assert artifacts["dbt"]["counts"] == {"success": 1, "pass": 1, "fail": 1}
    assert artifacts["dbt"]["failures"].startswith("dbt: test unique_ids_id fail")
    shown = srv.cli("run", "show", run["id"]).stdout
    assert "model.mini.ids" in shown and "fail" in shown
    # dbt wrote nothing into the project: its target was the run's own
    assert not (Path(srv.workspace) / "project" / "target").exists()


def test_an_artifact_the_run_did_not_leave_answers_404(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("build")["id"], timeout=180)
    missing = srv.http.get(f"{srv.w}/job-runs/{run['id']}/artifacts/catalog.json")
    assert missing.status_code == 404
    assert missing.json()["code"] == "artifact_not_found"
