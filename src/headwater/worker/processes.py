"""Starting a run's process: forked from the warm launcher, or a fresh interpreter.

Both put the run in its own process group (so timeouts and cancels reach the
job's children too) and hand its stdout and stderr to the worker as pipes.
The request itself (the launcher's arguments, with every run parameter, and the
environment) goes in a memory file passed as a descriptor: never on a command
line, nor in a socket message, which both have size limits.
Exits are reported through `on_exit(pid, exit_code)`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int], None]
WARM_START_TIMEOUT_S = 120.0


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name may hold spaces; fields after it are fixed
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_same_process(pid: int | None, started: int | None) -> bool:
    return pid is not None and started is not None and process_start_ticks(pid) == started


def request_fd(request: dict[str, Any]) -> int:
    """A descriptor of an anonymous file holding `request` as JSON, read from the start."""
    data = json.dumps(request).encode()
    try:
        fd = os.memfd_create("headwater-run", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class FreshLauncher:
    """A new interpreter per run: always safe, about 0.6 s slower to the first line."""

    mode = "fresh"

    def __init__(self, on_exit: ExitCallback) -> None:
        self._on_exit = on_exit

    def spawn(
        self,
        run_id: str,
        launcher: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        out_w: int,
        err_w: int,
        cgroup: str | None = None,
    ) -> int:
        fd = request_fd({"launcher": launcher, "argv": argv, "cgroup": cgroup})
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "headwater.worker.runner", str(fd)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)
        threading.Thread(
            target=lambda: self._on_exit(proc.pid, proc.wait()),
            name=f"wait-{run_id[:8]}",
            daemon=True,
        ).start()
        return proc.pid


class ForkServer:
    """Client of one warm launcher process (`headwater.worker.forkserver`)."""

    mode = "fork"

    def __init__(
        self, workspace: Path, env: dict[str, str], log_path: Path, on_exit: ExitCallback
    ) -> None:
        self.workspace = workspace
        self._env = env
        self._log_path = log_path
        self._on_exit = on_exit
        self._ready = threading.Event()
        self._failed = False
        self.workspace_ok = False
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def ready(self) -> bool:
        """Warm, holding the workspace's code, and taking runs."""
        return self._ready.is_set() and not self._failed and self.workspace_ok

    @property
    def settled(self) -> bool:
        """Done warming up, whether or not it could import the workspace."""
        return self._ready.is_set()

    def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "headwater.worker.forkserver",
                    str(self.workspace),
                    str(child.fileno()),
                ],
                cwd=self.workspace,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                pass_fds=(child.fileno(),),
            )
        child.close()
        self._sock = parent
        threading.Thread(target=self._read_loop, name="forkserver-reader", daemon=True).start()

    def wait_ready(self, timeout: float = WARM_START_TIMEOUT_S) -> bool:
        return self._ready.wait(timeout) and self.ready

    def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                self._failed = True
                self._ready.set()
                with self._lock:
                    pending, self._pending = self._pending, {}
                for fut in pending.values():
                    fut.set_exception(RuntimeError("warm launcher exited"))
                if self._proc is not None:
                    # it has ended (retired, or failed): reap it, or it stays <defunct>
                    self._proc.wait()
                return
            msg = json.loads(data)
            op = msg["op"]
            if op == "ready":
                self.workspace_ok = bool(msg.get("workspace_ok"))
                if self.workspace_ok:
                    log.info("warm launcher ready (pid %s)", msg["pid"])
                else:
                    log.warning("warm launcher could not import the workspace (pid %s)", msg["pid"])
                self._ready.set()
            elif op in ("spawned", "refused"):
                with self._lock:
                    fut = self._pending.pop(msg["run_id"], None)
                if fut is not None:
                    fut.set_result(msg)
            elif op == "exit":
                self._on_exit(int(msg["pid"]), int(msg["code"]))

    def spawn(
        self,
        run_id: str,
        launcher: str,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        out_w: int,
        err_w: int,
        cgroup: str | None = None,
    ) -> int:
        assert self._sock is not None
        fut: Future[dict[str, Any]] = Future()
        with self._lock:
            self._pending[run_id] = fut
        fd = request_fd(
            {"launcher": launcher, "argv": argv, "env": env, "cwd": cwd, "cgroup": cgroup}
        )
        try:
            with self._send_lock:
                socket.send_fds(
                    self._sock,
                    [json.dumps({"op": "spawn", "run_id": run_id}).encode()],
                    [out_w, err_w, fd],
                )
        except BaseException:
            with self._lock:
                self._pending.pop(run_id, None)
            raise
        finally:
            os.close(fd)
        answer = fut.result(timeout=10)
        if answer["op"] != "spawned":
            raise RuntimeError(answer.get("reason", "warm launcher refused the run"))
        return int(answer["pid"])

    def retire(self) -> None:
        """Stop taking runs; the process exits once its running children have ended."""
        self._failed = True
        if self._sock is None:
            return
        try:
            with self._send_lock:
                self._sock.send(json.dumps({"op": "retire"}).encode())
        except OSError:
            pass

    def kill(self) -> None:
        self._failed = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
