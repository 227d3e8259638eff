"""The warm launcher: a pre-loaded process that forks one child per run.

Started as a fresh interpreter in the workspace, it imports dlt, dlt's
launchers and the workspace's modules, and does one no-op launcher run so
that what dlt imports lazily is loaded too. Each run is then a `fork()`:
about 5 ms to the job's first line instead of 0.6 s for a new interpreter.

It stays single-threaded (a fork of a threaded process is unsafe) and talks
to the worker over a `SOCK_SEQPACKET` socket: requests carry the run's stdout
and stderr pipe ends and a memory file holding the run's request (launcher
arguments, environment: any size) as file descriptors; answers are `spawned`
and `exit`.

It is a child subreaper, as is each run it forks: when a run's main process
ends, whatever the job left running (even outside its process group) is handed
to this process, which kills and reaps it before it reports the exit.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from headwater.worker import strays

MAX_MESSAGE = 4 * 1024 * 1024
NOOP_JOB = "headwater.worker.noop"


JOB_LAUNCHER = "dlt._workspace.deployment.launchers.job"


def read_request(fd: int) -> dict[str, Any]:
    """A run's request, as JSON in the file at `fd` (a memfd from the worker); closes `fd`."""
    with open(fd, "rb", closefd=True) as f:
        f.seek(0)
        req: dict[str, Any] = json.loads(f.read())
    return req


def _run_job_launcher(argv: list[str]) -> None:
    """What `python -m dlt._workspace.deployment.launchers.job` does, without re-running
    the module: about 2 ms less per forked run."""
    from functools import partial

    from dlt._workspace.deployment.launchers import job

    args = job.parse_launcher_args(argv)
    job.run_and_print_result(
        partial(job.run, entry_point=args.entry_point, run_id=args.run_id, trigger=args.trigger)
    )


