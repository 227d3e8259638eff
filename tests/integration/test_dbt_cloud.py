"""dbt Cloud jobs on a real `headwater up` against the local fake of dbt Cloud's API: chains
both ways, modes skip / replace / ignore, artifacts, timeout, cancel, a bad token, a POST
whose answer was lost, and a SIGKILL of the server mid-watch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.dbt_cloud import FakeDbtCloud
from tests.integration.harness import WHERE, Server, run_dlthub, served

pytestmark = pytest.mark.integration

ACCOUNT = 12345
JOBS = {
    "transform": 100,
    "replaced": 101,
    "ignored": 102,
    "slow": 103,
    "bad": 104,
    "posted": 105,
    "many": 106,
}

WORKSPACE = """
import dlt.hub.run as run


@run.job
def load():
    print("loaded")


@run.job
def after():
    print("after transform")


__all__ = ["load", "after"]
"""


def config(url: str) -> str:
    return f"""
[jobs.after]
triggers = ["job.success:jobs.dbt_cloud.transform"]

[dbt_cloud.connections.prod]
account_id = {ACCOUNT}
token = "env:DBT_CLOUD_TOKEN"
access_url = "{url}"

[dbt_cloud.connections.wrong]
account_id = {ACCOUNT}
token = "env:DBT_CLOUD_WRONG_TOKEN"
access_url = "{url}"

[[dbt_cloud.jobs]]
name = "transform"
connection = "prod"
job_id = {JOBS["transform"]}
trigger = ["job.success:load"]
poll_interval = "1s"
cause = "Headwater: {{trigger}} after run {{upstream_run_number}} of {{upstream_job_ref}}"

[[dbt_cloud.jobs]]
name = "replaced"
connection = "prod"
job_id = {JOBS["replaced"]}
mode = "replace"
poll_interval = "1s"

[[dbt_cloud.jobs]]
name = "ignored"
connection = "prod"
job_id = {JOBS["ignored"]}
mode = "ignore"
poll_interval = "1s"

[[dbt_cloud.jobs]]
name = "slow"
connection = "prod"
job_id = {JOBS["slow"]}
poll_interval = "1s"
timeout = "3s"
cancel_on_timeout = true

[[dbt_cloud.jobs]]
name = "bad"
connection = "wrong"
job_id = {JOBS["bad"]}

[[dbt_cloud.jobs]]
name = "many"
connection = "prod"
job_id = {JOBS["many"]}
mode = "ignore"
poll_interval = "1s"

