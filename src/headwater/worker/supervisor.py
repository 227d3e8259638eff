"""The supervisor: starts the runs it is given and sees them to their end.

It reads every run's pipes into the log pump, sends SIGTERM / SIGKILL when a timeout or
a cancel asks for it (`core.deadlines`), and ends a run with the outcome `core.outcomes`
decides once its process has exited and its log is written. How a run reaches it (the
coordinator's claims here, another host's queue later) is not its business.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from headwater.core import deadlines, outcomes, policy, retries
from headwater.core.states import RunStatus
from headwater.loops import SupervisedLoop
from headwater.store import notify
from headwater.store.store import LogLine, Store
from headwater.worker import artifacts, strays
from headwater.worker.launchers import LauncherPool
from headwater.worker.logpump import LogPump, RunLog
from headwater.worker.processes import process_start_ticks
from headwater.workspace.launch import launch_command

log = logging.getLogger(__name__)

SUPERVISE_TICK_S = 0.05
IDLE_TICK_S = 1.0
STARTUP_WINDOW_S = 0.5
"""A run counts as starting (imports, first work: CPU-heavy) this long after its fork."""
PIPE_DRAIN_AFTER_EXIT_S = 2.0
"""How long a run's pipes may stay open after its process exited (a child holding them)."""
MAX_LINE = 64 * 1024
LOG_GIVE_UP_S = 60.0
"""How long an ended run waits for its buffered lines to be written before it ends anyway
(the lines it still holds then are counted as lost)."""


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

    def deadlines(self) -> deadlines.Deadlines:
        t = self.run.get("timeout_s")
        return deadlines.Deadlines(
            started=self.started,
            timeout_s=None if t is None else float(t),
            term_sent_at=self.term_sent_at,
            kill_at=self.kill_at,
            killed=self.killed,
            exited=self.exit_code is not None,
        )


