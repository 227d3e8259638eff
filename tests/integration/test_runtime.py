"""A real `headwater up` on a copy of tests/integration/workspace, driven over HTTP and the CLI."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.harness import HERE, RemoteServer, Server, copy_workspace, remote_server

pytestmark = pytest.mark.integration


LAYOUTS = {
    "single-process": (),
    "separate-worker": ("--separate-worker",),
    "two-api-processes": ("--api-processes", "2"),
    "remote-workers": (),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Every test runs against each layout: one process; the API beside a forked worker
    process (chains, cancels, log follows and deploys then cross the wake bridge); two API
    processes on one port beside the worker process (each request may land on either);
    and the server on PostgreSQL sending every run through RabbitMQ to two `headwater
    worker`s, each in a folder of its own."""
    ws = copy_workspace(HERE / "workspace", tmp_path_factory.mktemp("rt") / "ws")
    if request.param == "remote-workers":
        with remote_server(ws, workers=2) as remote:
            yield remote.start()
        return
    srv = Server(ws, *LAYOUTS[request.param]).start()
    yield srv
    srv.stop()


def test_up_lists_jobs_with_expanded_triggers_and_the_dashboard(server: Server) -> None:
    jobs = server.jobs()
    assert jobs["ok"]["triggers"] == ["tag:grp", "manual:jobs.__deployment__.ok"]
    assert jobs["after_ok"]["triggers"][0] == "job.success:jobs.__deployment__.ok"
    assert jobs["pipe_a"]["pipeline_name"] == "shared_pipe"
    assert jobs["dashboard"]["job_type"] == "interactive"
    log = server.log()
    assert f"workspace id  {server.ws_id}" in log
    assert "jobs.__deployment__.ok" in log


def test_run_moves_through_states_and_keeps_output_with_timestamps(server: Server) -> None:
    run = server.start_run("greet", parameters={"greeting": "hello there"})
    assert run["status"] == "pending"
    done = server.wait_run(run["id"])
    assert done["status"] == "completed", done
    assert done["exit_code"] == 0
    assert done["started_at"] and done["finished_at"] and done["duration_seconds"] >= 0
    lines = server.logs(run["id"])
    assert [x["line_num"] for x in lines] == list(range(len(lines)))
    user = [(x["io_stream"], x["content"]) for x in lines if x["source"] == "user"]
    assert ("stdout", "greeting=hello there") in user
    assert ("stderr", "to stderr") in user
    assert lines[0]["source"] == "setup" and lines[0]["stage"] == "build"
    assert lines[-1]["source"] == "runner"
    assert all(x["reported_at"].endswith("Z") for x in lines)
    # every state the run went through is in the event order: pending, starting, running, completed
    assert done["launch_mode"] == "fork"


def test_runs_are_numbered_per_job(server: Server) -> None:
    first = server.wait_run(server.start_run("tagged_one")["id"])
    second = server.wait_run(server.start_run("tagged_one")["id"])
    assert second["number"] == first["number"] + 1
    other = server.wait_run(server.start_run("tagged_two")["id"])
    assert other["number"] >= 1 and other["job"]["job_ref"].endswith("tagged_two")


def test_downstream_runs_after_success_and_records_its_upstream(server: Server) -> None:
    upstream = server.wait_run(server.start_run("ok")["id"])
    assert upstream["status"] == "completed"
    down = server.wait_for(
        lambda: [r for r in server.runs("after_ok") if r["previous_job_run_id"] == upstream["id"]],
        20,
        "chained run",
    )
    run = server.wait_run(down[0]["id"])
    assert run["status"] == "completed"
    assert run["trigger"] == "job.success:jobs.__deployment__.ok"
    assert "after_ok triggered by job.success:jobs.__deployment__.ok" in server.user_output(
        run["id"]
    )


