"""After a restart: the runs the old process left active end, and their processes stop."""

from __future__ import annotations

import random
import signal
from datetime import UTC, datetime, timedelta

from headwater.core import retries
from headwater.core.policy import MONITOR_ID
from headwater.core.states import LOST_RUN_REASON, RunStatus
from headwater.store.store import LogLine, Store
from headwater.worker.processes import is_same_process
from headwater.worker.supervisor import signal_group


def recover_lost_runs(store: Store, reason: str = LOST_RUN_REASON) -> list[str]:
    """After a restart: end every run that was starting, running or cancelling.

    Its output pipes died with the old process, so a survivor is stopped too;
    nothing is started twice, because a pending run was never claimed.
    """
    ended = []
    for run in store.live_runs():
        if run.get("worker_id") == MONITOR_ID:
            continue  # a dbt Cloud run: no process of ours; the monitor resumes its watch
        alive = is_same_process(run.get("pid"), run.get("pid_started"))
        if alive:
            signal_group(run["pid"], signal.SIGKILL)
        why = reason + (
            ": Headwater stopped while the run was active; its process was stopped"
            if alive
            else ": its process is gone"
        )
        status = (
            RunStatus.CANCELLED if run["status"] == RunStatus.CANCELLING.value else RunStatus.FAILED
        )
        policy = retries.RetryPolicy.from_dict(run.get("retry_policy"))
        delay = retries.retry_delay(
            policy, int(run.get("attempt") or 1), status.value, why, random.random()
        )
        if delay is not None:
            # a crash its job retries: the next attempt, not an end
            at = datetime.now(UTC) + timedelta(seconds=delay)
            if store.retry_run(run, exit_code=None, reason=why, retry_at=at) is not None:
                store.append_logs(
                    {
                        run["id"]: (
                            store.next_line_num(run["id"]),
                            [
                                LogLine(
                                    f"{why}; attempt {int(run.get('attempt') or 1) + 1}"
                                    f" in {delay:.0f}s",
                                    "runner",
                                    "run",
                                    "other",
                                    datetime.now(UTC),
                                )
                            ],
                        )
                    }
                )
                ended.append(run["id"])
            continue
        if (done := store.transition(run["id"], status, reason=why)) is not None:
            if done.get("retry_policy"):
                store.record_last_attempt(done)
            store.append_logs(
                {
                    run["id"]: (
                        store.next_line_num(run["id"]),
                        [LogLine(why, "runner", "run", "other", datetime.now(UTC))],
                    )
                }
            )
            ended.append(run["id"])
    return ended
