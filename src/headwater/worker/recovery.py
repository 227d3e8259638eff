"""After a restart: the runs the old process left active end, and their processes stop."""

from __future__ import annotations

import random
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from headwater.core import retries
from headwater.core.policy import MONITOR_ID
from headwater.core.states import LOST_RUN_REASON, RunStatus
from headwater.store.store import LogLine, Store
from headwater.worker.processes import is_same_process
from headwater.worker.supervisor import signal_group


def recover_lost_runs(store: Store, reason: str = LOST_RUN_REASON) -> list[str]:
    """After a restart: end every run that was starting, running or cancelling.

    Its output pipes died with the old process, so a survivor is stopped too;
    nothing is started twice, because a pending run was never claimed. Runs that remote
    workers hold (a lease) are not this process's: their leases decide (`end_lost_run`).
    """
    ended = []
    for run in store.live_runs():
        if run.get("worker_id") == MONITOR_ID:
            continue  # a dbt Cloud run: no process of ours; the monitor resumes its watch
        if run.get("lease_expires_at") is not None:
            continue  # a remote worker's
        alive = is_same_process(run.get("pid"), run.get("pid_started"))
        if alive:
            signal_group(run["pid"], signal.SIGKILL)
        why = reason + (
            ": Headwater stopped while the run was active; its process was stopped"
            if alive
            else ": its process is gone"
        )
        if end_lost_run(store, run, why):
            ended.append(run["id"])
    return ended


def end_lost_run(store: Store, run: dict[str, Any], why: str, *, fenced: bool = False) -> bool:
    """End a run whose runtime is gone: failed (cancelled if it was being cancelled), or
    its next attempt queued when its job retries such an end; the reason goes to its log.
    `fenced`: only while its attempt is still the one `run` holds (worker, attempt).
    False when it was no longer where `run` says."""
    fence = (run["worker_id"], int(run.get("attempt") or 1)) if fenced else None
    status = (
        RunStatus.CANCELLED if run["status"] == RunStatus.CANCELLING.value else RunStatus.FAILED
    )
    policy = retries.RetryPolicy.from_dict(run.get("retry_policy"))
    attempt = int(run.get("attempt") or 1)
    delay = retries.retry_delay(policy, attempt, status.value, why, random.random())
    if delay is not None:
        # a crash its job retries: the next attempt, not an end
        at = datetime.now(UTC) + timedelta(seconds=delay)
        if store.retry_run(run, exit_code=None, reason=why, retry_at=at, fence=fence) is None:
            return False
        _note(store, run["id"], f"{why}; attempt {attempt + 1} in {delay:.0f}s")
        return True
    done = store.transition_many(
        [(run["id"], status, {"reason": why})],
        fences={run["id"]: fence} if fence is not None else None,
    )[0]
    if done is None:
        return False
    if done.get("retry_policy"):
        store.record_last_attempt(done)
    _note(store, run["id"], why)
    return True


def _note(store: Store, run_id: str, text: str) -> None:
    line = LogLine(text, "runner", "run", "other", datetime.now(UTC))
    store.append_logs({run_id: (store.next_line_num(run_id), [line])})
