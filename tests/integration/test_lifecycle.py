"""Manifest reloads, bad manifests, crashes and restarts of a real `headwater up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.integration

BASE = """
import time
import dlt.hub.run as run


@run.pipeline("shared_p", name="first", execute={"intercept_signals": False})
def first():
    print("first ran", flush=True)
    time.sleep(float(__import__("os").environ.get("FIRST_SLEEP", "0")))


@run.pipeline("shared_p", name="queued")
def queued():
    print("queued ran", flush=True)


@run.job(trigger=[run.trigger.deployment()])
def on_deploy():
    print("deployed")
"""


def write_workspace(path: Path, body: str, all_names: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "__deployment__.py").write_text(body + f"\n__all__ = {all_names!r}\n")


LAYOUTS = pytest.mark.parametrize(
    "layout", [(), ("--separate-worker",)], ids=["single-process", "separate-worker"]
)


@LAYOUTS
def test_manifest_hot_reload_bad_manifest_survival_and_deployment_trigger(
    tmp_path: Path, layout: tuple[str, ...]
) -> None:
    ws = tmp_path / "ws"
    write_workspace(ws, BASE, ["first", "queued", "on_deploy"])
    srv = Server(ws, *layout).start()
    try:
        # the first manifest version fires `deployment:` jobs
        srv.wait_for(lambda: srv.runs("on_deploy"), 20, "deployment-triggered run")
        assert set(srv.jobs()) == {"first", "queued", "on_deploy", "dashboard"}
        v1 = srv.get(srv.w)["manifest"]["version"]

        # a new job appears without a restart (file watch)
        warm_before = srv.log().count("warm launcher ready")
        extra = BASE + textwrap.dedent("""
            @run.job
            def second():
                print("second ran")
        """)
        write_workspace(ws, extra, ["first", "queued", "on_deploy", "second"])
        srv.wait_for(lambda: "second" in srv.jobs(), 30, "hot reload")
        # the jobs' rows are written before the manifest's status: wait for the latter too
        manifest = srv.wait_for(
            lambda: (m := srv.get(srv.w)["manifest"])["version"] != v1 and m, 10, "manifest v2"
        )
        assert manifest["version"] == v1 + 1 and manifest["error"] is None
        srv.wait_for(lambda: len(srv.runs("on_deploy")) >= 2, 20, "second deployment run")
        # a good reload warms a new launcher with the new code
        srv.wait_for(
            lambda: srv.log().count("warm launcher ready") > warm_before, 30, "new warm launcher"
        )

        # a broken manifest is reported with dlt's message; the last good version keeps serving
        write_workspace(
            ws, extra + "\nthis is not python(\n", ["first", "queued", "on_deploy", "second"]
        )
        srv.wait_for(lambda: srv.get(srv.w)["manifest"]["error"], 30, "manifest error")
        status = srv.get(srv.w)["manifest"]
        assert "SyntaxError" in (status["error_type"] or "") or "invalid syntax" in status["error"]
        assert status["version"] == v1 + 1
        # the warm launcher holds the last good code: runs keep working
        run = srv.start_run("second")
        done = srv.wait_run(run["id"])
        assert done["status"] == "completed", srv.logs(run["id"])
        assert done["launch_mode"] == "fork"
        deploy = srv.cli("deploy", check=False)
        assert deploy.returncode == 1 and "manifest not loaded" in deploy.stderr

        # removing a job archives it: its triggers stop, its history stays
        write_workspace(ws, BASE, ["first", "queued", "on_deploy"])
        srv.wait_for(lambda: srv.jobs()["second"]["is_archived"], 30, "archived job")
        assert srv.run(run["id"])["status"] == "completed"
        listed = srv.get(f"{srv.w}/jobs", params={"is_archived": "false"})["items"]
        assert "jobs.__deployment__.second" not in {j["job_ref"] for j in listed}
    finally:
        srv.stop()


def test_every_api_process_answers_the_same_manifest_and_keys(tmp_path: Path) -> None:
    """With two API processes on one port, what one learns (a reload by the file watch in
    the first, a key revoked in either) every other answers at once."""
    ws = tmp_path / "ws"
    write_workspace(ws, BASE, ["first", "queued", "on_deploy"])
    srv = Server(ws, "--api-processes", "2").start()

    def manifests() -> list[dict[str, object]]:
        # a new connection each time: the kernel hands each to either process
        answers = []
        for _ in range(12):
            with httpx.Client(base_url=srv.url, headers=srv.http.headers, timeout=10) as http:
                answers.append(http.get(srv.w).json()["manifest"])
        return answers

    try:
        v1 = srv.get(srv.w)["manifest"]["version"]
        write_workspace(ws, BASE + "\nthis is not python(\n", ["first", "queued", "on_deploy"])
        srv.wait_for(lambda: srv.get(srv.w)["manifest"]["error"], 30, "manifest error")
        assert all(m["error"] and m["version"] == v1 for m in manifests())

        write_workspace(ws, BASE + "\n# fixed\n", ["first", "queued", "on_deploy"])
        srv.wait_for(lambda: srv.get(srv.w)["manifest"]["error"] is None, 30, "manifest fixed")
        assert all(m["error"] is None for m in manifests())

        # triggers land on both processes and every run is numbered once
        for _ in range(10):
            with httpx.Client(base_url=srv.url, headers=srv.http.headers, timeout=10) as http:
                assert http.post(f"{srv.w}/jobs/-trigger", json={"selectors": ["manual:*"]})
        numbers = sorted(r["number"] for r in srv.runs("first"))
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 10

        key = srv.cli("key", "create", "--name", "short", "--scope", "read").stdout.strip()
        for _ in range(6):  # every process has the key cached
            assert httpx.get(srv.url + srv.w, headers={"Authorization": f"Bearer {key}"}).is_success
        srv.post(f"{srv.w}/api-keys/short/-revoke")
        time.sleep(0.3)  # the wake-up crosses to the other process
        for _ in range(6):
            answer = httpx.get(srv.url + srv.w, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 401, answer.text
    finally:
        srv.stop()


def test_a_second_up_on_a_taken_port_leaves_the_first_server_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers with several API processes each could share one port (SO_REUSEPORT);
    the second is refused before it touches the store, where it would end the first
    server's active runs as lost."""
    monkeypatch.setenv("FIRST_SLEEP", "60")
    ws = tmp_path / "ws"
    write_workspace(ws, BASE, ["first", "queued", "on_deploy"])
    srv = Server(ws, "--api-processes", "2").start()
    try:
        run = srv.start_run("first")
        srv.wait_for(lambda: srv.run(run["id"])["status"] == "running", 30, "running")
        second = subprocess.run(
            [sys.executable, "-m", "headwater.cli.main", "up", str(ws), "--port", str(srv.port)]
            + ["--api-processes", "2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert "cannot listen" in second.stderr and "Address already in use" in second.stderr
        assert srv.run(run["id"])["status"] == "running"
        srv.post(f"{srv.w}/job-runs/{run['id']}/-cancel")
    finally:
        srv.stop()


def test_runs_start_one_at_a_time_with_max_starting_1(tmp_path: Path) -> None:
    """A burst of triggers forks its runs one start-up window apart, not all at once."""
    ws = tmp_path / "ws"
    body = (
        "import time\nimport dlt.hub.run as run\n\n"
        '@run.job(execute={"concurrency": None})\n'
        "def nap():\n"
        '    print(f"START {time.time():.6f}", flush=True)\n'
        "    time.sleep(1.5)\n"
    )
    write_workspace(ws, body, ["nap"])
    srv = Server(ws, "--max-starting", "1").start()
    try:
        runs = [srv.start_run("nap") for _ in range(3)]
        starts = []
        for run in runs:
            assert srv.wait_run(run["id"], 60)["status"] == "completed", srv.logs(run["id"])
            (line,) = [x for x in srv.user_output(run["id"]) if x.startswith("START ")]
            starts.append(float(line.split()[1]))
        starts.sort()
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        # each waits for its predecessor's start-up window (0.5 s), measured from its fork
        assert min(gaps) > 0.3, gaps
        # and not for its predecessor's end: the three overlap
        assert starts[-1] - starts[0] < 1.5 + 1.5, gaps
    finally:
        srv.stop()


def test_from_dlt_hub_import_run_without_dlthub_gets_dlts_error(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_workspace(ws, "from dlt.hub import run\n\n@run.job\ndef x():\n    pass\n", ["x"])
    srv = Server(ws).start(wait_warm=False)
    try:
        status = srv.get(srv.w)["manifest"]
        assert status["version"] is None
        assert 'pip install "dlt[hub]"' in status["error"]
        assert 'pip install "dlt[hub]"' in srv.log()  # printed as dlt wrote it
        # the warm launcher has imported dlt.hub.run; a reload must still report the error
        result = srv.post(f"{srv.w}/-reload")
        assert result["ok"] is False and "dlthub" in result["error"]
    finally:
        srv.stop()


@LAYOUTS
def test_sigkill_and_restart_resolves_active_runs_and_runs_nothing_twice(
    tmp_path: Path, layout: tuple[str, ...]
) -> None:
    ws = tmp_path / "ws"
    write_workspace(ws, BASE, ["first", "queued", "on_deploy"])
    os.environ["FIRST_SLEEP"] = "60"
    try:
        srv = Server(ws, *layout).start()
    finally:
        del os.environ["FIRST_SLEEP"]
    deployed = srv.wait_for(lambda: srv.runs("on_deploy"), 20, "deployment run")
    srv.wait_run(deployed[0]["id"])
    active = srv.start_run("first")
    srv.wait_run(active["id"], states={"running"})
    job_pid = srv.wait_for(lambda: _pid_of(srv, active["id"]), 10, "run pid")
    # a trigger answered just before the crash is durable (it waits: same pipeline as `first`)
    queued = srv.post(
        f"{srv.w}/job-runs", json={"job_id": srv.job_id("queued"), "trigger": "manual:"}
    )
    assert queued["status"] == "pending"
    srv.kill()
    before = {r["id"] for r in _all_runs_offline(srv)}

    srv.new_port()
    srv.start()
    try:
        lost = srv.run(active["id"])
        assert lost["status"] == "failed"
        assert lost["reason"].startswith("runtime lost")
        assert not _alive(job_pid), "the orphaned job process must be stopped"
        done = srv.wait_run(queued["id"])
        assert done["status"] == "completed", [
            (r["job_ref"], r["number"], r["status"], r["reason"], r["created_at"])
            for r in srv.runs()
        ]
        time.sleep(1.0)
        runs = srv.runs()
        # nothing ran twice: the only new runs are none (the deployment did not change)
        assert {r["id"] for r in runs} == before
        assert len([r for r in runs if r["id"] == queued["id"]]) == 1
    finally:
        srv.stop()


def _pid_of(srv: Server, run_id: str) -> int | None:
    import sqlite3

    db = sqlite3.connect(srv.workspace / ".headwater" / "headwater.db")
    try:
        row = db.execute("select pid from runs where id = ?", (run_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row and row[0] else None


def _all_runs_offline(srv: Server) -> list[dict[str, str]]:
    import sqlite3

    db = sqlite3.connect(srv.workspace / ".headwater" / "headwater.db")
    try:
        return [{"id": r[0]} for r in db.execute("select id from runs")]
    finally:
        db.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[1].split()[0] != "Z"


@LAYOUTS
def test_sigterm_stops_the_server_cleanly(tmp_path: Path, layout: tuple[str, ...]) -> None:
    ws = tmp_path / "ws"
    write_workspace(ws, BASE, ["first", "queued", "on_deploy"])
    srv = Server(ws, *layout).start()
    assert srv.proc is not None
    children = _children(srv.proc.pid)
    assert children  # the warm launcher, and the worker process when it has its own
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(20) == 0
    assert not (ws / ".headwater" / "server.json").exists()
    for pid in children:
        srv.wait_for(lambda pid=pid: not _alive(pid), 10, f"child {pid} to end")


def _children(pid: int) -> list[int]:
    """Descendants of `pid` (the worker process, the warm launcher)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                out += [int(child), *_children(int(child))]
    return out
