"""Retries on a real `headwater up`: a job failing twice then succeeding with retries=3, one
run with its attempts; the backoff between attempts; `job.fail` chains only after the last
attempt; a timed-out attempt retried; a crash retried across a SIGKILL of the server (of
the remote worker, on remote workers); a cancelled run never retried. Locally and on remote
workers."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime

import psutil
import pytest

from tests.integration.harness import WHERE, RemoteServer, Server, served

pytestmark = pytest.mark.integration

WORKSPACE = """
import os
import time
from pathlib import Path

import dlt.hub.run as run


def _count(name):
    path = Path(os.getcwd()) / f"{name}.count"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


@run.job
def flaky():
    n = _count("flaky")
    if n < 3:
        raise RuntimeError(f"flaky attempt {n} failed")
    print(f"flaky attempt {n} worked")


@run.job
def doomed():
    raise RuntimeError("always fails")


@run.job(trigger=[doomed.fail])
def after_doomed():
    print("after the last attempt")


@run.job(execute={"timeout": {"timeout": 1, "grace_period": 1}})
def slowpoke():
    n = _count("slowpoke")
    if n == 1:
        time.sleep(30)
    print(f"slowpoke attempt {n} quick")


# a cancelled run gets a second, not the default 30 s, to stop
@run.job(execute={"timeout": {"timeout": 3600, "grace_period": 1}})
def sleeper():
    n = _count("sleeper")
    print(f"sleeper attempt {n} in pid {os.getpid()}", flush=True)
    if n == 1:
        time.sleep(600)


__all__ = ["flaky", "doomed", "after_doomed", "slowpoke", "sleeper"]
"""

CONFIG = """
[jobs.flaky]
retries = 3
retry_delay = "1s"
retry_backoff = 2.0

[jobs.doomed]
retries = 1
retry_delay = "1s"

[jobs.slowpoke]
retries = 1
retry_delay = "1s"
retry_on = ["timed_out"]

[jobs.sleeper]
retries = 2
retry_delay = "1s"
"""


@pytest.fixture(scope="module", params=WHERE)
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("retries") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    (ws / "headwater.toml").write_text(CONFIG)
    with served(ws, request.param) as server:
        yield server


def log(srv: Server, run_id: str) -> str:
    return "\n".join(line["content"] for line in srv.logs(run_id))


def test_a_flaky_job_completes_on_its_third_attempt_as_one_run(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("flaky")["id"], timeout=90)
    assert run["status"] == "completed", log(srv, run["id"])
    assert run["attempt"] == 3 and len(srv.runs("flaky")) == 1
    attempts = run["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert "flaky attempt 1 failed" in attempts[0]["reason"]
    # the waits grow: about 1 s, then about 2 s (±25 %), from each end to the next start
    first_wait = (
        datetime.fromisoformat(attempts[1]["started_at"])
        - datetime.fromisoformat(attempts[0]["finished_at"])
    ).total_seconds()
    second_wait = (
        datetime.fromisoformat(attempts[2]["started_at"])
        - datetime.fromisoformat(attempts[1]["finished_at"])
    ).total_seconds()
    assert 0.7 <= first_wait and 1.4 <= second_wait, (first_wait, second_wait)
    text = log(srv, run["id"])
    assert "attempt 1 of 4 failed" in text and "attempt 3 of 4" in text
    assert text.index("flaky attempt 1 failed") < text.index("flaky attempt 3 worked")
    shown = srv.cli("run", "show", run["id"]).stdout
    assert "attempt 1" in shown and "attempt 2" in shown


def test_a_fail_chain_fires_only_after_the_last_attempt(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("doomed")["id"], timeout=60)
    assert run["status"] == "failed" and run["attempt"] == 2
    chained = srv.wait_for(lambda: srv.runs("after_doomed"), 30, "the fail chain")
    assert len(chained) == 1 and chained[0]["previous_job_run_id"] == run["id"]


def test_a_timed_out_attempt_is_retried(srv: Server) -> None:
    run = srv.wait_run(srv.start_run("slowpoke")["id"], timeout=90)
    assert run["status"] == "completed", log(srv, run["id"])
    assert run["attempts"][0]["reason"].startswith("timed out after 1s")


def test_a_crash_is_retried_after_a_sigkill_of_the_server(srv: Server) -> None:
    started = srv.start_run("sleeper")
    srv.wait_for(lambda: "sleeper attempt 1" in log(srv, started["id"]), 30, "attempt 1")
    srv.kill()
    if isinstance(srv, RemoteServer):
        # a remote run outlives its server: the crash is its worker's (SIGKILL, then the
        # host comes back and starts it again under its name)
        (worker,) = srv.workers
        worker.signal(signal.SIGKILL)
        assert worker.proc is not None
        worker.proc.wait()
        srv.start()
        worker.start()
    else:
        srv.start()
    run = srv.wait_run(started["id"], timeout=90)
    assert run["status"] == "completed", log(srv, run["id"])
    assert run["attempt"] == 2
    lost = "worker lost" if isinstance(srv, RemoteServer) else "runtime lost"
    assert run["attempts"][0]["reason"].startswith(lost), run["attempts"]
    # and the first attempt's process, left running by the crash, was killed
    (first,) = [x for x in srv.user_output(run["id"]) if x.startswith("sleeper attempt 1 ")]
    pid = int(first.rsplit(" ", 1)[1])
    srv.wait_for(lambda: not alive(pid), 10, f"the first attempt's process {pid} gone")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_cancelled_run_is_never_retried(srv: Server) -> None:
    folders = [w.home for w in srv.workers] if isinstance(srv, RemoteServer) else []
    for count in [
        srv.workspace / "sleeper.count",
        *(p for f in folders for p in f.rglob("sleeper.count")),
    ]:
        count.unlink(missing_ok=True)
    started = srv.start_run("sleeper")
    srv.wait_for(lambda: "sleeper attempt 1" in log(srv, started["id"]), 30, "attempt 1")
    srv.post(f"{srv.w}/job-runs/{started['id']}/-cancel")
    run = srv.wait_run(started["id"], timeout=60)
    assert run["status"] == "cancelled" and run["attempt"] == 1
