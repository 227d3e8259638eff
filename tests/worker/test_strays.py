"""What a run leaves behind is killed and reaped; a run in a new interpreter ends as its job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from headwater.worker import strays
from headwater.worker.processes import FreshLauncher

SUBREAPER = """
import json, os, subprocess, sys
from headwater.worker import strays

assert strays.become_subreaper()
kept = subprocess.Popen(["sleep", sys.argv[1] + "0"])
# `setsid` leaves the group; the shell ends, so the sleep is handed to this subreaper
subprocess.run(["sh", "-c", f"setsid sleep {sys.argv[1]}1 &"], check=True)
left = sorted(strays._own_children() - {kept.pid})
killed = strays.kill_strays(keep={kept.pid})
after = sorted(strays._own_children())
kept.kill()
kept.wait()
print(json.dumps({"left": left, "killed": killed, "after": after, "kept": kept.pid}))
"""


def test_a_subreaper_kills_and_reaps_what_is_not_kept() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SUBREAPER, "1000.777"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert len(result["left"]) == 1  # the sleep that left its session, now our child
    assert result["killed"] == 1
    # it is gone, reaped too; the kept child was left alone
    assert result["after"] == [result["kept"]]
    assert not psutil.pid_exists(result["left"][0])


def test_nothing_to_do_without_children() -> None:
    assert strays.kill_strays(keep=set(strays._own_children() or ())) == 0


def test_kill_tree_kills_descendants_outside_the_group_then_the_group() -> None:
    proc = subprocess.Popen(["sh", "-c", "setsid sleep 1000.778 & wait"], start_new_session=True)
    sleeper = _wait_for_child(proc.pid)
    assert os.getsid(sleeper.pid) != os.getsid(proc.pid)

    strays.kill_tree(proc.pid)

    proc.wait(10)  # killed, or its `wait` returned first
    sleeper.wait(10)  # init reaps it: it is gone
    assert not sleeper.is_running()


def _wait_for_child(pid: int, timeout: float = 10) -> psutil.Process:
    parent = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in parent.children():
            if child.name() == "sleep":
                return child
        time.sleep(0.01)
    raise TimeoutError("the shell started no sleep")


def test_a_run_cgroup_is_emptied_and_removed(tmp_path: Path) -> None:
    cgroups = strays.RunCgroups.detect(tmp_path, "on")
    if cgroups is None:
        pytest.skip("no writable cgroup v2 on this machine")
    try:
        path = cgroups.create("r1")
        assert path is not None
        code = (
            "import os, subprocess, sys\n"
            "from headwater.worker.strays import join_cgroup\n"
            "assert join_cgroup(sys.argv[1])\n"
            "subprocess.run(['sh', '-c', 'setsid sleep 1000.779 &'], check=True)\n"
            "print('ready', flush=True)\n"
            "os.execvp('sleep', ['sleep', '1000.780'])\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        members = [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
        assert len(members) == 2  # the job and what it left outside its session

        assert cgroups.kill(path)

        assert not Path(path).exists()
        assert proc.wait(10) == -9
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in members
        )
    finally:
        cgroups.close()
    assert not cgroups.base.exists()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("import sys; print(len(sys.argv[2])); sys.exit(3)", 3),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -15),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", -9),
    ],
    ids=["exit-code", "sigterm", "sigkill"],
)
def test_a_run_in_a_new_interpreter_ends_as_its_job(tmp_path: Path, body: str, code: int) -> None:
    """The request (here a 1 MB argument, beyond what one argv string may hold) goes in a
    file descriptor, and the runner's parent ends with the job's code or signal."""
    (tmp_path / "fake_launcher.py").write_text(body + "\n")
    exits: list[tuple[int, int]] = []
    done = threading.Event()

    def on_exit(pid: int, status: int) -> None:
        exits.append((pid, status))
        done.set()

    out_r, out_w = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    pid = FreshLauncher(on_exit).spawn(
        "run-1",
        "fake_launcher",
        ["--entry-point", "x" * 1_000_000],
        env,
        str(tmp_path),
        out_w,
        out_w,
    )
    os.close(out_w)
    with os.fdopen(out_r) as f:
        output = f.read()
    assert done.wait(30)
    assert exits == [(pid, code)]
    if code == 3:
        assert output.strip() == "1000000"
