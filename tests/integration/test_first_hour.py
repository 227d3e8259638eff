"""What a new user meets in the first hour, on a real `headwater up`: manual runs of a paused
job, finding the server from another folder, `connect` and key revocation, a broken
manifest and interactive jobs in `job ls`, and `run show`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.integration

WORKSPACE = """
import os

import dlt
import dlt.hub.run as run


@run.job(trigger=run.trigger.schedule("0 0 1 1 *"))
def yearly():
    print("yearly ran")


@run.job
def load():
    path = os.path.join(os.getcwd(), "first_hour.duckdb")
    pipeline = dlt.pipeline(
        "fh_items", destination=dlt.destinations.duckdb(path), dataset_name="raw"
    )
    pipeline.run([{"n": i} for i in range(5)], table_name="items")


__all__ = ["yearly", "load"]
"""
YEARLY = "jobs.__deployment__.yearly"
LOAD = "jobs.__deployment__.load"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("first-hour")
    ws = root / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    state = root / "state"
    with pytest.MonkeyPatch.context() as mp:
        # where `up` remembers the server it started, for this module alone
        mp.setenv("HEADWATER_STATE_DIR", str(state))
        server = Server(ws).start()
    server.state_dir = state  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def cli(
    srv: Server, *args: str, cwd: Path, state: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The `headwater` CLI as a user runs it: no HEADWATER_* variables, in `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_STATE_DIR"] = str(state or srv.state_dir)  # type: ignore[attr-defined]
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def finished(srv: Server, run: dict[str, Any]) -> dict[str, Any]:
    done = srv.wait_run(run["id"], timeout=60)
    assert done["status"] == "completed", srv.logs(run["id"])
    return done


# -- 2. pause stops timed triggers only -----------------------------------------------------------


@pytest.fixture
def paused(srv: Server) -> Iterator[str]:
    job_id = srv.job_id("yearly")
    srv.post(f"{srv.w}/jobs/{job_id}/-pause")
    try:
        yield job_id
    finally:
        srv.post(f"{srv.w}/jobs/{job_id}/-resume")


def test_manual_runs_of_a_paused_job_run_and_say_they_are_manual(srv: Server, paused: str) -> None:
    # what a tick of the schedule gets as its interval (resumed for a moment)
    srv.post(f"{srv.w}/jobs/{paused}/-resume")
    tick = srv.post(f"{srv.w}/job-runs", json={"job_id": paused, "trigger": "schedule:0 0 1 1 *"})
    finished(srv, tick)
    srv.post(f"{srv.w}/jobs/{paused}/-pause")
    assert tick["interval_start"] and tick["interval_end"]

    answers = []
    # the API by id (what `dlthub job trigger`, the SDK and `headwater job run` send)
    by_id = srv.post(f"{srv.w}/jobs/-trigger", json={"job_ids": [paused]})
    (item,) = by_id["succeeded"]
    assert item["status"] == "triggered" and item["trigger"] == f"manual:{YEARLY}"
    answers.append(finished(srv, item["job_run"]))
    # the API by the `manual:` selector
    by_selector = srv.post(f"{srv.w}/jobs/-trigger", json={"selectors": [f"manual:{YEARLY}"]})
    (item,) = by_selector["succeeded"]
    answers.append(finished(srv, item["job_run"]))
    # the SDK's `start_run`
    answers.append(
        finished(srv, srv.post(f"{srv.w}/job-runs", json={"job_id": paused, "trigger": "manual:"}))
    )
    # the older API of warehouse procedures
    legacy = srv.http.post(f"{srv.w}/scripts/trigger", json={"job_refs": ["yearly"]})
    assert legacy.status_code == 201, legacy.text
    (item,) = legacy.json()["triggered"]
    assert item["status"] == "triggered", item
    answers.append(finished(srv, item["run"]))
    # the CLI
    ran = srv.cli("job", "run", "yearly", "--wait")
    assert "manual" in ran.stdout and "completed" in ran.stdout
    answers.append(srv.runs("yearly")[0])

    for run in answers:
        run = srv.run(run["id"])
        assert run["trigger"] == f"manual:{YEARLY}", run
        # a manual run loads the window the schedule's tick would
        assert (run["interval_start"], run["interval_end"]) == (
            tick["interval_start"],
            tick["interval_end"],
        )
    assert srv.run(tick["id"])["trigger"] == "schedule:0 0 1 1 *"
    listed = srv.cli("run", "ls", "--job", "yearly").stdout
    assert f"manual:{YEARLY}" in listed and "schedule:0 0 1 1 *" in listed


def test_timed_triggers_of_a_paused_job_are_skipped(srv: Server, paused: str) -> None:
    before = len(srv.runs("yearly"))
    tick = srv.http.post(
        f"{srv.w}/job-runs", json={"job_id": paused, "trigger": "schedule:0 0 1 1 *"}
    )
    assert tick.status_code == 409 and tick.json()["code"] == "skipped_paused", tick.text
    by_schedule = srv.post(f"{srv.w}/jobs/-trigger", json={"selectors": ["schedule:*"]})
    (item,) = by_schedule["skipped"]
    assert item["job_ref"] == YEARLY and item["status"] == "skipped_paused"
    assert len(srv.runs("yearly")) == before


# -- 4. the CLI finds the server from another folder ----------------------------------------------


def test_cli_finds_the_server_of_a_workspace_below_the_current_folder(srv: Server) -> None:
    listed = cli(srv, "job", "ls", cwd=srv.workspace.parent)
    assert listed.returncode == 0, listed.stderr
    assert YEARLY in listed.stdout
    # it says which server it used, and how to name it from there
    assert f"pass `-w {srv.workspace.name}`" in " ".join(listed.stderr.split())


def test_cli_uses_the_server_up_started_last(srv: Server, tmp_path: Path) -> None:
    last = json.loads((srv.state_dir / "last.json").read_text())  # type: ignore[attr-defined]
    assert last["workspace"] == str(srv.workspace) and last["url"] == srv.url
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listed = cli(srv, "job", "ls", cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert YEARLY in listed.stdout
    assert f"-w {srv.workspace}" in " ".join(listed.stderr.split())


def test_cli_says_which_w_to_use_when_several_or_none(srv: Server, tmp_path: Path) -> None:
    parent = tmp_path / "several"
    for name in ("a", "b"):
        home = parent / name / ".headwater"
        home.mkdir(parents=True)
        (home / "server.json").write_text(
            json.dumps({"url": srv.url, "workspace_id": srv.ws_id, "pid": os.getpid()})
        )
    several = cli(srv, "job", "ls", cwd=parent)
    assert several.returncode == 1
    message = " ".join(several.stderr.split())
    assert "`-w a` or `-w b`" in message, message

    # a workspace whose server is not running does not borrow another one's
    stopped = tmp_path / "stopped"
    (stopped / ".headwater").mkdir(parents=True)
    (stopped / "__deployment__.py").write_text("")
    refused = cli(srv, "job", "ls", cwd=stopped)
    assert refused.returncode == 1 and "start it with `headwater up`" in refused.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    none = cli(srv, "job", "ls", cwd=empty, state=tmp_path / "no-state")
    assert none.returncode == 1
    message = " ".join(none.stderr.split())
    assert "headwater up" in message and "-w" in message


# -- 5. connect reuses its key; an ambiguous revoke revokes nothing -------------------------------


def test_connect_reuses_one_key(srv: Server) -> None:
    first = srv.cli("connect").stdout
    second = srv.cli("connect").stdout
    assert first == second and "RUNTIME__API_KEY=dlt_sa_" in first
    keys = srv.get(f"{srv.w}/api-keys")["items"]
    assert [k["name"] for k in keys if not k["revoked_at"]].count("dlthub-cli") == 1
    stored = [p for p in (srv.workspace / ".headwater").iterdir() if "connect" in p.name]
    assert stored and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in stored)
    # a key revoked meanwhile is replaced, not printed again
    srv.cli("key", "revoke", "dlthub-cli")
    third = srv.cli("connect").stdout
    assert third != first and "RUNTIME__API_KEY=dlt_sa_" in third


def test_revoking_an_ambiguous_name_lists_the_candidates_and_revokes_nothing(
    srv: Server,
) -> None:
    created = [srv.post(f"{srv.w}/api-keys", json={"name": "twin"}) for _ in range(2)]
    refused = srv.cli("key", "revoke", "twin", check=False)
    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert all(k["id"] in message for k in created), message
    keys = {k["id"]: k for k in srv.get(f"{srv.w}/api-keys")["items"]}
    assert all(keys[k["id"]]["revoked_at"] is None for k in created)
    api = srv.http.post(f"{srv.w}/api-keys/twin/-revoke")
    assert api.status_code == 409 and api.json()["code"] == "api_key_ambiguous"
    assert {c["id"] for c in api.json()["extra"]["candidates"]} == {k["id"] for k in created}

    srv.cli("key", "revoke", created[0]["id"])
    keys = {k["id"]: k for k in srv.get(f"{srv.w}/api-keys")["items"]}
    assert keys[created[0]["id"]]["revoked_at"] and keys[created[1]["id"]]["revoked_at"] is None
    # one left by that name: the name is no longer ambiguous
    srv.cli("key", "revoke", "twin")


# -- 6 and 8. job ls: a broken manifest and interactive jobs --------------------------------------


def test_job_ls_marks_interactive_jobs_as_not_served(srv: Server) -> None:
    rows = {
        line.split()[0]: line for line in srv.cli("job", "ls").stdout.splitlines() if line.strip()
    }
    assert "not served" in rows["jobs.workspace.dashboard"]
    assert "not served" not in rows[YEARLY]
    # the API says so too, in a field of Headwater's own
    served = {j["job_ref"]: j["is_served"] for j in srv.jobs().values()}
    assert served == {"jobs.workspace.dashboard": False, YEARLY: True, LOAD: True}


def test_job_ls_shows_a_broken_manifest_above_the_table(srv: Server) -> None:
    manifest = srv.workspace / "__deployment__.py"
    try:
        manifest.write_text(WORKSPACE + "\nthis is not python(\n")
        srv.wait_for(lambda: srv.get(srv.w)["manifest"]["error"], 30, "manifest error")
        listed = srv.cli("job", "ls")
        head, _, table = listed.stdout.partition(YEARLY)
        assert "manifest error" in head and "SyntaxError" in head, listed.stdout
        assert "keeps version" in head
    finally:
        manifest.write_text(WORKSPACE)
        srv.wait_for(lambda: srv.get(srv.w)["manifest"]["error"] is None, 30, "manifest fixed")
    assert "manifest error" not in srv.cli("job", "ls").stdout


# -- 10. run show ---------------------------------------------------------------------------------


def test_run_show_has_rows_loaded_and_the_previous_run(srv: Server) -> None:
    first = finished(srv, srv.start_run("load"))
    second = finished(srv, srv.start_run("load"))
    shown = srv.cli("run", "show", second["id"]).stdout
    lines = [" ".join(line.split()) for line in shown.splitlines()]
    assert any(
        line.startswith("previous run") and f"#{first['number']}" in line and first["id"] in line
        for line in lines
    ), shown
    assert any("fh_items" in line and "5 rows" in line for line in lines), shown
    assert any("items" in line and "5" in line and "fh_items" not in line for line in lines)
    if first["number"] == 1:
        shown_first = srv.cli("run", "show", first["id"]).stdout
        assert "previous run -" in [" ".join(line.split()) for line in shown_first.splitlines()]
