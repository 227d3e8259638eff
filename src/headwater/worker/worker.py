"""The worker: claims runs, starts them, streams their logs, enforces timeouts and cancels.

Two threads: the claimer takes pending runs while there is capacity and starts
their processes; the supervisor reads every run's pipes, writes log lines,
sends SIGTERM / SIGKILL when a timeout or a cancel asks for it, and ends runs
when their process has exited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from headwater.core.logtext import ExceptionTracker, Masker
from headwater.core.states import RunStatus, outcome_of_exit
from headwater.store import notify
from headwater.store.store import LogLine, Store
from headwater.worker import strays
from headwater.worker.processes import (
    ForkServer,
    FreshLauncher,
    is_same_process,
    process_start_ticks,
)
from headwater.workspace.launch import (
    dlt_profile,
    launch_command,
    run_environment,
    served_local_dir,
)

log = logging.getLogger(__name__)

SUPERVISE_TICK_S = 0.05
IDLE_TICK_S = 1.0
STARTUP_WINDOW_S = 0.5
"""A run counts as starting (imports, first work: CPU-heavy) this long after its fork."""
PIPE_DRAIN_AFTER_EXIT_S = 2.0
"""How long a run's pipes may stay open after its process exited (a child holding them)."""
MAX_LINE = 64 * 1024
MAX_LOG_LINES = 1_000_000
"""Default cap of the lines one run may store (`up --max-log-lines`)."""
MAX_LOG_BYTES = 256 * 1024 * 1024
"""Default cap of the bytes of output one run may store (`up --max-log-mb`)."""
MAX_BUFFERED_LINES = 100_000
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
"""While the store cannot write, log lines wait in memory up to these bounds (all runs);
lines beyond them are counted, and a line saying how many were lost is stored later."""
LOG_RETRY_MAX_S = 2.0
"""The longest wait between two attempts to write buffered log lines."""
LOG_GIVE_UP_S = 60.0
"""How long an ended run waits for its buffered lines to be written before it ends anyway
(the lines it still holds then are counted as lost)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunHandle:
    run: dict[str, Any]
    pid: int
    streams: dict[int, str]  # read fd -> "stdout" | "stderr"
    partial: dict[int, bytearray] = field(default_factory=dict)
    exit_code: int | None = None
    exited_at: float | None = None
    started: float = field(default_factory=time.monotonic)
    term_sent_at: float | None = None
    kill_at: float | None = None
    killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    cgroup: str | None = None
    """The run's own cgroup (v2), when the worker can make them."""
    mode: str = "fork"
    """fork: `pid` is the job's process; fresh: its parent (`headwater.worker.runner`)."""
    outcome: tuple[str, RunStatus, dict[str, Any]] | None = None

    @property
    def timeout_at(self) -> float | None:
        t = self.run.get("timeout_s")
        return None if t is None else self.started + float(t)


@dataclass
class RunLog:
    """One run's log on its way to the store."""

    next_num: int = 0
    """The line number of the first line in `pending`."""
    pending: list[LogLine] = field(default_factory=list)
    """Lines not written yet, in order."""
    mask: Masker | None = None
    lines: int = 0
    size: int = 0
    """Output lines and bytes accepted so far (the cap counts these)."""
    over_cap: int = 0
    """Output lines dropped past the cap."""
    lost: int = 0
    """Lines dropped because the buffer was full, not yet reported by a stored line."""
    lost_total: int = 0
    closed: bool = False
    """The run will write no more lines (it never started): forget it once written."""
    tracker: dict[str, ExceptionTracker] = field(default_factory=dict)
    """Per output stream: the last exception it printed (for a failed run's reason)."""

    def exception(self) -> str | None:
        found = [t.last for t in self.tracker.values() if t.last]
        return found[-1] if found else None


