"""The official client (`dlthub-client` 0.28.7): its CLI and SDK against a real Headwater.

Only the base URL, the workspace id and the key are swapped; nothing else is told
that the server is not the managed runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dlthub_sdk
import pytest

from tests.integration.harness import HERE, Server, copy_workspace

pytestmark = pytest.mark.integration

DLTHUB = str(Path(sys.executable).parent / "dlthub")


class Env:
    def __init__(self, srv: Server, local: Path, admin: str) -> None:
        self.srv, self.local, self.admin = srv, local, admin

    def env(self, key: str | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "RUNTIME__API_BASE_URL": self.srv.url,
            "RUNTIME__API_KEY": key or self.admin,
            "RUNTIME__WORKSPACE_ID": self.srv.ws_id,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "PYTHONUNBUFFERED": "1",
        }

    def dlthub(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DLTHUB, *args],
            cwd=self.local,
            env=self.env(key),
            capture_output=True,
            text=True,
            timeout=90,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("clients")
    served = root / "server"
    served.mkdir()
    srv = Server(served).start(wait_warm=False)  # an empty server, waiting for a deploy
    local = copy_workspace(HERE / "workspace", root / "local")
    (local / ".dlt").mkdir(exist_ok=True)
    (local / ".dlt" / ".workspace").touch()
    (local / ".gitignore").write_text(".headwater/\n")
    admin = srv.cli("key", "create", "--name", "laptop", "--scope", "admin").stdout.strip()
    yield Env(srv, local, admin)
    srv.stop()


def test_dlthub_deploy_uploads_once_and_reconciles_jobs(env: Env) -> None:
    first = env.dlthub("deploy")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "15 added" in first.stdout
    again = env.dlthub("deploy")
    assert again.returncode == 0 and "0 added, 0 updated" in again.stdout
    versions = env.srv.get(f"{env.srv.w}/deployments")["total"]
    assert versions == 1  # the server answered the hash dlt computed: no second upload


def test_new_runs_use_the_newest_package(env: Env) -> None:
    deployment = env.local / "__deployment__.py"
    deployment.write_text(deployment.read_text().replace('print("ok ran")', 'print("ok ran v2")'))
    done = env.dlthub("deploy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert env.srv.get(f"{env.srv.w}/deployments")["total"] == 2
    run = env.srv.wait_run(env.srv.start_run("ok")["id"])
    assert "ok ran v2" in env.srv.user_output(run["id"])


def test_dlthub_job_commands(env: Env) -> None:
    listed = env.dlthub("job", "list")
    assert listed.returncode == 0 and "__deployment__.greet" in listed.stdout
    triggered = env.dlthub("job", "trigger", "ok")
    assert triggered.returncode == 0 and "run #" in triggered.stdout, triggered.stdout
    dry = env.dlthub("job", "trigger", "tag:nightly", "--dry-run")
    assert "tagged_one" in dry.stdout and "tagged_two" in dry.stdout
    assert env.srv.runs("tagged_one") == []
    ok_run = env.srv.runs("ok")[0]
    env.srv.wait_run(ok_run["id"])
    runs = env.dlthub("job", "runs", "list")
    assert runs.returncode == 0 and "__deployment__.ok" in runs.stdout
    logs = env.dlthub("job", "logs", "ok")
    assert logs.returncode == 0 and "ok ran" in logs.stdout


def test_dlthub_follows_a_failing_run_and_cancels_an_active_one(env: Env) -> None:
    # the run outlives the CLI's start however slow the machine is: it is ended from the
    # server only once the CLI says it follows the live stream, and the CLI must fail with it
    followed = env.srv.start_run("slow", parameters={"seconds": "120"})
    env.srv.wait_run(followed["id"], states={"running"})
    with subprocess.Popen(
        [DLTHUB, "job", "logs", "slow", "-f"],
        cwd=env.local,
        env=env.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as follow:
        assert follow.stdout is not None
        out = []
        for line in follow.stdout:
            out.append(line)
            if "Streaming logs" in line:
                env.srv.post(f"{env.srv.w}/job-runs/{followed['id']}/-cancel")
        assert follow.wait(90) != 0, "".join(out)
    assert "slow started" in "".join(out) and "cancelled" in "".join(out), "".join(out)
    slow = env.srv.start_run("slow", parameters={"seconds": "30"})
    env.srv.wait_run(slow["id"], states={"running"})
    cancel = env.dlthub("job", "cancel", "slow")
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert env.srv.wait_run(slow["id"])["status"] == "cancelled"


def test_dlthub_pause_resume_and_workspace_info(env: Env) -> None:
    assert env.dlthub("job", "pause", "yearly").returncode == 0
    assert env.srv.jobs()["yearly"]["is_paused"] is True
    assert env.dlthub("job", "resume", "yearly").returncode == 0
    assert env.srv.jobs()["yearly"]["is_paused"] is False
    info = env.dlthub("workspace", "info")
    assert info.returncode == 0 and "registered jobs: 15" in info.stdout, info.stdout


def test_trigger_key_triggers_but_cannot_deploy(env: Env) -> None:
    key = env.srv.cli("key", "create", "--name", "ci", "--scope", "trigger").stdout.strip()
    assert env.dlthub("job", "trigger", "ok", key=key).returncode == 0
    denied = env.dlthub("deploy", key=key)
    assert denied.returncode != 0


def test_sdk_trigger_wait_logs_and_stream(env: Env) -> None:
    with dlthub_sdk.connect(token=env.admin, base_url=env.srv.url) as runtime:
        ws = runtime.workspaces.get(id=env.srv.ws_id)
        (result,) = ws.jobs.trigger(refs=["jobs.__deployment__.ok"])
        assert result.started, result
        run = ws.job_runs.get(id=result.job_run_id).wait(timeout=60)
        assert run.status == "completed"
        assert any("ok ran" in line.content for line in run.logs())
        started = ws.jobs.get_by_ref("jobs.__deployment__.tagged_two").start_run()
        streamed = [line.content for line in started.stream_logs()]
        assert "tagged_two ran" in streamed
        assert started.wait(timeout=60).status == "completed"


def test_headwater_deploy_to_a_remote_server(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    remote = Server(other).start(wait_warm=False)
    try:
        key = remote.cli("key", "create", "--name", "laptop", "--scope", "admin").stdout.strip()
        source = tmp_path / "src"
        shutil.copytree(env.local, source)
        first = remote.cli("deploy", "-w", str(source), "--to", remote.url, "--key", key)
        assert "created" in first.stdout and "uploaded version 1" in first.stdout
        again = remote.cli("deploy", "-w", str(source), "--to", remote.url, "--key", key)
        assert "unchanged (version 1)" in again.stdout
        run = remote.wait_run(remote.start_run("ok")["id"])
        assert run["status"] == "completed"
    finally:
        remote.stop()