def test_failure_chains_to_job_fail_and_not_to_job_success(server: Server) -> None:
    failed = server.wait_run(server.start_run("boom")["id"])
    assert failed["status"] == "failed" and failed["exit_code"] == 1
    assert failed["reason"] == "RuntimeError: boom failed on purpose (exit code 1)"
    assert any("boom failed on purpose" in x["content"] for x in server.logs(failed["id"]))
    on_fail = server.wait_for(
        lambda: [
            r for r in server.runs("after_boom_fail") if r["previous_job_run_id"] == failed["id"]
        ],
        20,
        "job.fail chain",
    )
    assert server.wait_run(on_fail[0]["id"])["status"] == "completed"
    time.sleep(0.5)
    assert server.runs("after_boom_success") == []


def test_tag_selector_fires_every_job_with_the_tag(server: Server) -> None:
    result = server.post(f"{server.w}/jobs/-trigger", json={"selectors": ["tag:nightly"]})
    refs = sorted(x["job_ref"] for x in result["succeeded"])
    assert refs == ["jobs.__deployment__.tagged_one", "jobs.__deployment__.tagged_two"]
    assert all(x["trigger"] == "tag:nightly" for x in result["succeeded"])
    for item in result["succeeded"]:
        assert server.wait_run(item["job_run_id"])["status"] == "completed"


def test_star_and_manual_selectors_never_break_on_the_dashboard_job(server: Server) -> None:
    result = server.post(
        f"{server.w}/jobs/-trigger", json={"selectors": ["manual:"], "dry_run": True}
    )
    refs = {x["job_ref"] for x in result["succeeded"]}
    assert "jobs.__deployment__.ok" in refs
    dash = [x for x in result["skipped"] if x["job_ref"] == "jobs.workspace.dashboard"]
    assert dash and dash[0]["status"] == "skipped_not_served"
    assert server.runs() is not None  # the listing still works
    star = server.post(f"{server.w}/jobs/-trigger", json={"selectors": ["*"], "dry_run": True})
    assert not star["failed"]


def test_second_trigger_of_busy_job_is_skipped_for_concurrency(server: Server) -> None:
    first = server.start_run("slow", parameters={"seconds": "3"})
    second = server.trigger("slow", parameters={"seconds": "3"})
    assert second["succeeded"] == []
    skipped = second["skipped"][0]
    assert skipped["status"] == "skipped_concurrency_limit"
    assert "concurrency limit is 1" in skipped["reasons"][0]
    assert skipped["job_run"]["status"] == "skipped"
    server.post(f"{server.w}/job-runs/{first['id']}/-cancel")
    server.wait_run(first["id"])


def test_jobs_sharing_a_pipeline_never_run_at_once(server: Server) -> None:
    a = server.start_run("pipe_a")
    b = server.start_run("pipe_b")
    waiting = server.wait_for(
        lambda: (server.run(b["id"])["reason"] or "").startswith("waiting"), 10, "wait reason"
    )
    assert waiting
    ra, rb = server.wait_run(a["id"]), server.wait_run(b["id"])
    assert ra["status"] == rb["status"] == "completed"
    a_out, b_out = server.user_output(a["id"]), server.user_output(b["id"])
    a_end = float(a_out[-1].split()[-1])
    b_start = float(b_out[0].split()[-1])
    assert b_start >= a_end, (a_out, b_out)


def test_timeout_sends_sigterm_then_kills_after_the_grace_period(server: Server) -> None:
    run = server.start_run("stubborn")
    done = server.wait_run(run["id"], timeout=20)
    assert done["status"] == "failed"
    assert done["reason"] == "timed out after 1s; killed after the 1s grace period"
    assert done["exit_code"] == -9
    assert 2.0 <= done["duration_seconds"] < 6.0
    runner = [x["content"] for x in server.logs(run["id"]) if x["source"] == "runner"]
    assert any("sent SIGTERM" in x for x in runner) and any("SIGKILL" in x for x in runner)