def _size(line: LogLine) -> int:
    return len(line.content) + 64


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
        # where runs start: the workspace folder, or the newest uploaded package
        self.code_dir = code_dir or (lambda: workspace)
        self.data_dir = workspace / ".headwater" / "data"
        # workspace variables for a run, and the values of its secret ones (masked in its
        # log); Headwater's own settings are applied over them
        self.extra_env = extra_env
        self.max_log_lines = max_log_lines
        self.max_log_bytes = max_log_bytes
        self.max_buffered_lines = MAX_BUFFERED_LINES
        self.max_buffered_bytes = MAX_BUFFERED_BYTES
        self.log_give_up_s = LOG_GIVE_UP_S
        self.ws_id = ws_id
        # where a run's dlt reports its pipeline traces and job result
        self.beacon_dsn = beacon_dsn
        self.max_parallel = max_parallel
        # a flood of triggers would otherwise fork max_parallel runs at once, and their
        # start-up CPU would crowd the API off the cores: one start per core at a time
        self.max_starting = max_starting or len(os.sched_getaffinity(0))
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self._warm = warm
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._handles: dict[str, RunHandle] = {}
        self._by_pid: dict[int, RunHandle] = {}
        self._early_exits: dict[int, int] = {}
        self._logs: dict[str, RunLog] = {}
        self._buffered = [0, 0]  # lines, bytes in every run's `pending`
        self._write_failures = 0
        self._retry_at = 0.0
        self._flush_lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._fresh = FreshLauncher(self._on_exit)
        self._forkserver: ForkServer | None = None
        # the launcher being replaced keeps serving until its successor is warm
        self._previous: ForkServer | None = None
        self._threads: list[threading.Thread] = []
        self._cgroups: strays.RunCgroups | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._cgroups = strays.RunCgroups.detect(self.workspace)
        if self._cgroups is not None:
            # what a crashed server's runs left in their cgroups ends now
            self._cgroups.sweep()
            log.info("runs get a cgroup each under %s", self._cgroups.base)
        if self._warm:
            self.refresh_launcher()
        for target, name in ((self._claim_loop, "claimer"), (self._supervise_loop, "supervisor")):
            t = threading.Thread(target=target, name=f"worker-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake()
        self.store.notifier.notify(notify.RUNS)
        for t in self._threads:
            t.join(timeout)
        for fs in (self._forkserver, self._previous):
            if fs is not None:
                fs.retire()
        if self._cgroups is not None and not self.active_count:
            self._cgroups.close()

    def refresh_launcher(self, keep_previous: bool = True) -> None:
        """Start a new warm launcher (the workspace changed); the old one finishes its runs.

        With `keep_previous` the old launcher serves until the new one is warm (same
        code, maybe fixed); without, runs start in new interpreters until then (the
        code moved to another package).
        """
        if not self._warm:
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
            self._on_exit,
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

    def _pick_starter(self) -> Any:
        """The warm launcher if it is ready, else the one it replaces, else a new interpreter."""
        with self._lock:
            current, previous = self._forkserver, self._previous
            if current is not None and current.ready:
                if previous is not None:
                    self._previous = None
                    previous.retire()
                return current
            if current is not None and current.settled and previous is None:
                return self._fresh
            if previous is not None and previous.ready:
                return previous
        return self._fresh

    def wait_warm(self, timeout: float = 60.0) -> bool:
        return self._forkserver is not None and self._forkserver.wait_ready(timeout)

    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self._handles)

    # -- claiming and starting ----------------------------------------------------------------

    def starting(self, now: float | None = None) -> tuple[int, float | None]:
        """Runs still in their start-up window, and the seconds until the next leaves it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            left = [
                h.started + STARTUP_WINDOW_S - now
                for h in self._handles.values()
                if h.exit_code is None and now - h.started < STARTUP_WINDOW_S
            ]
        return len(left), min(left, default=None)

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            seen = self.store.notifier.version(notify.RUNS)
            starting, next_leaves = self.starting()
            free = min(self.max_parallel - self.active_count, self.max_starting - starting)
            if free <= 0:
                # an exit wakes this (RUNS); a run leaving its start-up window does not
                wait = 0.5 if next_leaves is None else min(0.5, max(next_leaves, 0.002))
                self.store.notifier.wait(notify.RUNS, seen, wait)
                continue
            try:
                # what a turn claims it starts together: one transaction to claim, one to
                # mark them running, whatever their number
                runs = self.store.claim_many(self.worker_id, free)
            except Exception:
                log.exception("claiming runs failed")
                runs = []
                time.sleep(0.5)
            if not runs:
                self.store.notifier.wait(notify.RUNS, seen, 1.0)
                continue
            try:
                self._start_all(runs)
            except Exception:
                log.exception("starting runs failed")
                time.sleep(0.5)

    def _start_all(self, runs: list[dict[str, Any]]) -> None:
        started: list[tuple[RunHandle, str]] = []
        failed: list[tuple[str, RunStatus, dict[str, Any]]] = []
        for run in runs:
            try:
                started.append(self._spawn(run))
            except Exception as ex:
                log.exception("starting run %s failed", run["id"])
                self._runner_line(run["id"], f"could not start the run: {ex}", source="setup")
                with self._lock:
                    self._logs[run["id"]].closed = True
                failed.append((run["id"], RunStatus.FAILED, {"reason": f"could not start: {ex}"}))
        if failed:
            self._flush()
        try:
            # the runs are `running` before the supervisor may see their exit, so ending them
            # is legal
            self.store.transition_many(
                [
                    (
                        h.run["id"],
                        RunStatus.RUNNING,
                        {
                            "pid": h.pid,
                            "pid_started": process_start_ticks(h.pid),
                            "launch_mode": mode,
                        },
                    )
                    for h, mode in started
                ]
                + failed
            )
        finally:
            # their processes exist whatever the store said: supervise them
            with self._lock:
                for handle, _mode in started:
                    self._handles[handle.run["id"]] = handle
                    self._by_pid[handle.pid] = handle
                    early = self._early_exits.pop(handle.pid, None)
                    if early is not None:
                        handle.exit_code, handle.exited_at = early, time.monotonic()
                    for fd in handle.streams:
                        handle.partial[fd] = bytearray()
                        self._sel.register(fd, selectors.EVENT_READ, handle)
            self._wake()

    def _spawn(self, run: dict[str, Any]) -> tuple[RunHandle, str]:
        """Start the run's process; answers its handle (not yet supervised) and launch mode."""
        version = self.store.get_job_version(run["job_version_id"])
        if version is None:
            raise RuntimeError("the run's job version is missing from the store")
        job_def = version["definition"]
        job_type = job_def["entry_point"]["job_type"]
        if job_type != "batch":
            raise RuntimeError(f"{job_type} jobs are not served by Headwater yet")
        launcher, argv = launch_command(run, job_def)
        code_dir = self.code_dir()
        base = dict(self.base_env)
        secrets: list[str] = []
        if self.extra_env is not None:
            variables, secrets = self.extra_env(run)
            base.update(variables)
        dsn = self.beacon_dsn(run) if self.beacon_dsn is not None else None
        local_dir = self.local_dir(code_dir, run, job_def, base)
        env = run_environment(base, code_dir, run, self.ws_id, self.data_dir, dsn, local_dir)
        starter = self._pick_starter()
        # a run just claimed from `pending` has written no log line yet
        with self._lock:
            self._logs[run["id"]] = RunLog(mask=Masker(secrets) or None)
        how = "forked from the warm launcher" if starter.mode == "fork" else "in a new interpreter"
        self._runner_line(
            run["id"],
            f"run #{run['number']} of {job_def['job_ref']} (trigger {run['trigger']})"
            f" starting {how}",
            source="setup",
        )
        cgroup = self._cgroups.create(run["id"]) if self._cgroups is not None else None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        args = (launcher, argv, env, str(code_dir), out_w, err_w, cgroup)
        try:
            try:
                pid = starter.spawn(run["id"], *args)
            except Exception:
                if starter is self._fresh:
                    raise
                log.warning("warm launcher failed; starting run %s in a new interpreter", run["id"])
                starter = self._fresh
                pid = starter.spawn(run["id"], *args)
        except Exception:
            os.close(out_r)
            os.close(err_r)
            if cgroup is not None and self._cgroups is not None:
                self._cgroups.kill(cgroup)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        handle = RunHandle(
            run=run,
            pid=pid,
            streams={out_r: "stdout", err_r: "stderr"},
            cgroup=cgroup,
            mode=starter.mode,
        )
        return handle, starter.mode

    def _on_exit(self, pid: int, code: int) -> None:
        with self._lock:
            handle = self._by_pid.get(pid)
            if handle is None:
                self._early_exits[pid] = code
            else:
                handle.exit_code, handle.exited_at = code, time.monotonic()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- supervising ----------------------------------------------------------------------------

    def _supervise_loop(self) -> None:
        cancels_seen = -1
        while not self._stop.is_set() or self.active_count:
            try:
                # idle, nothing has a deadline: sleep until a run starts (the wake pipe)
                tick = SUPERVISE_TICK_S if self.active_count else IDLE_TICK_S
                for key, _ in self._sel.select(timeout=tick):
                    if key.data is None:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                    else:
                        self._read(key.fd, key.data)
                version = self.store.notifier.version(notify.CANCELS)
                if version != cancels_seen:
                    cancels_seen = version
                    self._pick_up_cancels()
                self._enforce_deadlines()
                self._flush()
                self._finish_exited()
                self._pick_starter()  # retires a replaced launcher once its successor is warm
            except Exception:
                log.exception("supervisor iteration failed")
                time.sleep(0.2)
            if self._stop.is_set() and self.active_count:
                # shutting down: stop what still runs, within its grace period
                with self._lock:
                    handles = list(self._handles.values())
                for h in handles:
                    if h.term_sent_at is None:
                        self._terminate(h, "Headwater is shutting down", cancel=True)

    def _read(self, fd: int, handle: RunHandle) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf = handle.partial[fd]
        if not data:
            self._close_stream(fd, handle)
            return
        buf.extend(data)
        *lines, rest = bytes(buf).split(b"\n")
        buf[:] = rest
        if len(buf) > MAX_LINE:
            lines.append(bytes(buf))
            buf.clear()
        for line in lines:
            self._queue(
                handle.run["id"],
                line.decode("utf-8", "replace").rstrip("\r"),
                "user",
                "run",
                handle.streams[fd],
            )

    def _close_stream(self, fd: int, handle: RunHandle) -> None:
        buf = handle.partial.get(fd)
        if buf:
            self._queue(
                handle.run["id"], buf.decode("utf-8", "replace"), "user", "run", handle.streams[fd]
            )
            buf.clear()
        with self._lock:
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError):
                pass
            handle.streams.pop(fd, None)
        os.close(fd)

    def _queue(self, run_id: str, content: str, source: str, stage: str, stream: str) -> None:
        """Buffer one line of a run's log: secrets masked; the job's output within the run's
        cap and the buffer's bounds (Headwater's own lines always)."""
        with self._lock:
            rl = self._logs.setdefault(run_id, RunLog())
        if rl.mask is not None:
            content = rl.mask(content)
        line = LogLine(content, source, stage, stream, _now())
        size = _size(line)
        with self._lock:
            if source == "user":
                rl.tracker.setdefault(stream, ExceptionTracker()).feed(content)
                if rl.over_cap or (
                    rl.lines >= self.max_log_lines or rl.size + size > self.max_log_bytes
                ):
                    if not rl.over_cap:
                        self._buffer(
                            rl,
                            self._marker(
                                f"log truncated: this run printed more than its cap of"
                                f" {self.max_log_lines:,} lines or {self.max_log_bytes // 2**20:,}"
                                " MB (`headwater up --max-log-lines/--max-log-mb`); the rest of"
                                " its output is not stored"
                            ),
                        )
                    rl.over_cap += 1
                    return
                if (
                    self._buffered[0] >= self.max_buffered_lines
                    or self._buffered[1] + size > self.max_buffered_bytes
                ):
                    rl.lost += 1
                    rl.lost_total += 1
                    return
                rl.lines += 1
                rl.size += size
            self._buffer(rl, line)

    @staticmethod
    def _marker(text: str) -> LogLine:
        # `user` so every client shows it (the dlthub CLI hides `runner` lines)
        return LogLine(f"[headwater] {text}", "user", "run", "other", _now())

    def _buffer(self, rl: RunLog, line: LogLine) -> None:
        rl.pending.append(line)
        self._buffered[0] += 1
        self._buffered[1] += _size(line)

    def _runner_line(self, run_id: str, content: str, source: str = "runner") -> None:
        self._queue(run_id, content, source, "build" if source == "setup" else "run", "other")

    def _flush(self) -> bool:
        """Write every buffered line; True when nothing is left buffered.

        A failed write keeps the lines buffered and is retried on a later turn (backing
        off up to `LOG_RETRY_MAX_S`); lines dropped meanwhile for a full buffer are
        reported by a line saying how many, written in their place."""
        # the claimer flushes too (runs that could not start): one batch in flight at a time
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        with self._lock:
            batches: dict[str, tuple[int, list[LogLine]]] = {}
            taken: dict[str, tuple[int, int]] = {}  # run -> (pending lines, lost reported)
            for run_id, rl in self._logs.items():
                lines = list(rl.pending)
                if rl.lost:
                    lines.append(
                        self._marker(
                            f"{rl.lost:,} log lines lost: the store could not write them"
                            " and the buffer was full"
                        )
                    )
                if lines:
                    batches[run_id] = (rl.next_num, lines)
                    taken[run_id] = (len(rl.pending), rl.lost)
        if not batches:
            return True
        try:
            self.store.append_logs(batches)
        except IntegrityError as ex:
            # not a passing condition: the store holds some of these line numbers already
            # (a write that committed, then failed): number on from what it holds
            log.warning("log lines clash with stored ones; numbering on after them: %s", ex)
            with self._lock:
                nums = {r: rl.next_num for r in batches if (rl := self._logs.get(r)) is not None}
            try:
                for run_id in nums:
                    nums[run_id] = max(nums[run_id], self.store.next_line_num(run_id))
            except Exception:
                log.exception("reading the stored line numbers failed")
                return False
            with self._lock:
                for run_id, n in nums.items():
                    if run_id in self._logs:
                        self._logs[run_id].next_num = n
            return False
        except Exception as ex:
            self._write_failures += 1
            self._retry_at = time.monotonic() + min(
                0.05 * 2 ** min(self._write_failures, 10), LOG_RETRY_MAX_S
            )
            if self._write_failures == 1 or self._write_failures % 50 == 0:
                log.warning(
                    "writing log lines failed (%d in a row; %d lines buffered, retrying): %s",
                    self._write_failures,
                    self._buffered[0],
                    ex,
                )
            return False
        if self._write_failures:
            log.info("log lines written again after %d failed writes", self._write_failures)
        self._write_failures, self._retry_at = 0, 0.0
        with self._lock:
            for run_id, (n, lost) in taken.items():
                rl = self._logs.get(run_id)
                if rl is None:
                    continue
                written = rl.pending[:n]
                del rl.pending[:n]
                rl.next_num += len(batches[run_id][1])
                rl.lost -= lost
                self._buffered[0] -= n
                self._buffered[1] -= sum(map(_size, written))
                if rl.closed and not rl.pending:
                    del self._logs[run_id]
            return not any(rl.pending or rl.lost for rl in self._logs.values())

    def _pick_up_cancels(self) -> None:
        with self._lock:
            mine = dict(self._handles)
        if not mine:
            return
        for run in self.store.live_runs(self.worker_id):
            handle = mine.get(run["id"])
            if (
                handle is not None
                and run["status"] == RunStatus.CANCELLING.value
                and not handle.cancelled
            ):
                self._terminate(handle, run.get("reason") or "cancel requested", cancel=True)

    def _terminate(self, handle: RunHandle, why: str, *, cancel: bool) -> None:
        """SIGTERM the run's process group; dlt's first SIGTERM asks the job to stop cleanly."""
        handle.cancelled = handle.cancelled or cancel
        if handle.exit_code is not None or handle.term_sent_at is not None:
            return
        grace = float(handle.run.get("grace_period_s") or 0)
        now = time.monotonic()
        handle.term_sent_at = now
        handle.kill_at = now + grace
        self._runner_line(
            handle.run["id"], f"{why}: sent SIGTERM, SIGKILL follows after {grace:g}s"
        )
        _signal_group(handle.pid, signal.SIGTERM)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            handles = list(self._handles.values())
        for h in handles:
            if h.exit_code is not None:
                continue
            timeout_at = h.timeout_at
            if timeout_at is not None and now >= timeout_at and h.term_sent_at is None:
                h.timed_out = True
                self._terminate(h, f"timeout of {h.run['timeout_s']:g}s reached", cancel=False)
            elif h.kill_at is not None and now >= h.kill_at and not h.killed:
                h.killed = True
                self._runner_line(
                    h.run["id"], "grace period over: sent SIGKILL to the process group"
                )
                self._kill(h)

    def _kill(self, h: RunHandle) -> None:
        """SIGKILL everything of the run: its cgroup, its descendants, its process group."""
        if h.cgroup is not None and self._cgroups is not None:
            with contextlib.suppress(OSError):
                Path(h.cgroup, "cgroup.kill").write_text("1")
        # a run in a new interpreter: its parent process reaps and ends as the job did
        strays.kill_tree(h.pid, group=h.mode == "fork")

    def _finish_exited(self) -> None:
        now = time.monotonic()
        with self._lock:
            done = [
                h
                for h in self._handles.values()
                if h.exit_code is not None
                and (
                    not h.streams
                    or (h.exited_at is not None and now - h.exited_at > PIPE_DRAIN_AFTER_EXIT_S)
                )
            ]
        if not done:
            return
        for h in done:
            if h.streams:
                # a child of the job still holds the pipes: the run is over, so is the group
                _signal_group(h.pid, signal.SIGKILL)
                for fd in list(h.streams):
                    self._close_stream(fd, h)
            if h.cgroup is not None and self._cgroups is not None:
                # the run is over: so is every process it started, wherever it went
                self._cgroups.kill(h.cgroup)
        for h in done:
            if h.outcome is None:  # once: its runner line is queued with it
                h.outcome = self._outcome(h)
        # the runs that ended in this turn end together: one flush, one transaction. A run
        # ends once its log is written, or after `log_give_up_s` with the rest counted lost
        self._flush()
        with self._lock:
            ready = []
            for h in done:
                rl = self._logs.get(h.run["id"]) or RunLog()
                if (rl.pending or rl.lost) and now - (h.exited_at or now) < self.log_give_up_s:
                    continue
                ready.append((h, rl))
        if not ready:
            return
        moves = [self._with_losses(h, rl) for h, rl in ready]
        self.store.transition_many(moves)
        with self._lock:
            for h, rl in ready:
                self._handles.pop(h.run["id"], None)
                self._by_pid.pop(h.pid, None)
                self._logs.pop(h.run["id"], None)
                self._buffered[0] -= len(rl.pending)
                self._buffered[1] -= sum(map(_size, rl.pending))
        # slots are free now (the store's wake-up came before they were)
        self.store.notifier.notify_local(notify.RUNS)

    def _outcome(self, h: RunHandle) -> tuple[str, RunStatus, dict[str, Any]]:
        """How the run ended (the move to make), with its last runner line queued."""
        code = h.exit_code
        assert code is not None
        run = h.run
        if h.timed_out:
            status = RunStatus.FAILED
            reason = f"timed out after {run['timeout_s']:g}s"
            if h.killed:
                reason += f"; killed after the {run['grace_period_s']:g}s grace period"
        else:
            status = outcome_of_exit(code, h.cancelled)
            if status is RunStatus.COMPLETED:
                reason = None
            elif status is RunStatus.CANCELLED:
                reason = "cancelled" + ("; killed after the grace period" if h.killed else "")
            elif code < 0:
                reason = f"killed by signal {signal.Signals(-code).name}"
            else:
                # the exception the job died of (dlt's launcher lets it end the process)
                with self._lock:
                    rl = self._logs.get(run["id"])
                    exc = rl.exception() if rl is not None else None
                reason = f"{exc} (exit code {code})" if exc else f"exit code {code}"
        with self._lock:
            rl = self._logs.get(run["id"])
            over_cap = rl.over_cap if rl is not None else 0
        self._runner_line(
            run["id"],
            f"run #{run['number']} {status.value} (exit code {code})"
            + (f": {reason}" if reason else "")
            + (f"; {over_cap:,} lines over the log cap were not stored" if over_cap else ""),
        )
        return run["id"], status, {"exit_code": code, "reason": reason}

    def _with_losses(self, h: RunHandle, rl: RunLog) -> tuple[str, RunStatus, dict[str, Any]]:
        """The run's move, its reason saying how many log lines were lost, if any."""
        assert h.outcome is not None
        run_id, status, fields = h.outcome
        lost = rl.lost_total + len(rl.pending)
        if not lost:
            return h.outcome
        if rl.pending:
            log.warning("run %s ended with %d log lines never written", run_id, len(rl.pending))
        note = f"{lost:,} log lines lost (the store could not write them)"
        reason = fields.get("reason")
        return run_id, status, {**fields, "reason": f"{reason}; {note}" if reason else note}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to signal process group %s", pid)


def recover_lost_runs(store: Store, reason: str = "runtime lost") -> list[str]:
    """After a restart: end every run that was starting, running or cancelling.

    Its output pipes died with the old process, so a survivor is stopped too;
    nothing is started twice, because a pending run was never claimed.
    """
    ended = []
    for run in store.live_runs():
        alive = is_same_process(run.get("pid"), run.get("pid_started"))
        if alive:
            _signal_group(run["pid"], signal.SIGKILL)
        why = reason + (
            ": Headwater stopped while the run was active; its process was stopped"
            if alive
            else ": its process is gone"
        )
        status = (
            RunStatus.CANCELLED if run["status"] == RunStatus.CANCELLING.value else RunStatus.FAILED
        )
        if store.transition(run["id"], status, reason=why) is not None:
            store.append_logs(
                {
                    run["id"]: (
                        store.next_line_num(run["id"]),
                        [LogLine(why, "runner", "run", "other", _now())],
                    )
                }
            )
            ended.append(run["id"])
    return ended
