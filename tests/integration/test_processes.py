"""What a run leaves behind: processes that left its group, and parameters too big for argv."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from headwater.worker.strays import CGROUPS_ENV, RunCgroups
from tests.integration.harness import Server

pytestmark = pytest.mark.integration

JOBS = '''
import os
import subprocess
import sys
import time

import dlt
import dlt.hub.run as run

DAEMON = """
import os, sys
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
os.execvp("sleep", ["sleep", sys.argv[1]])
"""


def start_strays(marker):
    # `setsid` leaves the run's process group and session; the shell that started it ends
    subprocess.run(["sh", "-c", f"setsid sleep {marker}1 &"], check=True)
    # a classic double-fork daemon
    subprocess.run([sys.executable, "-c", DAEMON, f"{marker}2"], check=True)
    print("strays started", flush=True)


@run.job(execute={"intercept_signals": False})
def leaves_strays(marker: str = dlt.config.value, seconds: str = "0"):
    start_strays(marker)
    time.sleep(float(seconds))
    print("leaves_strays done", flush=True)


@run.job(execute={"timeout": {"timeout": 600, "grace_period": 1}})
def stubborn_strays(marker: str = dlt.config.value):
    # dlt takes the first SIGTERM as a graceful-stop flag: only SIGKILL ends this one
    start_strays(marker)
    time.sleep(600)


@run.job
def many_params(p0: str = dlt.config.value, p999: str = dlt.config.value):
    seen = sum(1 for k in os.environ if "MANY_PARAMS__P" in k)
    print(f"params seen={seen} p0={len(p0)} p999={p999[:6]}", flush=True)


__all__ = ["leaves_strays", "stubborn_strays", "many_params"]
'''

CGROUPS = RunCgroups.detect(Path(tempfile.gettempdir()) / "headwater-cgroup-probe", "on")
if CGROUPS is not None:
    CGROUPS.close()

MODES = {
    # the fallback, which works everywhere: subreapers and sweeps
    "warm-launcher": ((), "off"),
    "new-interpreter": (("--no-warm",), "off"),
    # a cgroup per run too, where this machine lets the server make them
    "warm-launcher-cgroup": ((), "on"),
    "new-interpreter-cgroup": (("--no-warm",), "on"),
}


@pytest.fixture(scope="module", params=list(MODES))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    extra, cgroups = MODES[request.param]
    if cgroups != "off" and CGROUPS is None:
        pytest.skip("no writable cgroup v2 on this machine")
    ws = tmp_path_factory.mktemp("procs") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(JOBS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CGROUPS_ENV, cgroups)
        srv = Server(ws, *extra).start(wait_warm=not extra)
    srv.cgroups = cgroups != "off"  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _in_run_cgroup(pid: int) -> bool:
    with open(f"/proc/{pid}/cgroup") as f:
        return "/headwater-" in f.read()


_MARKERS: list[str] = []


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """A failing test must not leave its strays on the machine."""
    yield
    for marker in _MARKERS:
        for p in _strays(marker):
            p.kill()
    _MARKERS.clear()


def _marker() -> str:
    _MARKERS.append(f"1000.{random.randrange(10**6, 10**7)}")
    return _MARKERS[-1]


def _strays(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "sleep" and len(cmd) == 2 and cmd[1].startswith(marker):
            found.append(p)
    return found


def _start_with_strays(server: Server, job: str, **params: str) -> tuple[str, list[psutil.Process]]:
    marker = _marker()
    run = server.start_run(job, parameters={"marker": marker, **params})
    server.wait_for(lambda: "strays started" in server.user_output(run["id"]), 30, "strays started")
    strays = server.wait_for(lambda: len(_strays(marker)) == 2 and _strays(marker), 10, "strays")
    # both lead or sit in a session of their own: a signal to the run's group misses them
    assert all(os.getsid(p.pid) != os.getsid(server.proc.pid) for p in strays)  # type: ignore[union-attr]
    # the fallback is what runs without cgroups
    assert all(_in_run_cgroup(p.pid) == server.cgroups for p in strays)  # type: ignore[attr-defined]
    return run["id"], strays


def _gone(strays: list[psutil.Process]) -> list[psutil.Process]:
    """The strays still there, even as zombies nobody reaped."""
    return [p for p in strays if p.is_running()]


def test_a_run_that_ends_normally_leaves_no_process_behind(server: Server) -> None:
    run_id, strays = _start_with_strays(server, "leaves_strays", seconds="0.5")
    done = server.wait_run(run_id)
    assert done["status"] == "completed", server.logs(run_id)
    assert not _gone(strays)


def test_a_cancelled_run_leaves_no_process_behind(server: Server) -> None:
    run_id, strays = _start_with_strays(server, "leaves_strays", seconds="600")
    server.post(f"{server.w}/job-runs/{run_id}/-cancel")
    done = server.wait_run(run_id)
    assert done["status"] == "cancelled", done
    assert not _gone(strays)


def test_a_run_killed_after_its_grace_period_leaves_no_process_behind(server: Server) -> None:
    run_id, strays = _start_with_strays(server, "stubborn_strays")
    server.post(f"{server.w}/job-runs/{run_id}/-cancel")
    done = server.wait_run(run_id, timeout=20)
    assert done["status"] == "cancelled", done
    assert done["exit_code"] == -9
    assert not _gone(strays)


def test_a_large_parameter_set_reaches_the_job(server: Server) -> None:
    """1,000 parameters of 400 bytes (the API's bounds): more than one argument (128 KiB) or a
    socket message may hold."""
    params = {f"p{i}": f"{i:06d}" + "x" * 394 for i in range(1000)}
    run = server.start_run("many_params", parameters=params)
    done = server.wait_run(run["id"], timeout=60)
    assert done["status"] == "completed", server.logs(run["id"])[-20:]
    assert "params seen=1000 p0=400 p999=000999" in server.user_output(run["id"])
    # and nothing of them on any process's command line
    value = "x" * 394
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if value in " ".join(p.info["cmdline"] or [])
    ]


def _zombies(pid: int) -> list[psutil.Process]:
    procs = psutil.Process(pid).children(recursive=True)
    return [p for p in procs if p.status() == psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize(
    "layout", [(), ("--separate-worker",)], ids=["single-process", "separate-worker"]
)
def test_reloads_reap_old_launchers_and_log_readable_lines(
    tmp_path: Path, layout: tuple[str, ...]
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    body = "import dlt.hub.run as run\n\n\n@run.job\ndef first():\n    print('first')\n"
    (ws / "__deployment__.py").write_text(body)
    srv = Server(ws, *layout).start()
    try:
        assert srv.proc is not None
        for n in range(1, 4):
            warm = srv.log().count("warm launcher ready")
            body += f"\n\n@run.job\ndef extra{n}():\n    print('extra{n}')\n"
            (ws / "__deployment__.py").write_text(body)
            srv.wait_for(
                lambda warm=warm: srv.log().count("warm launcher ready") > warm, 30, "new launcher"
            )
            srv.wait_for(lambda n=n: f"extra{n}" in srv.jobs(), 30, "reload")
        # every replaced launcher has ended and was reaped: no <defunct> child is left
        srv.wait_for(lambda: not _zombies(srv.proc.pid), 15, "old launchers reaped")
        log = srv.log()
        assert "workspace changed: {" not in log
        assert "manifest v4 loaded: 5 jobs (1 added)" in log, log[-2000:]
    finally:
        srv.stop()
    log = srv.log()
    assert "stopping" in log and "stopped" in log.split("stopping")[-1], log[-1000:]
