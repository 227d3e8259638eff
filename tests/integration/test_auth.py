"""API keys against a real `headwater up`: scopes, expiry, revocation, nothing stored in plain."""

from __future__ import annotations

import re
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("auth") / "ws")
    srv = Server(ws).start(wait_warm=False)
    yield srv
    srv.stop()


def client(srv: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=30)


def new_key(srv: Server, name: str, scope: str, *extra: str) -> str:
    proc = srv.cli("key", "create", "--name", name, "--scope", scope, *extra)
    key = proc.stdout.strip()
    assert key.startswith("dlt_sa_") and len(key) > 40
    return key


def test_every_route_but_health_needs_a_key(server: Server) -> None:
    anon = client(server, None)
    assert anon.get("/health").status_code == 200
    for path in (server.w, f"{server.w}/jobs", f"{server.w}/job-runs", f"{server.w}/api-keys"):
        resp = anon.get(path)
        assert resp.status_code == 401, path
        assert resp.json()["code"] == "not_authenticated"
    bad = client(server, "dlt_sa_not-a-key").get(f"{server.w}/jobs")
    assert bad.status_code == 401 and bad.json()["detail"] == "unknown API key"


def test_local_admin_key_file_is_private(server: Server) -> None:
    mode = (server.workspace / ".headwater" / "admin.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_trigger_key_triggers_and_reads_only_its_own_runs(server: Server) -> None:
    key = new_key(server, "snowflake", "trigger")
    tk = client(server, key)
    job_id = server.job_id("ok")
    mine = tk.post(f"{server.w}/jobs/-trigger", json={"job_ids": [job_id]}).json()["succeeded"][0]
    server.wait_run(mine["job_run_id"])
    assert tk.get(f"{server.w}/job-runs/{mine['job_run_id']}").status_code == 200
    assert (
        tk.get(f"/logs/v1/workspaces/{server.ws_id}/job-runs/{mine['job_run_id']}/logs").status_code
        == 200
    )
    listed = tk.get(f"{server.w}/job-runs").json()["items"]
    assert mine["job_run_id"] in {r["id"] for r in listed}
    assert all(r["triggered_by"] == mine["job_run"]["triggered_by"] for r in listed)
    # someone else's run: no reading its log
    other = server.wait_run(server.start_run("greet", parameters={"greeting": "x"})["id"])
    assert tk.get(f"{server.w}/job-runs/{other['id']}").status_code == 403
    logs = tk.get(f"/logs/v1/workspaces/{server.ws_id}/job-runs/{other['id']}/logs")
    assert logs.status_code == 403
    # and nothing an admin does
    assert tk.get(f"{server.w}/api-keys").status_code == 403
    assert tk.post(f"{server.w}/jobs/{job_id}/-pause").status_code == 403
    assert tk.post(f"{server.w}/-reload").status_code == 403


def test_read_key_changes_nothing(server: Server) -> None:
    rk = client(server, new_key(server, "dashboard", "read"))
    assert rk.get(f"{server.w}/job-runs").status_code == 200
    job_id = server.job_id("ok")
    denied = rk.post(f"{server.w}/jobs/-trigger", json={"job_ids": [job_id]})
    assert denied.status_code == 403 and denied.json()["code"] == "not_authorized"
    assert rk.post(f"{server.w}/job-runs", json={"job_id": job_id}).status_code == 403
    assert rk.post(f"{server.w}/jobs/{job_id}/-pause").status_code == 403


def test_a_worker_key_reads_runs_and_their_environment_and_changes_nothing(
    server: Server,
) -> None:
    wk = client(server, new_key(server, "worker-1", "worker"))
    run = server.wait_run(server.start_run("ok")["id"])
    job_id = run["job_id"]
    assert wk.get(f"{server.w}/jobs").status_code == 200
    assert wk.get(f"{server.w}/job-runs/{run['id']}").json()["job_version"]["job_id"] == job_id
    assert wk.get(f"{server.w}/job-runs").status_code == 200
    env = wk.get(f"{server.w}/job-runs/{run['id']}/environment")
    assert env.status_code == 200
    assert set(env.json()) == {"env", "secret_values", "beacon_secret"}
    # a served folder without remote workers: the run names no package to download
    missing = wk.get(f"{server.w}/deployments/{run['deployment_id']}/archive")
    assert missing.status_code == 404 and missing.json()["code"] == "deployment_not_found"
    for method, path, body in (
        ("POST", "/jobs/-trigger", {"job_ids": [job_id]}),
        ("POST", "/job-runs", {"job_id": job_id}),
        ("POST", f"/job-runs/{run['id']}/-cancel", None),
        ("POST", f"/jobs/{job_id}/-pause", None),
        ("POST", "/-reload", None),
        ("POST", "/deployments/-issue-upload", None),
        ("GET", "/variables", None),
        ("GET", "/deployments", None),
        ("GET", "/deployments/latest", None),
        ("GET", "/members", None),
        ("GET", "/api-keys", None),
    ):
        resp = wk.request(method, f"{server.w}{path}", json=body)
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["code"] == "not_authorized"


@pytest.mark.parametrize("scope", ["read", "trigger"])
def test_only_worker_and_admin_keys_download_packages_and_read_run_environments(
    server: Server, scope: str
) -> None:
    """The configuration package holds secrets.toml, a run's environment the secrets."""
    other = client(server, new_key(server, f"not-a-worker-{scope}", scope))
    run = server.wait_run(server.start_run("ok")["id"])
    for path in (
        f"/job-runs/{run['id']}/environment",
        f"/deployments/{run['deployment_id']}/archive",
        f"/configurations/{run['configuration_id']}/archive",
    ):
        resp = other.get(f"{server.w}{path}")
        assert resp.status_code == 403, (path, resp.text)
        assert resp.json()["code"] == "not_authorized"
    assert server.http.get(f"{server.w}/job-runs/{run['id']}/environment").status_code == 200


def test_revoked_and_expired_keys_get_401_saying_why(server: Server) -> None:
    key = new_key(server, "temp", "trigger", "--expires-in-days", "30")
    assert client(server, key).get(f"{server.w}/jobs").status_code == 200
    server.cli("key", "revoke", "temp")
    revoked = client(server, key).get(f"{server.w}/jobs")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]

    old = new_key(server, "old", "read")
    db = sqlite3.connect(server.workspace / ".headwater" / "headwater.db")
    with db:
        db.execute("update api_keys set expires_at = '2020-01-01 00:00:00' where name = 'old'")
    db.close()
    expired = client(server, old).get(f"{server.w}/jobs")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_key_ls_never_shows_keys_and_the_store_keeps_only_hashes(server: Server) -> None:
    key = new_key(server, "audit", "read")
    listing = server.cli("key", "ls").stdout
    assert "audit" in listing and key not in listing
    raw = b"".join(p.read_bytes() for p in (server.workspace / ".headwater").glob("headwater.db*"))
    assert key.encode() not in raw
    assert server.key.encode() not in raw
    assert key not in server.log() and server.key not in server.log()