def run_launcher(launcher: str, argv: list[str]) -> int:
    """Run a dlt launcher module as `python -m <launcher> argv...` would; answers the exit code."""
    import runpy
    import warnings

    sys.argv = [launcher, *argv]
    try:
        if launcher == JOB_LAUNCHER:
            _run_job_launcher(argv)
        else:
            with warnings.catch_warnings():
                # the warm launcher imported the launcher module; running it again is the point
                warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
                runpy.run_module(launcher, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as ex:
        if ex.code is None:
            code = 0
        elif isinstance(ex.code, int):
            code = ex.code
        else:
            print(ex.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    return code


def _warm(workspace: str) -> bool:
    """Load dlt, the launchers and the workspace, then run a no-op job once.

    Answers whether the workspace's `__deployment__` imported: a launcher that
    could not import it must not replace one that holds the last good code.
    """
    workspace_ok = False
    devnull = open(os.devnull, "w")
    saved_env = dict(os.environ)
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = devnull
    try:
        import dlt  # noqa: F401
        import dlt._workspace.deployment.launchers.job as job_launcher  # noqa: F401

        try:
            __import__("__deployment__")
            workspace_ok = True
        except BaseException:
            # the manifest loader reports import errors; runs will show them too
            pass
        entry = {
            "module": NOOP_JOB,
            "function": "noop",
            "job_type": "batch",
            "launcher": "dlt._workspace.deployment.launchers.job",
            "job_ref": "jobs.noop.noop",
            "refresh": False,
        }
        run_launcher(
            JOB_LAUNCHER,
            ["--run-id", "warmup", "--trigger", "manual:", "--entry-point", json.dumps(entry)],
        )
        try:
            _prepare_beacon()
        except Exception:
            pass  # each run makes its own client then
    finally:
        sys.stdout, sys.stderr = real_out, real_err
        devnull.close()
        os.environ.clear()
        os.environ.update(saved_env)
    return workspace_ok


DLT_ENV_PREFIXES = ("RUNTIME__", "WORKSPACE__", "DLT_")
BEACON_DSN = "RUNTIME__DLTHUB_DSN"
PER_RUN_KEYS = frozenset({"RUNTIME__RUN_ID", BEACON_DSN})
_warm_env: dict[str, str] = {}


def _dlt_env(env: dict[str, str]) -> dict[str, str]:
    """The settings dlt reads once, when it sets up its run context."""
    return {
        k: v for k, v in env.items() if k.startswith(DLT_ENV_PREFIXES) and k not in PER_RUN_KEYS
    }


def _refresh_dlt_context() -> None:
    """Make dlt read the run's environment, not the one the warm launcher started with.

    dlt resolves its run context (project dir, profile, runtime settings such as
    `RUNTIME__DLTHUB_DSN` or the log level) once per process; a forked run must
    resolve it again, and start dlt's telemetry with its own settings.
    """
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
    from dlt.common.runtime import telemetry

    telemetry.stop_telemetry()
    # plug a new context for the run's folder: reusing the old one's arguments would keep
    # the warm launcher's profile
    Container()[PluggableRunContext].reload(os.getcwd(), runtime_kwargs=None)


_beacon_http: Any = None
"""dlt's HTTP client for the beacon, made once in the warm launcher (3 to 7 ms each)."""


def _prepare_beacon() -> None:
    """Make the HTTP client dlt's beacon sender uses, as `init_platform_tracker` does.

    A client holds no thread and no connection until used, so the children forked
    later each get a clean copy.
    """
    global _beacon_http
    from dlt.sources.helpers.requests import Client

    _beacon_http = Client(request_timeout=(2, 10), request_max_attempts=0)


def _start_beacon(dsn: str | None) -> None:
    """Make dlt report this run's pipeline traces and job result to `dsn`.

    dlt reads `RUNTIME__DLTHUB_DSN` once, when it sets up its run context, and
    starts its sender then; the warm launcher did that without a DSN (a sender is
    a thread, and a process with threads is not forked). The run's context gets
    the DSN and the sender starts here, in the child: about 0.5 ms, where resolving
    the whole context again takes about 9 ms.
    """
    if not dsn:
        return
    from dlt.common.runtime.run_context import active
    from dlt.pipeline import platform

    active().runtime_config.dlthub_dsn = dsn
    if platform._THREAD_POOL is not None:
        return  # the context was resolved again and started it
    if _beacon_http is None:
        platform.init_platform_tracker()
        return
    # what `init_platform_tracker` does, with the client the warm launcher made
    from dlt.common.managed_thread_pool import ManagedThreadPool

    platform.requests = _beacon_http
    pool = ManagedThreadPool("platform_tracker", 1)
    pool._create_thread_pool()
    platform._THREAD_POOL = pool


def _stop_beacon() -> None:
    """Deliver what dlt's sender still holds: `os._exit` skips dlt's atexit handler."""
    from dlt.common.runtime.telemetry import stop_telemetry
    from dlt.pipeline import platform

    stop_telemetry()
    # the sender started by `_start_beacon` while dlt's telemetry counted as stopped
    platform.disable_platform_tracker()


def _child(fds: list[int], keep_closed: list[int]) -> None:
    """In the forked child: become the run's process group and run the launcher."""
    code = 1
    try:
        os.setsid()
        for fd in keep_closed:
            os.close(fd)
        out_fd, err_fd, req_fd = fds
        req = read_request(req_fd)
        strays.join_cgroup(req.get("cgroup"))
        # what the job's processes leave behind stays in this process's tree
        strays.become_subreaper()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True
        )
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        if _dlt_env(req["env"]) != _dlt_env(_warm_env):
            # about 13 ms: only when the run sets a profile or a runtime setting of its own
            _refresh_dlt_context()
        _start_beacon(req["env"].get(BEACON_DSN))
        code = run_launcher(req["launcher"], req["argv"])
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        # os._exit skips atexit: let dlt deliver what its telemetry threads still hold
        try:
            _stop_beacon()
        except BaseException:
            pass
        os._exit(code)


def serve(sock: socket.socket, workspace: str) -> None:
    # the runs' leftovers are handed to this process when their main process ends
    strays.become_subreaper()
    _warm_env.update(os.environ)
    os.chdir(workspace)
    if workspace not in sys.path:
        sys.path.insert(0, workspace)
    workspace_ok = _warm(workspace)
    # what importing the workspace started is not a run's: no sweep kills it
    own = frozenset(strays._own_children() or ())
    threads = threading.active_count()
    _send(
        sock, {"op": "ready", "pid": os.getpid(), "threads": threads, "workspace_ok": workspace_ok}
    )

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # the worker owns shutdown; a Ctrl-C in the terminal must not kill us mid-run
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, str] = {}
    retiring = False
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "sock":
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 3)
                except OSError:
                    msg, fds = b"", []
                if not msg:
                    # the worker is gone: nobody can read our children's exits any more
                    os._exit(0)
                req = json.loads(msg)
                if req["op"] == "retire":
                    retiring = True
                elif req["op"] == "spawn":
                    _spawn(sock, req, fds, children, [sock.fileno(), wake_r, wake_w])
            else:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
        _reap(sock, children, own)
        if retiring and not children:
            os._exit(0)


def _spawn(
    sock: socket.socket,
    req: dict[str, Any],
    fds: list[int],
    children: dict[int, str],
    keep_closed: list[int],
) -> None:
    if len(fds) != 3 or threading.active_count() != 1:
        for fd in fds:
            os.close(fd)
        _send(sock, {"op": "refused", "run_id": req["run_id"], "reason": "unsafe to fork"})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(fds, keep_closed)
    for fd in fds:
        os.close(fd)
    children[pid] = req["run_id"]
    _send(sock, {"op": "spawned", "run_id": req["run_id"], "pid": pid})


def _reap(sock: socket.socket, children: dict[int, str], own: frozenset[int] = frozenset()) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid not in children:
            continue  # a leftover of a run, killed by `kill_strays`
        run_id = children.pop(pid)
        # what the run left behind was handed to us: it ends before the run is reported over
        strays.kill_strays(keep=own.union(children))
        _send(
            sock,
            {"op": "exit", "pid": pid, "run_id": run_id, "code": os.waitstatus_to_exitcode(status)},
        )


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(msg).encode())
    except OSError:
        os._exit(0)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[2])), sys.argv[1])
