"""The worker of `headwater up`: a coordinator, a supervisor and a launcher pool, composed.

The coordinator (`coordinator.py`) claims pending runs while there is capacity; the
supervisor (`supervisor.py`) starts them through the launcher pool (`launchers.py`),
pumps their logs (`logpump.py`), enforces timeouts and cancels and ends them. A worker on
another host would run the supervisor and the pool without the coordinator.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headwater.store.store import Store
from headwater.worker.coordinator import Coordinator
from headwater.worker.launchers import LauncherPool
from headwater.worker.logpump import MAX_LOG_BYTES, MAX_LOG_LINES, LogPump, RunLog
from headwater.worker.recovery import recover_lost_runs
from headwater.worker.supervisor import STARTUP_WINDOW_S, RunHandle, Supervisor

__all__ = [
    "MAX_LOG_BYTES",
    "MAX_LOG_LINES",
    "STARTUP_WINDOW_S",
    "RunHandle",
    "RunLog",
    "Worker",
    "recover_lost_runs",
]


class Worker:
    def __init__(
        self,
        store: Store,
        workspace: Path,
        ws_id: str,
        *,
        code_dir: Callable[[], Path] | None = None,
        extra_env: Callable[[dict[str, Any]], tuple[dict[str, str], list[str]]] | None = None,
        max_parallel: int = 16,
        max_starting: int | None = None,
        warm: bool = True,
        base_env: dict[str, str] | None = None,
        beacon_dsn: Callable[[dict[str, Any]], str | None] | None = None,
        max_log_lines: int = MAX_LOG_LINES,
        max_log_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.launchers = LauncherPool(
            workspace,
            ws_id,
            code_dir=code_dir,
            extra_env=extra_env,
            beacon_dsn=beacon_dsn,
            warm=warm,
            base_env=base_env,
        )
        self.logs = LogPump(store, max_log_lines=max_log_lines, max_log_bytes=max_log_bytes)
        self.supervisor = Supervisor(store, self.launchers, self.logs, self.worker_id, workspace)
        self.coordinator = Coordinator(
            store,
            self.supervisor,
            self.worker_id,
            max_parallel=max_parallel,
            max_starting=max_starting,
        )

    @property
    def base_env(self) -> dict[str, str]:
        return self.launchers.base_env

    @property
    def data_dir(self) -> Path:
        return self.launchers.data_dir

    @property
    def max_parallel(self) -> int:
        return self.coordinator.max_parallel

    @property
    def max_starting(self) -> int:
        return self.coordinator.max_starting

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.supervisor.start()  # first: it ends what a crashed server's runs left behind
        self.refresh_launcher()
        self.coordinator.start()

    def stop(self, timeout: float = 5.0) -> None:
        # the claimer first: it hands runs to the supervisor, which then sees them end
        self.coordinator.stop(timeout)
        self.supervisor.stop(timeout)
        self.launchers.retire_all()
        self.supervisor.close()

    def refresh_launcher(self, keep_previous: bool = True) -> None:
        """Start a new warm launcher (the workspace changed); see `LauncherPool.refresh`."""
        self.launchers.refresh(keep_previous)

    def wait_warm(self, timeout: float = 60.0) -> bool:
        return self.launchers.wait_warm(timeout)

    # -- what it runs ------------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        return self.supervisor.active_count

    def active(self) -> dict[str, RunHandle]:
        """The runs it supervises now, by run id."""
        return self.supervisor.handles()

    def starting(self, now: float | None = None) -> tuple[int, float | None]:
        """Runs still in their start-up window, and the seconds until the next leaves it."""
        return self.supervisor.starting(time.monotonic() if now is None else now)