class Supervisor:
    def __init__(
        self,
        store: Store,
        launchers: LauncherPool,
        logs: LogPump,
        worker_id: str,
        cgroups_base: Path,
    ) -> None:
        self.store = store
        self.launchers = launchers
        self.logs = logs
        self.worker_id = worker_id
        self.fenced = False
        """A remote worker's: every state it writes is fenced by (worker, attempt), so a
        worker that lost a run's lease changes nothing of it."""
        self.on_ended: Callable[[str], None] = lambda run_id: None
        """Called with a run's id once it is no longer supervised (ended or abandoned)."""
        self.log_give_up_s = LOG_GIVE_UP_S
        self._cgroups_base = cgroups_base
        self._lock = threading.Lock()
        self._handles: dict[str, RunHandle] = {}
        self._by_pid: dict[int, RunHandle] = {}
        self._early_exits: dict[int, int] = {}
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._cgroups: strays.RunCgroups | None = None
        self._cancels_seen = -1
        launchers.on_exit = self.on_exit
        self._loop = SupervisedLoop(
            "worker-supervisor",
            self.run_once,
            time.monotonic,
            self,
            period=IDLE_TICK_S,
            error_wait=0.2,
            drain=lambda: self.active_count > 0,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._cgroups = strays.RunCgroups.detect(self._cgroups_base)
        if self._cgroups is not None:
            # what a crashed server's runs left in their cgroups ends now
            self._cgroups.sweep()
            log.info("runs get a cgroup each under %s", self._cgroups.base)
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop what still runs (within its grace period) and wait for it to end."""
        self._loop.stop(timeout)

    def close(self) -> None:
        """Remove the runs' cgroups, unless a run outlived `stop`."""
        if self._cgroups is not None and not self.active_count:
            self._cgroups.close()

    # the loop's wake-up: the run pipes and the wake pipe (a run started or exited)

    def mark(self) -> None:
        return None

    def wait(self, mark: object, timeout: float) -> None:
        """Read what the runs printed, up to `timeout` seconds (a wake-up ends it sooner)."""
        for key, _ in self._sel.select(timeout=timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            else:
                self._read(key.fd, key.data)

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- what it supervises ------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self._handles)

    def handles(self) -> dict[str, RunHandle]:
        """The runs it supervises now, by run id (a copy)."""
        with self._lock:
            return dict(self._handles)

    def handle_of(self, pid: int) -> RunHandle | None:
        """The run whose process is `pid`, if it supervises it."""
        with self._lock:
            return self._by_pid.get(pid)

    def starting(self, now: float) -> tuple[int, float | None]:
        """Runs still in their start-up window, and the seconds until the next leaves it."""
        with self._lock:
            left = [
                h.started + STARTUP_WINDOW_S - now
                for h in self._handles.values()
                if h.exit_code is None and now - h.started < STARTUP_WINDOW_S
            ]
        return len(left), min(left, default=None)

    # -- starting ----------------------------------------------------------------------------

    def start_runs(self, runs: list[dict[str, Any]]) -> None:
        """Start claimed runs, mark them running (or failed), and supervise their processes."""
        started: list[tuple[RunHandle, str]] = []
        failed: list[tuple[str, RunStatus, dict[str, Any]]] = []
        for run in runs:
            try:
                started.append(self.spawn(run))
            except Exception as ex:
                log.exception("starting run %s failed", run["id"])
                self.logs.runner_line(run["id"], f"could not start the run: {ex}", source="setup")
                self.logs.close(run["id"])
                failed.append((run["id"], RunStatus.FAILED, {"reason": f"could not start: {ex}"}))
        if failed:
            self.logs.flush()
        try:
            # the runs are `running` before the supervisor may see their exit, so ending them
            # is legal
            self._transition(
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
                + failed,
                runs,
            )
        finally:
            # their processes exist whatever the store said: supervise them
            self.adopt([h for h, _mode in started])

    def adopt(self, handles: list[RunHandle]) -> None:
        """Supervise started processes: read their pipes, see their exits."""
        with self._lock:
            for handle in handles:
                self._handles[handle.run["id"]] = handle
                self._by_pid[handle.pid] = handle
                early = self._early_exits.pop(handle.pid, None)
                if early is not None:
                    handle.exit_code, handle.exited_at = early, time.monotonic()
                for fd in handle.streams:
                    handle.partial[fd] = bytearray()
                    self._sel.register(fd, selectors.EVENT_READ, handle)
        self.poke()

    def spawn(self, run: dict[str, Any]) -> tuple[RunHandle, str]:
        """Start the run's process; answers its handle (not yet supervised) and launch mode."""
        version = self.store.get_job_version(run["job_version_id"])
        if version is None:
            raise RuntimeError("the run's job version is missing from the store")
        job_def = version["definition"]
        job_type = job_def["entry_point"]["job_type"]
        if not policy.is_served(job_type):
            raise RuntimeError(policy.not_served_reason(job_type))
        launcher, argv = launch_command(run, job_def)
        code_dir = self.launchers.code_dir()
        env, secrets = self.launchers.environment(run, job_def, code_dir)
        starter = self.launchers.pick()
        attempt = int(run.get("attempt") or 1)
        first = self.store.next_line_num(run["id"]) if attempt > 1 else 0
        fence = (self.worker_id, attempt) if self.fenced else None
        self.logs.open(run["id"], secrets, first, fence)
        if attempt > 1:
            retry_policy = run.get("retry_policy") or {}
            self.logs.runner_line(
                run["id"], f"attempt {attempt} of {int(retry_policy.get('retries', 0)) + 1}"
            )
        how = "forked from the warm launcher" if starter.mode == "fork" else "in a new interpreter"
        self.logs.runner_line(
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
            pid, mode = self.launchers.spawn(starter, run["id"], *args)
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
            run=run, pid=pid, streams={out_r: "stdout", err_r: "stderr"}, cgroup=cgroup, mode=mode
        )
        return handle, mode

    def on_exit(self, pid: int, code: int) -> None:
        with self._lock:
            handle = self._by_pid.get(pid)
            if handle is None:
                self._early_exits[pid] = code
            else:
                handle.exit_code, handle.exited_at = code, time.monotonic()
        self.poke()

    # -- one turn ----------------------------------------------------------------------------

    def run_once(self, now: float) -> float:
        """Pick up cancels, enforce deadlines, write logs and end the runs that are over;
        answers how long to read pipes before the next turn."""
        version = self.store.notifier.version(notify.CANCELS)
        if version != self._cancels_seen:
            self._cancels_seen = version
            self._pick_up_cancels()
        self._enforce_deadlines(now)
        self.logs.flush()
        self.finish_exited(now)
        self.launchers.pick()  # retires a replaced launcher once its successor is warm
        if self._loop.stopping and self.active_count:
            # shutting down: stop what still runs, within its grace period
            for h in self.handles().values():
                if h.term_sent_at is None:
                    self._terminate(h, "Headwater is shutting down", cancel=True)
        # idle, nothing has a deadline: sleep until a run starts (the wake pipe)
        return SUPERVISE_TICK_S if self.active_count else IDLE_TICK_S

    def _read(self, fd: int, handle: RunHandle) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf = handle.partial[fd]
        if not data:
            self.close_stream(fd, handle)
            return
        buf.extend(data)
        *lines, rest = bytes(buf).split(b"\n")
        buf[:] = rest
        if len(buf) > MAX_LINE:
            lines.append(bytes(buf))
            buf.clear()
        for line in lines:
            self.logs.queue(
                handle.run["id"],
                line.decode("utf-8", "replace").rstrip("\r"),
                "user",
                "run",
                handle.streams[fd],
            )

    def close_stream(self, fd: int, handle: RunHandle) -> None:
        """Queue what is left of one of the run's pipes and close it."""
        buf = handle.partial.get(fd)
        if buf:
            self.logs.queue(
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

    def _pick_up_cancels(self) -> None:
        mine = self.handles()
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
        grace = handle.run.get("grace_period_s")
        now = time.monotonic()
        handle.term_sent_at = now
        handle.kill_at = deadlines.kill_at(now, grace)
        self.logs.runner_line(
            handle.run["id"], f"{why}: sent SIGTERM, SIGKILL follows after {float(grace or 0):g}s"
        )
        signal_group(handle.pid, signal.SIGTERM)

    def _enforce_deadlines(self, now: float) -> None:
        for h in self.handles().values():
            due = deadlines.due(h.deadlines(), now)
            if due is deadlines.Signal.TERM:
                h.timed_out = True
                self._terminate(h, f"timeout of {h.run['timeout_s']:g}s reached", cancel=False)
            elif due is deadlines.Signal.KILL:
                h.killed = True
                self.logs.runner_line(
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

    def finish_exited(self, now: float) -> None:
        """End the runs whose process exited (and whose pipes closed), once their log is
        written or `log_give_up_s` after their exit."""
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
                signal_group(h.pid, signal.SIGKILL)
                for fd in list(h.streams):
                    self.close_stream(fd, h)
            if h.cgroup is not None and self._cgroups is not None:
                # the run is over: so is every process it started, wherever it went
                self._cgroups.kill(h.cgroup)
        for h in done:
            if h.outcome is None:  # once: its runner line is queued with it
                h.outcome = self._outcome(h)
        # the runs that ended in this turn end together: one flush, one transaction. A run
        # ends once its log is written, or after `log_give_up_s` with the rest counted lost
        self.logs.flush()
        ready = []
        for h in done:
            rl = self.logs.get(h.run["id"]) or RunLog()
            if (rl.pending or rl.lost) and now - (h.exited_at or now) < self.log_give_up_s:
                continue
            ready.append((h, rl))
        if not ready:
            return
        moves = [self._with_losses(h, rl) for h, rl in ready]
        moves = self._retried(moves, {h.run["id"]: h.run for h, _rl in ready})
        ended = self._transition(moves, [h.run for h, _rl in ready])
        for run in ended or []:
            if run is not None and run.get("retry_policy"):
                self.store.record_last_attempt(run)
        with self._lock:
            for h, _rl in ready:
                self._handles.pop(h.run["id"], None)
                self._by_pid.pop(h.pid, None)
        for h, _rl in ready:
            self.logs.forget(h.run["id"])
            self.on_ended(h.run["id"])
        # slots are free now (the store's wake-up came before they were)
        self.store.notifier.notify_local(notify.RUNS)

    def _retried(
        self,
        moves: list[tuple[str, RunStatus, dict[str, Any]]],
        runs: dict[str, dict[str, Any]],
    ) -> list[tuple[str, RunStatus, dict[str, Any]]]:
        """Queue the next attempt of each failed run with a retry left (`core/retries`);
        answers the moves still to make (the final outcomes)."""
        final = []
        for run_id, status, fields in moves:
            run = runs[run_id]
            policy = retries.RetryPolicy.from_dict(run.get("retry_policy"))
            attempt = int(run.get("attempt") or 1)
            delay = retries.retry_delay(
                policy, attempt, status.value, fields.get("reason"), random.random()
            )
            if delay is None:
                final.append((run_id, status, fields))
                continue
            at = datetime.now(UTC) + timedelta(seconds=delay)
            assert policy is not None
            moved = self.store.retry_run(
                run,
                exit_code=fields.get("exit_code"),
                reason=fields.get("reason"),
                retry_at=at,
                fence=(self.worker_id, attempt) if self.fenced else None,
            )
            if moved is None:  # cancelled meanwhile: it ends as it would have
                final.append((run_id, status, fields))
                continue
            self._note(
                run_id,
                f"attempt {attempt} of {policy.retries + 1} failed: {fields.get('reason')};"
                f" attempt {attempt + 1} in {delay:.0f}s",
            )
        return final

    def _transition(
        self, moves: list[tuple[str, RunStatus, dict[str, Any]]], runs: list[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        """Make the moves; a remote worker's fenced by its attempts of `runs`."""
        if not self.fenced:
            return self.store.transition_many(moves)
        fences = {r["id"]: (self.worker_id, int(r.get("attempt") or 1)) for r in runs}
        return self.store.transition_many(moves, fences=fences)

    def abandon(self, run_id: str, why: str) -> None:
        """Stop supervising a run that is no longer this worker's (its lease ran out and
        the server ended or retried it): kill all it runs and write nothing of it."""
        with self._lock:
            h = self._handles.pop(run_id, None)
            if h is not None:
                self._by_pid.pop(h.pid, None)
        if h is None:
            return
        log.warning("run %s: %s; killing its processes", run_id, why)
        self._kill(h)
        for fd in list(h.streams):
            self.close_stream(fd, h)
        if h.cgroup is not None and self._cgroups is not None:
            self._cgroups.kill(h.cgroup)
        self.logs.forget(run_id)
        self.on_ended(run_id)

    def _note(self, run_id: str, text: str) -> None:
        """A runner line for a run whose log was closed (between its attempts)."""
        line = LogLine(text, "runner", "run", "stdout", datetime.now(UTC))
        self.store.append_logs({run_id: (self.store.next_line_num(run_id), [line])})

    def _outcome(self, h: RunHandle) -> tuple[str, RunStatus, dict[str, Any]]:
        """How the run ended (the move to make), with its last runner line queued."""
        code = h.exit_code
        assert code is not None
        run = h.run
        rl = self.logs.get(run["id"])
        status, reason = outcomes.decide(
            outcomes.ExitFacts(
                exit_code=code,
                timed_out=h.timed_out,
                cancelled=h.cancelled,
                killed=h.killed,
                timeout_s=run.get("timeout_s"),
                grace_period_s=run.get("grace_period_s"),
                exception=rl.exception() if rl is not None else None,
            )
        )
        dbt_failures = artifacts.collect(self.store, self.launchers.workspace, run["id"])
        if dbt_failures and status is not RunStatus.COMPLETED:
            reason = f"{reason}; {dbt_failures}" if reason else dbt_failures
        over_cap = rl.over_cap if rl is not None else 0
        self.logs.runner_line(
            run["id"], outcomes.last_line(run["number"], status, code, reason, over_cap)
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
        return (
            run_id,
            status,
            {**fields, "reason": outcomes.with_lost_lines(fields["reason"], lost)},
        )


def signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to signal process group %s", pid)
