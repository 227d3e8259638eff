"""A worker on another host (`headwater worker`): runs what Celery brings it.

The same supervisor and launcher pool as `headwater up`'s worker; only how a run reaches
it differs. Celery delivers `headwater.run(run_id, attempt)` on a pool's queue to one of
`slots` threads; the thread takes the attempt in the store (a guarded update: a message
delivered twice starts one run), gets the run's code and environment from the server,
starts it and waits for its end, so Celery never hands this worker more runs than it has
slots. A heartbeat renews the leases of the runs it holds; a run whose lease it lost
(the host was frozen or cut off, and the server ended or retried the run) is killed and
nothing of it is written (`Supervisor.fenced`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headwater.core import leases
from headwater.core.states import RunStatus
from headwater.loops import SupervisedLoop, TimerWake
from headwater.store import notify
from headwater.store.store import LogLine, Store
from headwater.worker.launchers import LauncherPool
from headwater.worker.logpump import LogPump
from headwater.worker.supervisor import Supervisor

log = logging.getLogger(__name__)

CodeFolder = Callable[[dict[str, Any]], Path]
"""The folder a run starts in (its code package, fetched and unpacked)."""
RunVariables = Callable[[dict[str, Any]], tuple[dict[str, str], list[str]]]
"""A run's workspace variables, and the secret values to mask in its log."""


class RemoteWorker:
    def __init__(
        self,
        store: Store,
        home: Path,
        *,
        name: str | None = None,
        pools: list[str] | None = None,
        slots: int = 4,
        code_folder: CodeFolder,
        variables: RunVariables | None = None,
        warm: bool = True,
        lease_s: float = leases.LEASE_S,
    ) -> None:
        self.store = store
        self.home = home.resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.pools = pools or [leases.DEFAULT_POOL]
        self.slots = slots
        self.lease_s = lease_s
        self.code_folder = code_folder
        ws = store.first_workspace()
        if ws is None:
            raise RuntimeError("the database holds no workspace yet: start `headwater up` first")
        self._code_dir = self.home
        self._start_lock = threading.Lock()
        self.launchers = LauncherPool(
            self.home,
            ws["id"],
            code_dir=lambda: self._code_dir,
            extra_env=variables,
            warm=warm,
        )
        self.logs = LogPump(store)
        self.supervisor = Supervisor(store, self.launchers, self.logs, self.name, self.home)
        self.supervisor.fenced = True
        self.supervisor.on_ended = self._ended
        self._ends: dict[str, threading.Event] = {}
        self._held: dict[str, int] = {}  # run id -> attempt
        self._lock = threading.Lock()
        self._beat = SupervisedLoop(
            "worker-heartbeat",
            self.heartbeat,
            time.monotonic,
            TimerWake(),
            period=leases.heartbeat_every(lease_s),
            error_wait=1.0,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.store.register_worker(
            self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            pools=self.pools,
            slots=self.slots,
        )
        self.supervisor.start()
        self._beat.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the runs still going (within their grace periods), then the heartbeat."""
        self.supervisor.stop(timeout)
        self._beat.stop(5.0)
        self.launchers.retire_all()
        self.supervisor.close()
        self.store.worker_stopped(self.name)

    # -- one run, in a Celery thread -----------------------------------------------------

    def run(self, run_id: str, attempt: int) -> str:
        """Execute one dispatched attempt to its end; answers what became of it."""
        run = self.store.take_run(run_id, attempt, self.name, lease_s=self.lease_s)
        if run is None:
            return "not taken"  # another delivery took it, or it ended or moved on
        done = threading.Event()
        with self._lock:
            self._ends[run_id], self._held[run_id] = done, attempt
        try:
            try:
                folder = self.code_folder(run)
            except Exception as ex:
                self._fail(run, f"could not get the run's code: {ex}")
                return "failed"
            with self._start_lock:
                # the warm launcher holds one code folder: a run of other code warms anew
                if folder != self._code_dir:
                    self._code_dir = folder
                    self.launchers.refresh(keep_previous=False)
                self.supervisor.start_runs([run])
            if not done.is_set() and run_id not in self.supervisor.handles():
                return "failed"  # it could not start: the supervisor ended it
            done.wait()
            return "ended"
        finally:
            with self._lock:
                self._ends.pop(run_id, None)
                self._held.pop(run_id, None)

    def _ended(self, run_id: str) -> None:
        with self._lock:
            done = self._ends.get(run_id)
        if done is not None:
            done.set()

    def _fail(self, run: dict[str, Any], reason: str) -> None:
        self.store.append_logs(
            {
                run["id"]: (
                    self.store.next_line_num(run["id"]),
                    [LogLine(reason, "runner", "run", "stderr", datetime.now(UTC))],
                )
            }
        )
        self.store.transition_many(
            [(run["id"], RunStatus.FAILED, {"reason": reason})],
            fences={run["id"]: (self.name, int(run["attempt"]))},
        )

    # -- heartbeat ----------------------------------------------------------------------

    def heartbeat(self, now: float) -> float:
        """Renew the leases of the runs held; abandon those lost. Also looks for cancels:
        a cancel made on another host wakes nothing here."""
        with self._lock:
            held = list(self._held.items())
        lost = self.store.heartbeat(self.name, held, lease_s=self.lease_s)
        for run_id in lost:
            self.supervisor.abandon(run_id, f"{leases.WORKER_LOST}: this worker's lease ran out")
        if held:
            self.store.notifier.notify_local(notify.CANCELS)
            self.supervisor.poke()
        return leases.heartbeat_every(self.lease_s)

    @property
    def active_count(self) -> int:
        return self.supervisor.active_count
