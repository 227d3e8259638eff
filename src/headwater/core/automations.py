"""Which automations an event fires: the event log's kinds mapped to the events users name
(`job.fail`, `run.crashed`, ...), selectors matched as dlt's, and streaks counted.

Pure: events and facts in, decisions out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from headwater.core.retries import outcome_kind

JOBLESS = frozenset({"manifest.failed", "config.failed"})
"""Events of the workspace, not of a job: their selector is ignored."""


def user_events(kind: str, payload: dict[str, Any], reason: str | None) -> list[str]:
    """The automation events a stored event is: `run.failed` with reason `runtime lost` is
    `run.failed`, `job.fail` and `run.crashed`, say."""
    if kind == "run.completed":
        return ["run.completed", "job.success"]
    if kind == "run.failed":
        how = outcome_kind("failed", reason)
        extra = {"crashed": ["run.crashed"], "timed_out": ["run.timed_out"]}.get(how or "", [])
        return ["run.failed", "job.fail", *extra]
    if kind in ("run.cancelled", "run.skipped"):
        return [kind]
    if kind == "dbt_cloud.finished":
        return [] if payload.get("status") == "success" else ["dbt_cloud.failed"]
    if kind in ("run.late", "run.long", "deadline.missed", "manifest.failed", "config.failed"):
        return [kind]
    return []


def selects(selector: str, job_ref: str | None, tags: Sequence[str]) -> bool:
    """Whether `selector` (a full, half or bare ref, a glob, `tag:<tag>`, `*` or nothing)
    picks the job."""
    if selector in ("", "*"):
        return True
    if job_ref is None:
        return False
    if selector.startswith("tag:"):
        return any(fnmatch.fnmatchcase(t, selector[4:]) for t in tags)
    if fnmatch.fnmatchcase(job_ref, selector):
        return True
    # half (`section.name`) and bare (`name`) refs, as dlt resolves them
    return job_ref.endswith("." + selector) or fnmatch.fnmatchcase(
        job_ref.rsplit(".", 1)[-1], selector
    )


def matching(
    on: Sequence[str], events: Sequence[str], job_ref: str | None, tags: Sequence[str]
) -> str | None:
    """The first `<event>:<selector>` of `on` this event matches (None: none)."""
    for item in on:
        event, _sep, selector = item.partition(":")
        if event not in events:
            continue
        if event in JOBLESS or selects(selector, job_ref, tags):
            return item
    return None


def streak(recent: Sequence[str], count: int, status: str) -> bool:
    """Whether the newest `count` outcomes (newest first) are all `status`: the rule fires
    on the run that makes the streak `count` long, and on every `count`-th after it."""
    if count <= 1:
        return True
    run = 0
    for outcome in recent:
        if outcome != status:
            break
        run += 1
    return run > 0 and run % count == 0
