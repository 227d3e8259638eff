"""The official dltHub client, unchanged, against a real `headwater up`.

The `dlthub` CLI runs as a subprocess inside a local dlt workspace, and the SDK
(`dlthub_sdk`) runs in-process; only the base URL, the workspace id and the key
tell them where to go. The server starts on an empty folder, so everything it
runs arrives through `dlthub deploy` (code, configuration and jobs).

The tests share one server and one local workspace, and run in file order: deploy
first, then the commands that need deployed jobs.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dlthub_sdk
import dlthub_sdk.errors
import httpx
import pytest

from tests.integration.harness import HERE, TERMINAL, Server, copy_workspace, run_dlthub

pytestmark = pytest.mark.integration

TIMEOUT = 60
JOBS = {
    "ok",
    "boom",
    "after_ok",
    "after_boom_fail",
    "after_boom_success",
    "slow",
    "stubborn",
    "pipe_a",
    "pipe_b",
    "tagged_one",
    "tagged_two",
    "greet",
    "where",
    "yearly",
}
# `greet` reads it; `Job.start_run()` in the SDK cannot pass parameters, so the value
# travels as workspace configuration (`.dlt/config.toml` -> the configuration package)
GREETING = "hello from config"


class Clients:
    def __init__(self, srv: Server, local: Path, home: Path, admin: str) -> None:
        self.srv, self.local, self.home, self.admin = srv, local, home, admin

    def dlthub(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_dlthub(
            self.srv, key or self.admin, self.local, self.home, *args, timeout=TIMEOUT
        )

    def ok(self, *args: str, key: str | None = None) -> str:
        proc = self.dlthub(*args, key=key)
        assert proc.returncode == 0, (
            f"dlthub {args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    def settle(self) -> None:
        """Wait until no run is active and every completed `ok` has fired its `after_ok`."""

        def quiet() -> bool:
            runs = self.srv.runs()
            done_ok = [r for r in runs if r["job"]["job_ref"].endswith(".ok")]
            followers = [r for r in runs if r["job"]["job_ref"].endswith(".after_ok")]
            finished = all(r["status"] in TERMINAL for r in runs)
            completed = sum(r["status"] == "completed" for r in done_ok)
            return finished and len(followers) == completed

        self.srv.wait_for(quiet, 30, "no active runs")

    def versions(self, plural: str) -> list[dict[str, Any]]:
        """Every stored code (`deployments`) or config (`configurations`) version, newest first."""
        page = self.srv.get(f"{self.srv.w}/{plural}", params={"limit": 100})
        assert page["total"] == len(page["items"])
        return page["items"]

    @contextmanager
    def edited(self, old: str, new: str) -> Iterator[None]:
        """`__deployment__.py` with one text replaced, restored afterwards."""
        path = self.local / "__deployment__.py"
        before = path.read_text()
        assert old in before
        path.write_text(before.replace(old, new))
        try:
            yield
        finally:
            path.write_text(before)

    def edit(self, old: str, new: str) -> None:
        path = self.local / "__deployment__.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    root = tmp_path_factory.mktemp("dlthub")
    served = root / "server"
    served.mkdir()
    srv = Server(served).start(wait_warm=False)  # an empty server, waiting for a deploy
    try:
        local = copy_workspace(HERE / "workspace", root / "local")
        (local / ".dlt").mkdir(exist_ok=True)
        (local / ".dlt" / ".workspace").touch()  # the dlthub plugin registers only in a workspace
        (local / ".dlt" / "config.toml").write_text(f'greeting = "{GREETING}"\n')
        (local / ".gitignore").write_text(".headwater/\n")
        home = root / "home"
        home.mkdir()
        admin = srv.cli("key", "create", "--name", "laptop", "--scope", "admin").stdout.strip()
        yield Clients(srv, local, home, admin)
    finally:
        srv.stop()


FOLLOW_BEFORE_CANCEL_S = 8.0
"""Time the `dlthub` CLI gets to start following a run (its import alone takes ~1 s)."""


def run_number(stdout: str) -> int:
    found = re.findall(r"run #(\d+)", stdout)
    assert len(found) == 1, stdout
    return int(found[0])


# -- deploy ---------------------------------------------------------------------------------------


def test_dlthub_deploy_uploads_code_and_configuration_and_creates_the_jobs(
    clients: Clients,
) -> None:
    out = clients.ok("deploy")
    assert "Synced changed workspace files" in out, out
    assert "Synced changed workspace configuration" in out, out
    assert "15 added, 0 updated, 0 archived" in out, out
    jobs = clients.srv.jobs()
    assert set(jobs) == JOBS | {"dashboard"}  # 14 from __deployment__.py + dlt's dashboard
    assert jobs["dashboard"]["job_ref"] == "jobs.workspace.dashboard"
    (code,) = clients.versions("deployments")
    assert code["version"] == 1
    (config,) = clients.versions("configurations")
    assert config["version"] == 1 and config["file_count"] == 1  # .dlt/config.toml


def test_a_second_dlthub_deploy_uploads_nothing(clients: Clients) -> None:
    out = clients.ok("deploy")
    assert "Synced" not in out, out  # the server answered the content hash dlt computed
    assert "0 added, 0 updated, 0 archived" in out, out
    assert [v["version"] for v in clients.versions("deployments")] == [1]
    assert [v["version"] for v in clients.versions("configurations")] == [1]


def test_dlthub_deploy_of_an_edited_job_uploads_version_2_and_new_runs_use_it(
    clients: Clients,
) -> None:
    clients.edit('print("ok ran")', 'print("ok ran v2")')
    out = clients.ok("deploy")
    assert "Synced changed workspace files" in out, out
    assert "Synced changed workspace configuration" not in out, out
    # only a function body changed: the job definitions (the manifest) are the same
    assert "Unchanged jobs:" in out and "0 added, 0 updated, 0 archived" in out, out
    newest, oldest = clients.versions("deployments")
    assert (newest["version"], oldest["version"]) == (2, 1)
    assert len(clients.versions("configurations")) == 1
    run = clients.srv.wait_run(clients.srv.start_run("ok")["id"])
    assert run["status"] == "completed", clients.srv.logs(run["id"])
    assert clients.srv.user_output(run["id"]) == ["ok ran v2"]


def test_a_run_names_the_deployment_and_configuration_it_ran_on(clients: Clients) -> None:
    srv = clients.srv
    run = srv.run(srv.runs("ok")[0]["id"])
    code = srv.http.get(f"{srv.w}/deployments/{run['deployment_id']}")
    assert code.status_code == 200, code.text
    assert code.json()["id"] == clients.versions("deployments")[0]["id"]
    config = srv.http.get(f"{srv.w}/configurations/{run['configuration_id']}")
    assert config.status_code == 200, config.text
    assert config.json()["id"] == clients.versions("configurations")[0]["id"]
    # no profile asked, none in the job, none pinned: dlt runs it under `dev`
    assert run["profile"] == run["job"]["profile"] == run["job_version"]["profile"] == "dev"
    # every run names a stored code and configuration version (a run created before the
    # second deploy names version 1)
    codes = {v["id"] for v in clients.versions("deployments")}
    configs = {v["id"] for v in clients.versions("configurations")}
    for listed in srv.runs():
        assert listed["deployment_id"] in codes and listed["configuration_id"] in configs


# -- jobs and runs through the CLI ----------------------------------------------------------------


def test_dlthub_job_list_shows_the_deployed_jobs(clients: Clients) -> None:
    out = clients.ok("job", "list")
    listed = set(re.findall(r"^__deployment__\.(\w+)\s", out, re.MULTILINE))
    assert listed == JOBS, out
    assert re.search(r"^workspace\.dashboard\s.*\binteractive\b.*http:", out, re.MULTILINE), out


def test_dlthub_job_trigger_starts_a_run_and_prints_its_number(clients: Clients) -> None:
    before = len(clients.srv.runs("ok"))
    out = clients.ok("job", "trigger", "ok")
    assert "1 job(s) triggered, 0 skipped" in out, out
    runs = clients.srv.runs("ok")
    assert len(runs) == before + 1
    assert run_number(out) == runs[0]["number"]
    assert clients.srv.wait_run(runs[0]["id"])["status"] == "completed"


def test_dlthub_job_trigger_dry_run_by_tag_lists_the_tagged_jobs_and_starts_nothing(
    clients: Clients,
) -> None:
    total = len(clients.srv.runs())
    out = clients.ok("job", "trigger", "tag:nightly", "--dry-run")
    assert "[DRY RUN]" in out, out
    assert "jobs.__deployment__.tagged_one" in out and "jobs.__deployment__.tagged_two" in out
    assert "jobs.__deployment__.ok" not in out  # tagged grp, not nightly
    assert "2 job(s) triggered" in out, out
    assert clients.srv.runs("tagged_one") == [] and clients.srv.runs("tagged_two") == []
    assert len(clients.srv.runs()) == total


def test_dlthub_job_runs_list_shows_runs_newest_first(clients: Clients) -> None:
    clients.settle()
    server_runs = sorted(
        clients.srv.runs(), key=lambda r: datetime.fromisoformat(r["created_at"]), reverse=True
    )
    assert len(server_runs) >= 4  # ok twice, after_ok twice
    out = clients.ok("job", "runs", "list")
    rows = [
        (name, int(number))
        for name, number in re.findall(r"^__deployment__\.(\w+)\s+(\d+)\s", out, re.MULTILINE)
    ]
    expected = [(r["job"]["job_ref"].rsplit(".", 1)[-1], r["number"]) for r in server_runs]
    assert rows == expected, out
    only_ok = clients.ok("job", "runs", "list", "ok")
    ok_rows = re.findall(r"^__deployment__\.(\w+)\s+(\d+)\s", only_ok, re.MULTILINE)
    assert ok_rows and {name for name, _ in ok_rows} == {"ok"}, only_ok
    assert [int(n) for _, n in ok_rows] == sorted((int(n) for _, n in ok_rows), reverse=True)


def test_dlthub_job_logs_prints_the_stored_log(clients: Clients) -> None:
    latest = clients.srv.runs("ok")[0]
    clients.srv.wait_run(latest["id"])
    out = clients.ok("job", "logs", "ok")
    assert f"Run # {latest['number']} of job jobs.__deployment__.ok" in out, out
    assert re.search(r"\[user\]\s+ok ran", out), out


def test_dlthub_job_logs_follow_streams_an_active_run_and_fails_with_it(clients: Clients) -> None:
    # the run outlives the CLI's start however slow the machine is, and is cancelled from
    # the server while the CLI follows it: the stream must close and the CLI fail with it
    run = clients.srv.start_run("slow", parameters={"seconds": "120"})
    clients.srv.wait_run(run["id"], states={"running"})
    cancel = threading.Timer(
        FOLLOW_BEFORE_CANCEL_S,
        lambda: clients.srv.post(f"{clients.srv.w}/job-runs/{run['id']}/-cancel"),
    )
    cancel.start()
    try:
        follow = clients.dlthub("job", "logs", "slow", "-f")
    finally:
        cancel.cancel()
    assert follow.returncode != 0, follow.stdout + follow.stderr
    assert "Streaming logs" in follow.stdout, follow.stdout  # followed live, not the stored log
    assert "slow started" in follow.stdout
    assert "finished with status: cancelled" in follow.stdout, follow.stdout
    assert clients.srv.run(run["id"])["status"] == "cancelled"


def test_dlthub_job_cancel_cancels_an_active_run(clients: Clients) -> None:
    run = clients.srv.start_run("slow", parameters={"seconds": "30"})
    clients.srv.wait_run(run["id"], states={"running"})
    dry = clients.ok("job", "cancel", "slow", "--dry-run")
    assert clients.srv.run(run["id"])["status"] == "running", dry
    out = clients.ok("job", "cancel", "slow")
    assert f"Cancelled run # {run['number']} of jobs.__deployment__.slow" in out, out
    assert "1 run(s) cancelled" in out, out
    assert clients.srv.wait_run(run["id"], timeout=15)["status"] == "cancelled"
    again = clients.ok("job", "cancel", "slow")
    assert "no active run" in again, again


def test_dlthub_job_pause_and_resume_flip_is_paused(clients: Clients) -> None:
    clients.srv.wait_for(
        lambda: clients.srv.jobs()["yearly"]["next_scheduled_run_at"], 10, "next run"
    )
    clients.ok("job", "pause", "yearly")
    assert clients.srv.jobs()["yearly"]["is_paused"] is True
    assert clients.srv.jobs()["ok"]["is_paused"] is False  # only the selected job
    clients.ok("job", "resume", "yearly")
    assert clients.srv.jobs()["yearly"]["is_paused"] is False


def test_dlthub_job_pause_of_a_job_without_a_schedule_reports_the_400(clients: Clients) -> None:
    proc = clients.dlthub("job", "pause", "ok")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "has no next scheduled run to pause" in out, out
    assert "[job_not_scheduled]" in out, out
    assert clients.srv.jobs()["ok"]["is_paused"] is False


def test_dlthub_workspace_info_names_the_workspace(clients: Clients) -> None:
    name = clients.srv.get(clients.srv.w)["name"]
    out = clients.ok("workspace", "info")
    assert f"Workspace: {name} {clients.srv.ws_id}" in out, out
    assert "registered jobs: 15" in out, out
    assert "Current deployment version: 2" in out, out


def test_dlthub_job_publish_refuses_a_batch_job_and_publishes_the_dashboard(
    clients: Clients,
) -> None:
    refused = clients.dlthub("job", "publish", "ok")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    out = refused.stdout + refused.stderr
    assert "only interactive jobs (notebooks, apps) can be published" in out, out
    assert "[job_not_interactive]" in out, out
    assert clients.srv.jobs()["ok"]["public_url"] is None
    with dlthub_sdk.connect(token=clients.admin, base_url=clients.srv.url) as runtime:
        ws = runtime.workspaces.get(id=clients.srv.ws_id)
        dashboard = ws.jobs.get_by_ref("jobs.workspace.dashboard")
        published = dashboard.publish()
        assert published.public_url and published.public_url.startswith(clients.srv.url)
        job = clients.srv.jobs()["dashboard"]
        assert job["public_url"] == published.public_url
        assert job["public_url"].endswith(f"/p/{job['public_secret']}")
        # the link is this server's; it says that interactive jobs are not served yet
        page = clients.srv.http.get(job["public_url"], headers={"Authorization": ""})
        assert page.status_code == 501 and page.json()["code"] == "not_served"
        again = ws.jobs.get_by_ref("jobs.workspace.dashboard").publish()
        assert again.public_url == published.public_url  # publishing twice keeps the link
    out = clients.ok("job", "unpublish", "dashboard")
    assert "disabled successfully" in out, out
    job = clients.srv.jobs()["dashboard"]
    assert job["public_url"] is None and job["public_secret"] is None
    assert clients.srv.http.get(published.public_url).status_code == 404


def test_a_second_workspace_cannot_be_created_and_the_region_is_this_server(
    clients: Clients,
) -> None:
    # the CLI itself refuses to create a workspace with a workspace (service) key
    proc = clients.dlthub("workspace", "connect", "--create", "another")
    assert proc.returncode != 0
    assert "A workspace API key cannot create workspaces" in proc.stdout + proc.stderr
    with dlthub_sdk.connect(token=clients.admin, base_url=clients.srv.url) as runtime:
        (org,) = runtime.organizations.list()
        with pytest.raises(dlthub_sdk.errors.Conflict) as refused:
            runtime.workspaces.create(name="another", organization_id=org.id)
        assert refused.value.code == "single_workspace_server"
        assert "serves exactly one workspace" in str(refused.value)
        assert org.set_dataplane(dataplane_id="headwater").id == org.id
        with pytest.raises(dlthub_sdk.errors.BadRequest) as other:
            org.set_dataplane(dataplane_id="eu-central")
        assert other.value.code == "region_already_set"
        assert "cannot be changed to 'eu-central'" in str(other.value)


def test_an_archived_workspace_starts_no_run_until_unarchived(clients: Clients) -> None:
    srv = clients.srv
    clients.settle()
    before = len(srv.runs())
    key = srv.cli("key", "create", "--name", "ops", "--scope", "trigger").stdout.strip()
    denied = httpx.post(
        f"{srv.url}{srv.w}/-archive", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert denied.status_code == 403, denied.text
    with dlthub_sdk.connect(token=clients.admin, base_url=srv.url) as runtime:
        ws = runtime.workspaces.get(id=srv.ws_id)
        try:
            archived = ws.archive()
            assert archived.archived_at is not None
            (result,) = ws.jobs.trigger(refs=["jobs.__deployment__.ok"])
            assert not result.started
            assert result.status == "skipped_workspace_archived"
            assert result.reasons == ("workspace is archived; unarchive it to run jobs",)
            with pytest.raises(dlthub_sdk.errors.Conflict) as refused:
                ws.jobs.get_by_ref("jobs.__deployment__.ok").start_run()
            assert refused.value.code == "skipped_workspace_archived"
            out = clients.ok("job", "trigger", "ok")
            assert "0 job(s) triggered, 1 skipped" in out, out
            assert len(srv.runs()) == before
        finally:
            unarchived = ws.unarchive()
        assert unarchived.archived_at is None
        (result,) = ws.jobs.trigger(refs=["jobs.__deployment__.ok"])
        assert result.started
    srv.wait_run(str(result.job_run_id))
    clients.settle()


# -- the SDK --------------------------------------------------------------------------------------


def test_sdk_triggers_by_ref_waits_and_reads_the_stored_log(clients: Clients) -> None:
    with dlthub_sdk.connect(token=clients.admin, base_url=clients.srv.url) as runtime:
        ws = runtime.workspaces.get(id=clients.srv.ws_id)
        (result,) = ws.jobs.trigger(refs=["jobs.__deployment__.ok"])
        assert result.started, result
        assert result.job_ref == "jobs.__deployment__.ok" and result.job_run_id
        run = ws.job_runs.get(id=result.job_run_id).wait(timeout=60)
        assert run.status == "completed"
        assert run.number == result.job_run_number
        lines = list(run.logs())
    assert "ok ran v2" in [line.content for line in lines if line.source == "user"]
    assert [line.line_num for line in lines] == list(range(len(lines)))  # 0-based


def test_sdk_start_run_streams_logs_until_the_run_ends(clients: Clients) -> None:
    with dlthub_sdk.connect(token=clients.admin, base_url=clients.srv.url) as runtime:
        ws = runtime.workspaces.get(id=clients.srv.ws_id)
        job = ws.jobs.get_by_ref("jobs.__deployment__.greet")
        assert job.job_ref == "jobs.__deployment__.greet"
        run = job.start_run()
        streamed = list(run.stream_logs())  # returns only when the server ends the stream
        assert clients.srv.run(run.id)["status"] in TERMINAL
        assert run.wait(timeout=60).status == "completed"
    user = [(line.io_stream, line.content) for line in streamed if line.source == "user"]
    assert ("stdout", f"greeting={GREETING}") in user, streamed
    assert ("stderr", "to stderr") in user, streamed


# -- scopes ---------------------------------------------------------------------------------------


def test_a_trigger_key_can_trigger_but_cannot_deploy(clients: Clients) -> None:
    key = clients.srv.cli("key", "create", "--name", "ci", "--scope", "trigger").stdout.strip()
    out = clients.ok("job", "trigger", "ok", key=key)
    run_number(out)
    versions = len(clients.versions("deployments"))
    with clients.edited('print("ok ran v2")', 'print("ok ran by ci")'):
        denied = clients.dlthub("deploy", key=key)
    assert denied.returncode != 0, denied.stdout + denied.stderr
    assert "[not_authorized]" in denied.stderr, denied.stderr  # the 403's ErrorResponse code
    assert len(clients.versions("deployments")) == versions


# -- headwater's own remote deploy ----------------------------------------------------------------


def test_headwater_deploy_to_a_url_uploads_changes_and_a_repeat_is_unchanged(
    clients: Clients,
) -> None:
    srv, local = clients.srv, str(clients.local)

    def deploy() -> str:
        return srv.cli("deploy", "-w", local, "--to", srv.url, "--key", clients.admin).stdout

    # what `dlthub deploy` uploaded: headwater's package builder computes the same hashes
    same = deploy()
    assert "deployments     unchanged (version 2)" in same, same
    assert "configurations  unchanged (version 1)" in same, same
    clients.edit('print("ok ran v2")', 'print("ok ran v3")')
    first = deploy()
    assert "deployments     uploaded version 3" in first, first
    assert "unchanged  jobs.__deployment__.ok" in first, first
    assert f"deployed to {srv.url}" in first
    again = deploy()
    assert "deployments     unchanged (version 3)" in again, again
    # and the dlthub client agrees that nothing is left to upload
    assert "Synced" not in clients.ok("deploy")
    assert [v["version"] for v in clients.versions("deployments")] == [3, 2, 1]
    run = srv.wait_run(srv.start_run("ok")["id"])
    assert srv.user_output(run["id"]) == ["ok ran v3"]
