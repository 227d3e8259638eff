"""The launcher pool: how a run's process starts.

A warm launcher (`forkserver.py`, driven through `processes.ForkServer`) holds the
workspace's imports and forks runs from them; a new one replaces it when the code
changes, and the old one serves until its successor is warm. When no warm launcher is
ready, a run starts in a new interpreter (`processes.FreshLauncher`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headwater.worker.artifacts import dbt_environment
from headwater.worker.processes import ForkServer, FreshLauncher
from headwater.workspace.launch import dlt_profile, run_environment, served_local_dir

log = logging.getLogger(__name__)

Starter = ForkServer | FreshLauncher


class LauncherPool:
    def __init__(
        self,
        workspace: Path,
        ws_id: str,
        *,
        code_dir: Callable[[], Path] | None = None,
        extra_env: Callable[[dict[str, Any]], tuple[dict[str, str], list[str]]] | None = None,
        beacon_dsn: Callable[[dict[str, Any]], str | None] | None = None,
        warm: bool = True,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self.workspace = workspace
        self.ws_id = ws_id
        # where runs start: the workspace folder, or the newest uploaded package
        self.code_dir = code_dir or (lambda: workspace)
        self.data_dir = workspace / ".headwater" / "data"
        # workspace variables for a run, and the values of its secret ones (masked in its
        # log); Headwater's own settings are applied over them
        self.extra_env = extra_env
        # where a run's dlt reports its pipeline traces and job result
        self.beacon_dsn = beacon_dsn
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.warm = warm
        self.on_exit: Callable[[int, int], None] = lambda pid, code: None
        """Called with (pid, exit code) when a run's process ends (the supervisor's)."""
        self._lock = threading.Lock()
        self.fresh = FreshLauncher(self._exited)
        self._forkserver: ForkServer | None = None
        # the launcher being replaced keeps serving until its successor is warm
        self._previous: ForkServer | None = None

    def _exited(self, pid: int, code: int) -> None:
        self.on_exit(pid, code)

    def refresh(self, keep_previous: bool = True) -> None:
        """Start a new warm launcher (the workspace changed); the old one finishes its runs.

        With `keep_previous` the old launcher serves until the new one is warm (same
        code, maybe fixed); without, runs start in new interpreters until then (the
        code moved to another package).
        """
        if not self.warm:
            return
        with self._lock:
            old, older = self._forkserver, self._previous
        code_dir = self.code_dir()
        fs = ForkServer(
            code_dir,
            run_environment(
                self.base_env,
                code_dir,
                {"id": "warm", "number": 0},
                self.ws_id,
                self.data_dir,
                local_dir=self.local_dir(code_dir, {}, {}, self.base_env),
            ),
            self.workspace / ".headwater" / "forkserver.log",
            self._exited,
        )
        fs.start()
        with self._lock:
            self._forkserver = fs
            # keep the newest launcher that holds good code until the new one is warm
            if not keep_previous:
                self._previous, retired = None, old
                if older is not None:
                    older.retire()
            elif old is not None and (old.ready or not (older and older.ready)):
                self._previous, retired = old, older
            else:
                retired = old
        if retired is not None:
            retired.retire()

    def retire_all(self) -> None:
        for fs in (self._forkserver, self._previous):
            if fs is not None:
                fs.retire()

    def local_dir(
        self, code_dir: Path, run: dict[str, Any], job_def: dict[str, Any], env: dict[str, str]
    ) -> Path | None:
        """dlt's local dir to pin for a run whose code is `code_dir`: none for the workspace
        folder's own code (dlt finds it there), the served folder's for a package's."""
        if code_dir == self.workspace:
            return None
        profile = dlt_profile(run, job_def, code_dir, env)
        path = served_local_dir(self.workspace, profile, env)
        # dlt creates it only in a dlt workspace's context; a package's run may not be one
        path.mkdir(parents=True, exist_ok=True)
        return path

    def environment(
        self, run: dict[str, Any], job_def: dict[str, Any], code_dir: Path
    ) -> tuple[dict[str, str], list[str]]:
        """The run's environment, and the secret values to mask in its log."""
        base = dict(self.base_env)
        secrets: list[str] = []
        if self.extra_env is not None:
            variables, secrets = self.extra_env(run)
            base.update(variables)
        dsn = self.beacon_dsn(run) if self.beacon_dsn is not None else None
        local_dir = self.local_dir(code_dir, run, job_def, base)
        env = run_environment(base, code_dir, run, self.ws_id, self.data_dir, dsn, local_dir)
        for name, value in dbt_environment(self.workspace, run["id"]).items():
            env.setdefault(name, value)  # a variable of the user's own wins
        return env, secrets

    def pick(self) -> Starter:
        """The warm launcher if it is ready, else the one it replaces, else a new interpreter.

        Picking also retires a replaced launcher once its successor is warm."""
        with self._lock:
            current, previous = self._forkserver, self._previous
            if current is not None and current.ready:
                if previous is not None:
                    self._previous = None
                    previous.retire()
                return current
            if current is not None and current.settled and previous is None:
                return self.fresh
            if previous is not None and previous.ready:
                return previous
        return self.fresh

    def spawn(self, starter: Starter, run_id: str, *args: Any) -> tuple[int, str]:
        """Start a run's process; a warm launcher that fails hands it to a new interpreter.
        Answers its pid and how it started (`fork` or `fresh`)."""
        try:
            return starter.spawn(run_id, *args), starter.mode
        except Exception:
            if starter is self.fresh:
                raise
            log.warning("warm launcher failed; starting run %s in a new interpreter", run_id)
            return self.fresh.spawn(run_id, *args), self.fresh.mode

    def wait_warm(self, timeout: float = 60.0) -> bool:
        return self._forkserver is not None and self._forkserver.wait_ready(timeout)
