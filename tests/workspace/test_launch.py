"""From a stored job and a trigger to a run request: the interval a run loads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from headwater.workspace.launch import run_request

NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


def stored_job(triggers: list[str], **definition: Any) -> dict[str, Any]:
    return {
        "id": "job-1",
        "definition": {
            "job_ref": "jobs.batch.load",
            "entry_point": {"module": "load", "function": "load", "job_type": "batch"},
            "triggers": triggers,
            **definition,
        },
    }


def window(job: dict[str, Any], trigger: str) -> tuple[datetime | None, datetime | None]:
    req = run_request(job, trigger, now=NOW)
    return req.interval_start, req.interval_end


def test_manual_run_loads_the_window_its_default_trigger_would() -> None:
    job = stored_job(["schedule:0 6 * * *"])
    scheduled = window(job, "schedule:0 6 * * *")
    assert scheduled == (datetime(2026, 3, 3, 6, tzinfo=UTC), datetime(2026, 3, 4, 6, tzinfo=UTC))
    assert window(job, "manual:jobs.batch.load") == scheduled
    assert window(job, "manual:") == scheduled
    # the trigger stays what was asked for: the run says it was manual
    assert run_request(job, "manual:jobs.batch.load", now=NOW).trigger == "manual:jobs.batch.load"


def test_manual_run_of_an_every_job_gets_the_every_window() -> None:
    job = stored_job(["every:1h"])
    assert window(job, "manual:jobs.batch.load") == window(job, "every:1h") != (None, None)


def test_manual_or_chained_run_without_a_timed_trigger_gets_no_interval() -> None:
    job = stored_job(["job.success:jobs.batch.extract"])
    assert window(job, "manual:jobs.batch.load") == (None, None)
    assert window(job, "job.success:jobs.batch.extract") == (None, None)
