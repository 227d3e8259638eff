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

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from headwater.core import leases
from headwater.core.errors import HeadwaterError
from headwater.core.states import LIVE, RunStatus
from headwater.loops import SupervisedLoop, TimerWake
from headwater.store import notify
from headwater.store.store import LogLine, Store
from headwater.worker.launchers import LauncherPool
from headwater.worker.logpump import MAX_LOG_BYTES, MAX_LOG_LINES, LogPump
from headwater.worker.processes import is_same_process, process_start_ticks
from headwater.worker.recovery import end_lost_run
from headwater.worker.remote_code import KeyRefused
from headwater.worker.strays import kill_tree
from headwater.worker.supervisor import Supervisor

log = logging.getLogger(__name__)
LIVE_STATES = {s.value for s in LIVE}
WARM_WAIT_S = 30.0
"""How long a run waits for the warm launcher of its code before it starts cold."""


class WorkerNameTaken(HeadwaterError):
    """Another live worker holds this worker's name."""

    code = "worker_name_taken"


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
        beacon_dsn: Callable[[dict[str, Any]], str | None] | None = None,
        warm: bool = True,
        lease_s: float = leases.LEASE_S,
        max_log_lines: int = MAX_LOG_LINES,
        max_log_bytes: int = MAX_LOG_BYTES,
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
        self._ledger = self.home / "started"
        """One file per run process this worker started and that has not ended."""
        self._ledger.mkdir(exist_ok=True)
        self._start_lock = threading.Lock()
        self.launchers = LauncherPool(
            self.home,
            ws["id"],
            code_dir=lambda: self._code_dir,
            extra_env=variables,
            beacon_dsn=beacon_dsn,
            warm=warm,
        )
        self.logs = LogPump(store, max_log_lines=max_log_lines, max_log_bytes=max_log_bytes)
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
        self._check_name_free()
        self._end_leftovers()
        self._warm_newest()
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

    def _check_name_free(self) -> None:
        """Refuse the name of another live worker: starting under it would end that
        worker's runs as lost (`_end_leftovers`) and mix two workers' heartbeats. This
        worker's own comeback on its host, after a crash, is no other worker."""
        mine = next((w for w in self.store.workers() if w["name"] == self.name), None)
        if mine is None or mine["stopped_at"] is not None:
            return
        host, pid = mine["host"], mine["pid"]
        if host == socket.gethostname():
            if pid == os.getpid() or not _is_worker_process(pid):
                return  # it died here (SIGKILL, OOM): this start cleans up after it
        else:
            now = datetime.now(UTC)
            states = self.store.worker_states()
            if not any(s.name == self.name and s.is_live(now, self.lease_s) for s in states):
                return  # silent for over a lease: lost, its runs are ended or retried
        raise WorkerNameTaken(
            f"worker {self.name!r} is running on {host} (pid {pid}, heartbeat"
            f" {mine['heartbeat_at']:%H:%M:%S} UTC): give this one another --name, or stop"
            " that one first"
        )

    def _warm_newest(self) -> None:
        """Warm a launcher of the newest deployed code now, before a burst brings runs:
        runs of cold code start in new interpreters, seconds of CPU each."""
        newest = self.store.latest_manifest(self.launchers.ws_id) or {}
        try:
            self._code_dir = self.code_folder(
                {
                    "id": "warm",
                    "workspace_id": self.launchers.ws_id,
                    "code_package_id": newest.get("code_package_id"),
                    "config_package_id": newest.get("config_package_id"),
                }
            )
        except KeyRefused as ex:
            # every run would fail the same way: better not to take any
            raise KeyRefused(
                f"{ex}. A worker needs a key of scope worker, made on the server with"
                " `headwater key create --name workers --scope worker`"
            ) from ex
        except Exception as ex:
            log.warning("could not get the newest code to warm up: %s", ex)
            return
        self.launchers.refresh(keep_previous=False)

    def _end_leftovers(self) -> None:
        """Started again under its name (the host came back): kill the processes the
        previous incarnation left running, and end as lost the runs it still held.

        The processes come from this host's own ledger (`started/`): the store's row of a
        run names only its newest attempt's process, and the server may have retried the
        run on another worker meanwhile."""
        for entry in sorted(self._ledger.glob("*.json")):
            try:
                held = json.loads(entry.read_text())
                pid, started = int(held["pid"]), int(held["pid_started"])
            except (OSError, ValueError, KeyError, TypeError):
                pid = started = None  # type: ignore[assignment]
            if is_same_process(pid, started):
                log.warning(
                    "run %s: killing what this worker's last start left (pid %s)",
                    entry.stem.split(".")[0],
                    pid,
                )
                kill_tree(pid)
            entry.unlink(missing_ok=True)
        since = datetime.now(UTC) - timedelta(days=1)
        for run in self.store.runs_started_by(self.name, since):
            if is_same_process(run.get("pid"), run.get("pid_started")):
                log.warning("run %s: killing what this worker's last start left", run["id"])
                kill_tree(run["pid"])
            if run["status"] in LIVE_STATES:
                why = f"{leases.WORKER_LOST}: worker {self.name} restarted while the run was active"
                end_lost_run(self.store, run, why, fenced=True)

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
                # a launcher warming up is ready in a few seconds; a new interpreter per
                # run would take as long each, and a burst of them would take every core
                self.launchers.wait_warm(WARM_WAIT_S)
                self.supervisor.start_runs([run])
            handle = self.supervisor.handles().get(run_id)
            if handle is not None:
                self._note_started(run_id, attempt, handle.pid)
            elif not done.is_set():
                return "failed"  # it could not start: the supervisor ended it
            done.wait()
            return "ended"
        finally:
            with self._lock:
                self._ends.pop(run_id, None)
                self._held.pop(run_id, None)

    def _note_started(self, run_id: str, attempt: int, pid: int) -> None:
        """Keep the run's process in this host's ledger until it ended: a start after a
        crash kills what is left of it."""
        entry = self._ledger / f"{run_id}.{attempt}.json"
        tmp = entry.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "pid_started": process_start_ticks(pid)}))
        tmp.replace(entry)
        with self._lock:
            if run_id not in self._held:  # it ended meanwhile
                entry.unlink(missing_ok=True)

    def _ended(self, run_id: str) -> None:
        with self._lock:
            done = self._ends.get(run_id)
            attempt = self._held.pop(run_id, None)
        if attempt is not None:
            (self._ledger / f"{run_id}.{attempt}.json").unlink(missing_ok=True)
        if done is not None:
            done.set()

    def _fail(self, run: dict[str, Any], reason: str) -> None:
        fence = {run["id"]: (self.name, int(run["attempt"]))}
        line = LogLine(reason, "runner", "run", "stderr", datetime.now(UTC))
        self.store.append_logs({run["id"]: (self.store.next_line_num(run["id"]), [line])}, fence)
        self.store.transition_many(
            [(run["id"], RunStatus.FAILED, {"reason": reason})], fences=fence
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


def _is_worker_process(pid: int | None) -> bool:
    """`pid` is a live `headwater worker` on this host (not a pid reused by another
    program since that worker died)."""
    if pid is None:
        return False
    try:
        cmdline = psutil.Process(int(pid)).cmdline()
    except (psutil.Error, ValueError):
        return False
    return any("headwater" in part for part in cmdline) and "worker" in cmdline
