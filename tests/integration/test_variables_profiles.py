"""Variables by profile with the real `dlthub` CLI, key scopes, and how dlt finds job settings.

tests/integration/test_variables.py covers the workspace scope and trigger keys.
"""

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
    print(f"TARGET={os.environ.get('TARGET')}")
    # reversed: the log masks a secret's value
    password = os.environ.get("DB_PASSWORD")
    print(f"DB_PASSWORD={password[::-1] if password else None}")


@run.job
def tok(api_token: str = dlt.secrets.value):
    print(f"api_token={api_token[::-1]}")


__all__ = ["show", "tok"]
"""


@pytest.fixture(scope="module", params=WHERE)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("varprof") / "ws"
    (ws / ".dlt").mkdir(parents=True)
    (ws / ".dlt" / ".workspace").touch()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    with served(ws, request.param) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server: Server) -> str:
    return server.cli("key", "create", "--name", "cli", "--scope", "admin").stdout.strip()


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


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def set_var(srv: Server, key: str, name: str, value: str, kind: str, *scope: str) -> None:
    ok(dlthub(srv, key, "variable", "set", name, "--value", value, f"--{kind}", *scope))


def delete_var(srv: Server, key: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    # -y: deleting asks for a confirmation, which a non-interactive run cannot give
    return dlthub(srv, key, "-y", "variable", "delete", name, *args)


def output(server: Server, name: str, **body: object) -> list[str]:
    run = server.wait_run(server.start_run(name, **body)["id"])
    assert run["status"] == "completed", server.logs(run["id"])
    return server.user_output(run["id"])


def test_a_run_gets_its_profiles_variables_over_the_workspace_scope(
    server: Server, admin: str
) -> None:
    set_var(server, admin, "TARGET", "any", "plain", "--workspace")
    set_var(server, admin, "TARGET", "dev-db", "plain", "--profile", "dev")
    set_var(server, admin, "TARGET", "prod-db", "plain", "--profile", "prod")
    set_var(server, admin, "DB_PASSWORD", "pr0d-pw", "secret", "--profile", "prod")

    listed = ok(dlthub(server, admin, "variable", "list", "--profile", "prod"))
    assert "prod-db" in listed and "DB_PASSWORD" in listed
    assert "pr0d-pw" not in listed and "dev-db" not in listed
    scopes = server.get(f"{server.w}/variables")["scopes"]
    assert [s["profile"] for s in scopes] == [None, "dev", "prod"]
    assert server.get(f"{server.w}/variables", params={"is_workspace_scope": "true"}) == {
        "scopes": [scopes[0]]
    }

    # no profile named: dlt runs the job with its default profile, `dev`
    assert output(server, "show") == ["TARGET=dev-db", "DB_PASSWORD=None"]
    assert output(server, "show", profile="prod") == ["TARGET=prod-db", "DB_PASSWORD=wp-d0rp"]
    assert output(server, "show", profile="staging") == ["TARGET=any", "DB_PASSWORD=None"]

    ok(delete_var(server, admin, "TARGET", "--profile", "prod"))
    missing = delete_var(server, admin, "TARGET", "--profile", "prod")
    assert missing.returncode != 0 and "does not exist" in missing.stdout + missing.stderr
    ok(delete_var(server, admin, "TARGET", "--profile", "prod", "--allow-missing"))
    assert output(server, "show", profile="prod") == ["TARGET=any", "DB_PASSWORD=wp-d0rp"]
    assert "pr0d-pw" not in server.log()


def test_dlt_finds_a_job_argument_under_its_sections_or_bare(server: Server) -> None:
    def put(name: str, value: str) -> None:
        server.http.patch(
            f"{server.w}/variables",
            json={"profile": None, "upserts": [{"name": name, "type": "secret", "value": value}]},
        ).raise_for_status()

    # dlt looks for `api_token` of job `tok` under JOBS____DEPLOYMENT____TOK__, then
    # JOBS____DEPLOYMENT____, JOBS__TOK__, JOBS__ and finally the bare name
    put("API_TOKEN", "bare")
    assert output(server, "tok") == ["api_token=erab"]
    put("JOBS____DEPLOYMENT____TOK__API_TOKEN", "for-tok")
    assert output(server, "tok") == ["api_token=kot-rof"]


def test_key_scopes(server: Server, admin: str) -> None:
    set_var(server, admin, "S", "hidden-1", "secret", "--workspace")
    read = server.cli("key", "create", "--name", "r", "--scope", "read").stdout.strip()
    trigger = server.cli("key", "create", "--name", "t", "--scope", "trigger").stdout.strip()

    listed = ok(dlthub(server, read, "variable", "list"))
    assert "S" in listed and "hidden-1" not in listed
    denied = dlthub(server, read, "variable", "set", "X", "--value", "1", "--plain", "--workspace")
    assert denied.returncode != 0
    assert dlthub(server, trigger, "variable", "list").returncode != 0

    for key, status in ((read, 403), (trigger, 403), ("wrong", 401)):
        headers = {"Authorization": f"Bearer {key}"}
        body = {"profile": None, "deletes": ["S"]}
        resp = server.http.patch(f"{server.w}/variables", json=body, headers=headers)
        assert resp.status_code == status, resp.text
    as_trigger = {"Authorization": f"Bearer {trigger}"}
    assert server.http.get(f"{server.w}/variables", headers=as_trigger).status_code == 403


def test_bad_changes_answer_400_and_change_nothing(server: Server) -> None:
    before = server.get(f"{server.w}/variables")
    for upsert in (
        {"name": "WORKSPACE__PROFILE", "type": "plain", "value": "prod"},
        {"name": "RUNTIME__AUTH_TOKEN", "type": "secret", "value": "x"},
        {"name": "1BAD", "type": "plain", "value": "x"},
        {"name": "GOOD", "type": "json", "value": "x"},
    ):
        resp = server.http.patch(
            f"{server.w}/variables",
            json={"upserts": [{"name": "FIRST", "type": "plain", "value": "1"}, upsert]},
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["detail"]
        if upsert["name"].startswith(("WORKSPACE", "RUNTIME")):
            assert upsert["name"] in resp.json()["detail"]
    assert server.get(f"{server.w}/variables") == before
    other = server.http.get("/api/v1/workspaces/00000000-0000-0000-0000-000000000000/variables")
    assert other.status_code == 404