[[dbt_cloud.jobs]]
name = "posted"
connection = "prod"
job_id = {JOBS["posted"]}
mode = "ignore"
poll_interval = "1s"
"""


@pytest.fixture(scope="module", params=WHERE)
def where(request: pytest.FixtureRequest) -> str:
    """The engine on SQLite beside its own worker, or on PostgreSQL with remote workers
    (the monitor holds no worker either way; its store and leadership differ)."""
    return str(request.param)


@pytest.fixture(scope="module")
def fake(where: str) -> Iterator[FakeDbtCloud]:
    with FakeDbtCloud() as server:
        for name, job_id in JOBS.items():
            plan = {"running": {"slow": 60, "many": 6}.get(name, 1.0)}
            server.add_job(job_id, account_id=ACCOUNT, **plan)
        yield server


@pytest.fixture(scope="module")
def srv(
    where: str, fake: FakeDbtCloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("dbt-cloud") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    (ws / "headwater.toml").write_text(config(fake.url))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DBT_CLOUD_TOKEN", fake.token)
        mp.setenv("DBT_CLOUD_WRONG_TOKEN", "not-the-token")
        with served(ws, where) as server:
            yield server


def dbt_runs(fake: FakeDbtCloud, name: str) -> list[dict[str, Any]]:
    return [r for r in fake.runs() if r["job_definition_id"] == JOBS[name]]


def lines(srv: Server, run_id: str) -> str:
    return "\n".join(line["content"] for line in srv.logs(run_id))


def test_a_load_chains_to_dbt_cloud_which_chains_back_with_artifacts(
    srv: Server, fake: FakeDbtCloud
) -> None:
    load = srv.wait_run(srv.start_run("load")["id"])
    transform = srv.wait_for(lambda: srv.runs("transform"), 30, "the chained dbt Cloud run")[0]
    done = srv.wait_run(transform["id"], timeout=60)
    assert done["status"] == "completed", lines(srv, done["id"])
    made = dbt_runs(fake, "transform")
    assert len(made) == 1
    assert made[0]["cause"] == (
        f"Headwater: job.success:jobs.__deployment__.load after run {load['number']}"
        " of jobs.__deployment__.load"
    )
    log = lines(srv, done["id"])
    assert f"dbt Cloud run {made[0]['id']} started: {made[0]['href']}" in log
    assert f"dbt Cloud run {made[0]['id']}: success" in log
    detail = srv.run(done["id"])
    assert detail["dbt_cloud"] == {"run_id": made[0]["id"], "job_run_url": made[0]["href"]}
    artifacts = srv.get(f"{srv.w}/job-runs/{done['id']}/artifacts")
    assert artifacts["dbt"]["source"] == "dbt_cloud"
    assert artifacts["dbt"]["counts"] == {"success": 1, "pass": 1}
    # and back: a dlt job follows the dbt Cloud job (headwater.toml adds the chain)
    after = srv.wait_for(lambda: srv.runs("after"), 30, "the run after transform")[0]
    assert srv.wait_run(after["id"])["status"] == "completed"
    assert after["previous_job_run_id"] == done["id"]
    # no worker process ran it
    assert detail["launch_mode"] is None


def test_skip_declines_while_dbt_cloud_runs_the_job(srv: Server, fake: FakeDbtCloud) -> None:
    busy = fake.add_run(JOBS["transform"], frozen=True, status=2)
    posts = len(fake.requests("POST", rf"/jobs/{JOBS['transform']}/run/"))
    run = srv.wait_run(srv.start_run("transform")["id"], timeout=30)
    assert run["status"] == "skipped"
    assert run["reason"] == (
        f"skipped: dbt Cloud run(s) {busy['id']} of job {JOBS['transform']} in progress (mode skip)"
    )
    assert len(fake.requests("POST", rf"/jobs/{JOBS['transform']}/run/")) == posts
    fake.set_run(busy["id"], 10)


def test_replace_cancels_dbt_clouds_runs_then_posts(srv: Server, fake: FakeDbtCloud) -> None:
    first = fake.add_run(JOBS["replaced"], frozen=True, status=3)
    second = fake.add_run(JOBS["replaced"], frozen=True, status=1)
    run = srv.wait_run(srv.start_run("replaced")["id"], timeout=60)
    assert run["status"] == "completed", lines(srv, run["id"])
    statuses = {r["id"]: r["status"] for r in dbt_runs(fake, "replaced")}
    assert statuses[first["id"]] == statuses[second["id"]] == 30
    assert len(statuses) == 3


def test_ignore_posts_without_listing(srv: Server, fake: FakeDbtCloud) -> None:
    fake.add_run(JOBS["ignored"], frozen=True, status=3)
    listed = len(fake.requests("GET", r"/runs/$"))
    run = srv.wait_run(srv.start_run("ignored")["id"], timeout=60)
    assert run["status"] == "completed"
    assert len(fake.requests("GET", r"/runs/$")) == listed
    assert len(dbt_runs(fake, "ignored")) == 2


def test_timeout_fails_the_run_and_cancels_in_dbt_cloud(srv: Server, fake: FakeDbtCloud) -> None:
    run = srv.wait_run(srv.start_run("slow")["id"], timeout=60)
    assert run["status"] == "failed"
    assert run["reason"].startswith("timeout: dbt Cloud run ")
    assert run["reason"].endswith("; cancelled it in dbt Cloud")
    assert [r["status"] for r in dbt_runs(fake, "slow")] == [30]


def test_cancelling_the_run_cancels_the_dbt_cloud_run(srv: Server, fake: FakeDbtCloud) -> None:
    started = srv.start_run("slow")
    srv.wait_for(lambda: srv.run(started["id"])["status"] == "running", 30, "running")
    srv.post(f"{srv.w}/job-runs/{started['id']}/-cancel")
    ended = srv.wait_run(started["id"], timeout=30)
    assert ended["status"] == "cancelled"
    assert dbt_runs(fake, "slow")[-1]["status"] == 30


def test_a_wrong_token_fails_with_dbt_clouds_message(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("bad")["id"], timeout=30)
    assert run["status"] == "failed"
    assert "401: Invalid token." in run["reason"]
    assert "not-the-token" not in lines(srv, run["id"])


def test_a_post_whose_answer_was_lost_is_found_by_its_cause(
    srv: Server, fake: FakeDbtCloud
) -> None:
    fake.fail_after_post(1)
    run = srv.wait_run(srv.start_run("posted")["id"], timeout=60)
    assert run["status"] == "completed", lines(srv, run["id"])
    assert len(dbt_runs(fake, "posted")) == 1
    assert "looking the run up by its cause" in lines(srv, run["id"])


def test_the_official_client_lists_dbt_cloud_jobs(srv: Server) -> None:
    client = srv.workspace.parent / "client"
    (client / ".dlt").mkdir(parents=True, exist_ok=True)
    (client / ".dlt" / ".workspace").touch()
    listed = run_dlthub(srv, srv.key, client, client, "job", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "dbt_cloud.transform" in listed.stdout


def test_a_sigkill_mid_watch_resumes_the_watch_after_restart(
    srv: Server, fake: FakeDbtCloud
) -> None:
    fake.add_job(JOBS["transform"], account_id=ACCOUNT, running=6.0)
    started = srv.start_run("transform")
    srv.wait_for(lambda: srv.run(started["id"])["status"] == "running", 30, "running")
    srv.kill()
    srv.start()
    done = srv.wait_run(started["id"], timeout=60)
    assert done["status"] == "completed", lines(srv, done["id"])
    assert "after a restart: watching dbt Cloud run" in lines(srv, done["id"])
    ours = [r for r in dbt_runs(fake, "transform") if r["id"] == done["dbt_cloud"]["run_id"]]
    assert len(ours) == 1


def test_t14_a_trigger_answers_at_once_while_dbt_cloud_is_slow(
    srv: Server, fake: FakeDbtCloud
) -> None:
    fake.fault("POST", rf"/jobs/{JOBS['ignored']}/run/$", delay=5.0)
    made = len(dbt_runs(fake, "ignored"))
    answer = srv.trigger("ignored")["succeeded"][0]
    # answered with the run pending, before dbt Cloud made the run: the monitor posts later
    assert answer["job_run"]["status"] == "pending"
    assert len(dbt_runs(fake, "ignored")) == made
    done = srv.wait_run(answer["job_run_id"], timeout=60)
    assert done["status"] == "completed", lines(srv, done["id"])


def test_t6_replace_whose_cancel_fails_posts_nothing_and_fails(
    srv: Server, fake: FakeDbtCloud
) -> None:
    busy = fake.add_run(JOBS["replaced"], frozen=True, status=3)
    fake.fault("POST", rf"/runs/{busy['id']}/cancel/$", status=500, times=10)
    posts = len(fake.requests("POST", rf"/jobs/{JOBS['replaced']}/run/$"))
    run = srv.wait_run(srv.start_run("replaced")["id"], timeout=120)
    assert run["status"] == "failed"
    assert run["reason"].startswith(f"replace: dbt Cloud run {busy['id']} could not be cancelled")
    assert len(fake.requests("POST", rf"/jobs/{JOBS['replaced']}/run/$")) == posts
    fake.set_run(busy["id"], 30)


def test_a_job_watched_many_times_is_polled_through_its_list_of_active_runs(
    srv: Server, fake: FakeDbtCloud
) -> None:
    job_id = srv.job_id("many")
    runs = [
        srv.post(f"{srv.w}/job-runs", json={"job_id": job_id, "trigger": "manual:"})
        for _ in range(25)
    ]
    srv.wait_for(
        lambda: sum(srv.run(r["id"])["status"] == "running" for r in runs) == 25, 60, "25 watched"
    )
    before = len(fake.requests("GET", r"/runs/\d+/$"))
    listed_before = len(fake.requests("GET", r"/runs/$"))
    done = [srv.wait_run(r["id"], timeout=90) for r in runs]
    assert {r["status"] for r in done} == {"completed"}
    lists = [
        q for q in fake.requests("GET", r"/runs/$")[listed_before:] if "106" in str(q.get("query"))
    ]
    singles = len(fake.requests("GET", r"/runs/\d+/$")) - before
    # a second of polling 25 runs one by one is 25 requests; the list answers them in one
    assert lists, "no list request for the job"
    assert singles < 25 * 3, singles