def test_cancel_moves_a_run_through_cancelling_to_cancelled(server: Server) -> None:
    run = server.start_run("slow", parameters={"seconds": "30"})
    server.wait_run(run["id"], states={"running"})
    server.wait_for(lambda: "slow started" in server.user_output(run["id"]), 10, "job output")
    answer = server.post(f"{server.w}/job-runs/{run['id']}/-cancel")
    assert answer["status"] in ("cancelling", "cancelled")
    done = server.wait_run(run["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert done["duration_seconds"] < 10
    again = server.http.post(f"{server.w}/job-runs/{run['id']}/-cancel")
    assert again.status_code == 409 and again.json()["code"] == "job_run_terminal"


def test_cancel_of_pending_run_ends_it_at_once(server: Server) -> None:
    blocker = server.start_run("pipe_a")
    waiting = server.start_run("pipe_b")
    answer = server.post(f"{server.w}/job-runs/{waiting['id']}/-cancel")
    assert answer["status"] == "cancelled"
    server.wait_run(blocker["id"])


def test_runs_get_a_workspace_local_data_directory(server: Server) -> None:
    run = server.wait_run(server.start_run("where")["id"])
    homes = [server.workspace]
    if isinstance(server, RemoteServer):  # the folder of the worker that ran it
        homes = [w.home for w in server.workers]
    expected = {f"data_dir={home / '.headwater' / 'data'}" for home in homes}
    assert expected & set(server.user_output(run["id"]))


def test_profile_passes_through_to_the_launcher(server: Server) -> None:
    run = server.wait_run(server.start_run("where", profile="prod")["id"])
    assert run["profile"] == "prod"
    assert "profile=prod" in server.user_output(run["id"])


def test_pipeline_name_selector_fires_the_jobs_delivering_that_pipeline(server: Server) -> None:
    result = server.post(
        f"{server.w}/jobs/-trigger",
        json={"selectors": ["pipeline_name:shared_pipe"], "dry_run": True},
    )
    refs = sorted(x["job_ref"] for x in result["succeeded"])
    assert refs == ["jobs.__deployment__.pipe_a", "jobs.__deployment__.pipe_b"]


def test_unknown_ids_answer_404_with_the_error_body(server: Server) -> None:
    resp = server.http.get(f"{server.w}/job-runs/00000000-0000-0000-0000-000000000000")
    assert resp.status_code == 404
    body = resp.json()
    assert set(body) == {"code", "detail", "extra", "status_code"} and body["status_code"] == 404
    bad = server.http.post(
        f"{server.w}/jobs/-trigger",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400


def test_bad_input_gets_a_4xx_with_a_clear_detail(server: Server) -> None:
    post = server.http.post
    huge = post(f"{server.w}/jobs/-trigger", content=b"x" * (2 * 1024 * 1024))
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    wrong_type = post(f"{server.w}/jobs/-trigger", json={"job_ids": "not-a-list"})
    assert wrong_type.status_code == 400 and "job_ids" in wrong_type.json()["detail"]
    other_ws = server.http.get("/api/v1/workspaces/00000000-0000-0000-0000-000000000000/jobs")
    assert other_ws.status_code == 404 and other_ws.json()["code"] == "workspace_not_found"
    negative = server.http.get(f"{server.w}/job-runs", params={"limit": -1})
    assert negative.status_code == 400
    bogus = server.http.get(f"{server.w}/job-runs", params={"status": "bogus"})
    assert bogus.status_code == 400
    empty = post(f"{server.w}/jobs/-trigger", json={})
    assert empty.status_code == 400 and empty.json()["detail"] == "give job_ids or selectors"


def test_archive_unarchive_rename_and_members(server: Server) -> None:
    job_id = server.job_id("tagged_two")
    archived = server.post(f"{server.w}/jobs/{job_id}/-archive")
    assert archived["is_archived"] is True
    listed = server.get(f"{server.w}/jobs", params={"is_archived": "false"})["items"]
    assert job_id not in {j["id"] for j in listed}
    refused = server.post(f"{server.w}/jobs/-trigger", json={"job_ids": [job_id]})
    assert refused["skipped"][0]["status"] == "skipped_workspace_archived"
    assert server.post(f"{server.w}/jobs/{job_id}/-unarchive")["is_archived"] is False
    renamed = server.http.patch(server.w, json={"description": "nightly loads"})
    assert renamed.status_code == 200 and renamed.json()["description"] == "nightly loads"
    assert renamed.json()["name"] == server.get(server.w)["name"]
    members = server.get(f"{server.w}/members")["items"]
    assert any(m["name"] == "local-admin" and m["role"] == "owner" for m in members)


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_job_ls_shows_refs_triggers_and_last_status(server: Server) -> None:
    out = server.cli("job", "ls").stdout
    assert "jobs.__deployment__.after_ok" in out
    assert "after ok succeeds" in out
    assert "interactive" in out


def test_cli_job_run_wait_follows_logs_and_exits_with_the_outcome(server: Server) -> None:
    ok = server.cli("job", "run", "greet", "--param", "greeting=from cli", "--wait")
    assert "greeting=from cli" in ok.stdout
    assert "completed" in ok.stdout
    bad = server.cli("job", "run", "__deployment__.boom", "--wait", check=False)
    assert bad.returncode == 1
    assert "boom failed on purpose" in bad.stdout
    assert "failed" in bad.stdout


def test_cli_ambiguous_or_unknown_ref_is_a_clear_error(server: Server) -> None:
    missing = server.cli("job", "run", "nope", check=False)
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr


def test_cli_pause_resume_and_runs(server: Server) -> None:
    server.cli("job", "pause", "jobs.__deployment__.yearly")
    assert server.jobs()["yearly"]["is_paused"] is True
    # a paused job's manual triggers still work (by id, a job fires its default trigger:
    # the paused schedule)
    started = server.post(
        f"{server.w}/job-runs", json={"job_id": server.job_id("yearly"), "trigger": "manual:"}
    )
    run = server.wait_run(started["id"])
    assert run["status"] == "completed"
    server.cli("job", "resume", "yearly")
    assert server.jobs()["yearly"]["is_paused"] is False
    listing = server.cli("run", "ls", "--job", "yearly", "--status", "completed").stdout
    assert run["id"] in listing
    shown = server.cli("run", "show", run["id"]).stdout
    assert "completed" in shown and run["id"] in shown
    logs = server.cli("run", "logs", run["id"]).stdout
    assert "yearly ran" in logs
    # a job without a schedule has nothing to pause: the CLI prints the server's reason
    refused = server.cli("job", "pause", "ok", check=False)
    assert refused.returncode != 0
    assert "has no next scheduled run to pause" in " ".join(refused.stderr.split())


def test_cli_cancel_and_follow(server: Server) -> None:
    run = server.start_run("slow", parameters={"seconds": "30"})
    server.wait_run(run["id"], states={"running"})
    server.cli("run", "cancel", run["id"])
    follow = server.cli("run", "logs", run["id"], "--follow", check=False)
    assert follow.returncode == 1 and "cancelled" in follow.stdout


def test_deploy_reports_unchanged_manifest(server: Server) -> None:
    out = server.cli("deploy").stdout
    assert "unchanged" in out


ERROR_KEYS = {"code", "detail", "extra", "status_code"}


def test_pause_needs_a_next_scheduled_run_and_is_idempotent(server: Server) -> None:
    # the scheduler sets the next run soon after the start or a resume
    server.wait_for(lambda: server.jobs()["yearly"]["next_scheduled_run_at"], 10, "next run")
    jobs = server.jobs()
    yearly, ok = jobs["yearly"], jobs["ok"]
    assert ok["next_scheduled_run_at"] is None
    for _ in range(2):  # pausing a paused job answers it again
        paused = server.post(f"{server.w}/jobs/{yearly['id']}/-pause")
        assert paused["is_paused"] is True
    assert server.post(f"{server.w}/jobs/{yearly['id']}/-resume")["is_paused"] is False
    refused = server.http.post(f"{server.w}/jobs/{ok['id']}/-pause")
    assert refused.status_code == 400
    body = refused.json()
    assert set(body) == ERROR_KEYS and body["status_code"] == 400
    assert body["code"] == "job_not_scheduled"
    assert body["detail"].startswith("job jobs.__deployment__.ok has no next scheduled run")
    assert server.jobs()["ok"]["is_paused"] is False
    server.post(f"{server.w}/jobs/{yearly['id']}/-archive")
    try:
        archived = server.http.post(f"{server.w}/jobs/{yearly['id']}/-pause")
        assert archived.status_code == 400 and archived.json()["code"] == "job_archived"
    finally:
        server.post(f"{server.w}/jobs/{yearly['id']}/-unarchive")


def test_an_archived_workspace_answers_skips_and_409s(server: Server) -> None:
    org = server.get("/api/v1/organizations")["items"][0]["id"]
    listing = f"/api/v1/organizations/{org}/workspaces"
    archived = server.post(f"{server.w}/-archive")
    try:
        assert archived["archived_at"] is not None and archived["id"] == server.ws_id
        again = server.post(f"{server.w}/-archive")
        assert again["archived_at"] == archived["archived_at"]
        assert server.get(server.w)["archived_at"] == archived["archived_at"]
        assert server.get(listing)["items"] == []
        (listed,) = server.get(listing, params={"include_archived": "true"})["items"]
        assert listed["archived_at"] == archived["archived_at"]
        job_id = server.job_id("ok")
        answer = server.post(f"{server.w}/jobs/-trigger", json={"job_ids": [job_id]})
        assert answer["succeeded"] == [] and answer["failed"] == []
        (skipped,) = answer["skipped"]
        assert skipped["status"] == "skipped_workspace_archived"
        assert skipped["job_run_id"] is None
        refused = server.http.post(f"{server.w}/job-runs", json={"job_id": job_id})
        assert refused.status_code == 409
        body = refused.json()
        assert set(body) == ERROR_KEYS and body["code"] == "skipped_workspace_archived"
        assert "workspace is archived" in body["detail"]
        assert body["extra"] == {"reasons": ["workspace is archived; unarchive it to run jobs"]}
    finally:
        back = server.post(f"{server.w}/-unarchive")
    assert back["archived_at"] is None
    assert len(server.get(listing)["items"]) == 1
    run = server.start_run("ok")
    assert server.wait_run(run["id"])["status"] == "completed"


def test_creating_a_workspace_is_refused_on_a_one_workspace_server(server: Server) -> None:
    org = server.get("/api/v1/organizations")["items"][0]["id"]
    refused = server.http.post(
        f"/api/v1/organizations/{org}/workspaces", json={"name": "two", "description": None}
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "single_workspace_server"
    same = server.http.post(
        f"/api/v1/organizations/{org}/-set-region", json={"dataplane_id": "headwater"}
    )
    assert same.status_code == 200 and same.json()["dataplane_id"] == "headwater"


def test_a_run_of_the_workspace_folder_names_stable_stand_ins_and_dlts_profile(
    server: Server,
) -> None:
    first = server.wait_run(server.start_run("where")["id"])
    second = server.wait_run(server.start_run("where")["id"])
    # no package was uploaded: the ids are the same stand-ins for every run
    assert first["deployment_id"] == second["deployment_id"]
    assert first["configuration_id"] == second["configuration_id"]
    listed = [d["id"] for d in server.get(f"{server.w}/deployments")["items"]]
    if isinstance(server, RemoteServer):
        # remote workers get the folder as a package the server made of it, once
        assert listed == [first["deployment_id"]]
    else:
        assert listed == []
    # no profile asked, none in the job, none pinned: dlt runs it under `dev`
    assert first["profile"] == first["job"]["profile"] == "dev"
    assert server.jobs()["where"]["profile"] == "dev"
