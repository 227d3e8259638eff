"""`dlthub variable set|list` against a real server; runs get the values as environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import WHERE, Server, served

pytestmark = pytest.mark.integration

WORKSPACE = """
import os

import dlt
import dlt.hub.run as run


@run.job
def show():
    # reversed: the log masks a secret's value
    print(f"MY_SECRET reversed={os.environ.get('MY_SECRET', '')[::-1]}")
    print(f"REGION={os.environ.get('REGION')}")


@run.job
def uses_config(api_token: str = dlt.secrets.value):
    # dlt resolves the argument from the variable named like its config key
    print(f"api_token has {len(api_token)} characters")


__all__ = ["show", "uses_config"]
"""


@pytest.fixture(scope="module", params=WHERE)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("vars") / "ws"
    (ws / ".dlt").mkdir(parents=True)
    (ws / ".dlt" / ".workspace").touch()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    with served(ws, request.param) as srv:
        yield srv


def dlthub(srv: Server, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RUNTIME__API_BASE_URL": srv.url,
        "RUNTIME__API_KEY": key,
        "RUNTIME__WORKSPACE_ID": srv.ws_id,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    exe = str(Path(sys.executable).parent / "dlthub")
    return subprocess.run(
        [exe, *args], cwd=srv.workspace, env=env, capture_output=True, text=True, timeout=60
    )


def test_dlthub_variable_set_reaches_runs_and_secrets_are_never_answered(server: Server) -> None:
    admin = server.cli("key", "create", "--name", "cli", "--scope", "admin").stdout.strip()
    done = dlthub(
        server,
        admin,
        "variable",
        "set",
        "MY_SECRET",
        "--value",
        "s3cr3t",
        "--secret",
        "--workspace",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = dlthub(
        server, admin, "variable", "set", "REGION", "--value", "eu-1", "--plain", "--workspace"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = dlthub(server, admin, "variable", "list")
    assert listed.returncode == 0 and "MY_SECRET" in listed.stdout
    assert "s3cr3t" not in listed.stdout and "eu-1" in listed.stdout
    answer = server.get(f"{server.w}/variables")
    secret = next(v for s in answer["scopes"] for v in s["variables"] if v["name"] == "MY_SECRET")
    assert secret["value"] is None and secret["type"] == "secret"
    run = server.wait_run(server.start_run("show")["id"])
    assert server.user_output(run["id"]) == ["MY_SECRET reversed=t3rc3s", "REGION=eu-1"]


def test_dlt_resolves_job_arguments_from_variables(server: Server) -> None:
    server.http.patch(
        f"{server.w}/variables",
        json={
            "profile": None,
            "upserts": [{"name": "API_TOKEN", "type": "secret", "value": "abcd"}],
        },
    ).raise_for_status()
    run = server.wait_run(server.start_run("uses_config")["id"])
    assert run["status"] == "completed", server.logs(run["id"])
    assert "api_token has 4 characters" in server.user_output(run["id"])


def test_trigger_keys_cannot_change_variables_and_reserved_names_are_refused(
    server: Server,
) -> None:
    trigger = server.cli("key", "create", "--name", "t", "--scope", "trigger").stdout.strip()
    denied = dlthub(
        server, trigger, "variable", "set", "X", "--value", "1", "--plain", "--workspace"
    )
    assert denied.returncode != 0
    reserved = server.http.patch(
        f"{server.w}/variables",
        json={"upserts": [{"name": "RUNTIME__RUN_ID", "type": "plain", "value": "x"}]},
    )
    assert reserved.status_code == 400 and "RUNTIME__RUN_ID" in reserved.json()["detail"]
    both = server.http.get(
        f"{server.w}/variables", params={"scope_profile": "prod", "is_workspace_scope": "true"}
    )
    assert both.status_code == 400