def test_dataplane_token_reads_logs_with_the_scope_of_its_key(server: Server) -> None:
    token = server.post(f"{server.w}/-issue-dataplane-token")
    assert token["token"].startswith("dlt_sa_") and token["expires_at"] > 0
    run = server.wait_run(server.start_run("ok")["id"])
    dp = client(server, token["token"])
    lines = dp.get(f"/logs/v1/workspaces/{server.ws_id}/job-runs/{run['id']}/logs")
    assert lines.status_code == 200 and "ok ran" in lines.text


def test_a_trigger_key_sees_no_other_keys_run_through_a_job(server: Server) -> None:
    """Security 7: `latest_job_run` follows the rule of `GET job-runs/{id}`."""
    tk = client(server, new_key(server, "peeker", "trigger"))
    other = server.wait_run(server.start_run("greet", parameters={"greeting": "s3cr3t"})["id"])
    job_id = other["job_id"]
    assert tk.get(f"{server.w}/job-runs/{other['id']}").status_code == 403
    listed = {j["id"]: j for j in tk.get(f"{server.w}/jobs").json()["items"]}
    assert listed[job_id]["latest_job_run"] is None
    one = tk.get(f"{server.w}/jobs/{job_id}").json()
    assert one["latest_job_run"] is None
    assert "s3cr3t" not in tk.get(f"{server.w}/jobs").text
    # its own run it sees, and a read key sees every run
    mine = tk.post(
        f"{server.w}/jobs/-trigger", json={"job_ids": [job_id], "parameters": {"greeting": "own"}}
    )
    run_id = mine.json()["succeeded"][0]["job_run_id"]
    server.wait_run(run_id)
    assert tk.get(f"{server.w}/jobs/{job_id}").json()["latest_job_run"]["id"] == run_id
    rk = client(server, new_key(server, "overview", "read"))
    assert rk.get(f"{server.w}/jobs/{job_id}").json()["latest_job_run"]["id"] == run_id


def test_a_refused_bulk_cancel_cancels_nothing(server: Server) -> None:
    """Security 9b: one run the key may not cancel refuses the whole request, first."""
    tk = client(server, new_key(server, "canceller", "trigger"))
    job_id = server.job_id("slow")
    mine = tk.post(
        f"{server.w}/jobs/-trigger", json={"job_ids": [job_id], "parameters": {"seconds": 60}}
    ).json()["succeeded"][0]["job_run_id"]
    other = server.wait_run(server.start_run("ok")["id"])
    try:
        denied = tk.post(f"{server.w}/job-runs/-cancel", json={"job_run_ids": [mine, other["id"]]})
        assert denied.status_code == 403, denied.text
        assert server.get(f"{server.w}/job-runs/{mine}")["status"] not in (
            "cancelling",
            "cancelled",
        )
        ok = tk.post(f"{server.w}/job-runs/-cancel", json={"job_run_ids": [mine]})
        assert ok.status_code == 200 and ok.json()["succeeded"][0]["job_run_id"] == mine
    finally:
        server.http.post(
            f"{server.w}/job-runs/-cancel",
            json={"job_run_ids": [mine]},
            headers={"Authorization": f"Bearer {server.key}"},
        )
        server.wait_run(mine)


def test_the_open_routes_are_the_ones_the_readme_names(server: Server) -> None:
    """Security 9e: the API's description is open, says so, and holds no workspace data."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    sentence = re.search(r"every API route needs a key.*?so tools", readme, re.DOTALL)
    assert sentence, "README: the sentence naming the routes that need no key"
    named = set(re.findall(r"`(/[\w./]*)`", sentence.group(0)))
    assert named == {"/health", "/openapi.json", "/docs", "/redoc"}
    anon = client(server, None)
    for path in named:
        resp = anon.get(path)
        assert resp.status_code == 200, path
        if path != "/health":  # /health names the workspace it serves, on purpose
            assert server.ws_id not in resp.text and server.key not in resp.text, path
    # every other documented GET route asks for a key
    paths = anon.get("/openapi.json").json()["paths"]
    for path, ops in paths.items():
        if "get" not in ops or path in named:
            continue
        url = re.sub(r"\{ws\}", server.ws_id, path)
        url = re.sub(r"\{[^}]+\}", "x", url)
        assert anon.get(url).status_code == 401, path
