"""Triggers, selectors, job refs and schedules, through dlt's own helpers.

Everything here wraps `dlt._workspace.deployment` so that the rest of
Headwater never imports dlt's private module directly.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from dlt._workspace.deployment._job_ref import resolve_job_ref
from dlt._workspace.deployment._trigger_helpers import (
    humanize_trigger,
    match_triggers_with_selectors,
    parse_trigger,
    pick_trigger,
)
from dlt._workspace.deployment.exceptions import (
    AmbiguousJobRef,
    InvalidJobRef,
    InvalidTrigger,
    JobRefNotFound,
)
from dlt._workspace.deployment.interval import compute_run_interval, next_scheduled_run
from dlt._workspace.deployment.manifest import compute_default_trigger, expand_triggers
from dlt._workspace.deployment.typing import TJobDefinition, TJobRef, TTrigger

from headwater.core.errors import HeadwaterError

DEFAULT_GRACE_PERIOD_S = 30.0
"""How long a job has to stop after SIGTERM (timeout or cancel) before SIGKILL.

dlt sets no default; 30 s lets a pipeline finish its current load package step.
A job sets its own with `execute={"timeout": {"timeout": ..., "grace_period": ...}}`.
"""

TIMED_KINDS = ("schedule", "every", "once")


class JobRefError(HeadwaterError):
    """A job reference that names no job (404), or more than one (400, with them)."""

    code = "job_not_found"
    status = 404

    def __init__(self, ref: str, reason: str, candidates: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.ref = ref
        self.reason = reason
        self.candidates = list(candidates)
        if self.candidates:
            self.code, self.status = "ambiguous_job_ref", 400
            self.extra = {"candidates": self.candidates}


class TriggerError(HeadwaterError, ValueError):
    code = "invalid_trigger"
    status = 400

    def __init__(self, trigger: str, reason: str) -> None:
        super().__init__(f"invalid trigger {trigger!r}: {reason}")
        self.trigger = trigger
        self.reason = reason


def as_dlt_job(job_def: Mapping[str, Any]) -> TJobDefinition:
    """A stored job definition as dlt's type. Definitions cross our modules as the plain
    dicts the store and the API hold; this is where they meet dlt's functions."""
    return cast(TJobDefinition, job_def)


def resolve_ref(ref: str, job_refs: Sequence[str]) -> str:
    """Full, half (`section.name`) or bare name to a full job ref, by dlt's rules."""
    try:
        return str(resolve_job_ref(TJobRef(ref), [TJobRef(r) for r in job_refs]))
    except AmbiguousJobRef as ex:
        raise JobRefError(
            ref, f"job name {ref!r} is ambiguous; use one of: {', '.join(ex.matches)}", ex.matches
        ) from ex
    except JobRefNotFound as ex:
        raise JobRefError(ref, f"no job {ref!r} in this workspace") from ex
    except InvalidJobRef as ex:
        raise JobRefError(ref, str(ex)) from ex


def expanded_triggers(job_def: dict[str, Any]) -> list[str]:
    """The job's triggers plus dlt's synthetic `manual:`, `tag:` and `pipeline_name:` ones."""
    return [str(t) for t in expand_triggers(as_dlt_job(job_def))]


def default_trigger(job_def: dict[str, Any]) -> str | None:
    t = job_def.get("default_trigger") or compute_default_trigger(as_dlt_job(job_def))
    return str(t) if t else None


def job_type(job_def: dict[str, Any]) -> str:
    return str(job_def["entry_point"]["job_type"])


def matched(job_def: dict[str, Any], selectors: Sequence[str]) -> list[str]:
    """The job's expanded triggers that the selectors match (all of them for its ref)."""
    hits = match_triggers_with_selectors(
        job_type(job_def),
        expand_triggers(as_dlt_job(job_def)),
        list(selectors),
        job_ref=job_def["job_ref"],
    )
    return [str(t) for t in hits]


def select(job_def: dict[str, Any], selectors: Sequence[str]) -> str | None:
    """The trigger a selector list fires for this job, or None when it does not match.

    A selector that names the job (its ref, `manual:`, `*`) fires its `manual:<ref>`
    trigger: a person or a key asked for the run, so a paused schedule does not stop it
    and the run says it was manual. `launch.run_request` still gives such a run its
    default trigger's interval, as dlt's `select_candidates` does. Other selectors
    (`schedule:*`, `tag:…`) fire the trigger they matched.
    """
    hits = matched(job_def, selectors)
    if manual_trigger(job_def) in hits:
        return manual_trigger(job_def)
    default = job_def.get("default_trigger")
    picked = pick_trigger([TTrigger(t) for t in hits], TTrigger(default) if default else None)
    return None if picked is None else str(picked)


def manual_trigger(job_def: dict[str, Any]) -> str:
    """`manual:<job_ref>`: the trigger a person's or a key's run is recorded under."""
    return f"manual:{job_def['job_ref']}"


def kind(trigger: str) -> str:
    return trigger.split(":", 1)[0]


def check_trigger(trigger: str) -> str:
    """Validate a trigger string with dlt's parser; answers it normalized."""
    try:
        return str(parse_trigger(TTrigger(trigger)).raw)
    except InvalidTrigger as ex:
        raise TriggerError(trigger, str(ex)) from ex


def humanize(trigger: str) -> str:
    return humanize_trigger(TTrigger(trigger))


def timezone_of(job_def: dict[str, Any]) -> str:
    return str((job_def.get("require") or {}).get("timezone") or "UTC")


def timed_triggers(job_def: dict[str, Any]) -> list[str]:
    return [str(t) for t in job_def.get("triggers", []) if kind(str(t)) in TIMED_KINDS]


def timeout_of(job_def: dict[str, Any]) -> tuple[float | None, float]:
    """`(timeout_s, grace_period_s)` from `execute.timeout`, as dlt stores it."""
    spec = (job_def.get("execute") or {}).get("timeout")
    if spec is None:
        return None, DEFAULT_GRACE_PERIOD_S
    if isinstance(spec, dict):
        timeout = spec.get("timeout")
        grace = spec.get("grace_period")
        return (
            float(timeout) if timeout is not None else None,
            float(grace) if grace is not None else DEFAULT_GRACE_PERIOD_S,
        )
    return float(spec), DEFAULT_GRACE_PERIOD_S


def concurrency_of(job_def: dict[str, Any]) -> int | None:
    execute = job_def.get("execute") or {}
    if "concurrency" not in execute:
        return 1
    value = execute["concurrency"]
    return None if value is None else int(value)


def pipeline_name_of(job_def: dict[str, Any]) -> str | None:
    return (job_def.get("deliver") or {}).get("pipeline_name")


@dataclass(frozen=True)
class Tick:
    """One due firing of a timed trigger."""

    trigger: str
    at: datetime
    """The scheduled instant (UTC) this firing stands for; part of its unique key."""


# dlt parses the cron expression anew on each call: a scheduler turn asks the same
# (trigger, tick, tz) for every job sharing a schedule, and again at every turn until the tick
@functools.lru_cache(maxsize=16_384)
def next_tick(trigger: str, after: datetime, tz: str) -> datetime | None:
    """The first scheduled instant strictly after `after` (UTC), or None when none is left."""
    after = after.astimezone(UTC)
    k = kind(trigger)
    if k == "schedule":
        tick = next_scheduled_run(TTrigger(trigger), after, tz=tz)
        # from the second pass of a repeated (fall-back) hour dlt answers the tick of the
        # first pass, which is earlier; the one after that is the true next tick
        for _ in range(3):
            if tick > after:
                break
            tick = next_scheduled_run(TTrigger(trigger), tick, tz=tz)
        return tick
    if k == "every":
        # `after` is the previous tick: the next one is one period later
        period = parse_trigger(TTrigger(trigger)).expr
        assert isinstance(period, int | float)  # dlt parses `every:` to seconds
        return after + timedelta(seconds=period)
    if k == "once":
        at = parse_trigger(TTrigger(trigger)).expr
        at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        at = at.astimezone(UTC)
        return at if at > after else None
    return None


def has_next_tick(job_def: dict[str, Any], now: datetime) -> bool:
    """Whether a timed trigger of the job still fires after `now`: a `schedule:` or
    `every:` one, or a `once:` in the future. What a pause can suspend."""
    tz = timezone_of(job_def)
    for trigger in timed_triggers(job_def):
        try:
            if next_tick(trigger, now, tz) is not None:
                return True
        except Exception:  # a trigger dlt cannot read never fires
            continue
    return False


def latest_due_tick(trigger: str, last: datetime, now: datetime, tz: str) -> datetime | None:
    """The newest scheduled instant in `(last, now]`, or None.

    After downtime a missed schedule runs once: every tick between `last` and
    `now` collapses into the newest one.
    """
    tick = next_tick(trigger, last, tz)
    if tick is None or tick > now:
        return None
    if kind(trigger) == "every":
        period = tick - last
        missed = int((now - tick) / period)
        return tick + missed * period
    if kind(trigger) == "schedule":
        # dlt's interval for `now` ends at the newest elapsed tick: one step, however long
        # the server was down (near a DST change it can land a few ticks early)
        newest = _newest_elapsed_tick(trigger, now, tz)
        if tick <= newest <= now:
            tick = newest
    for _ in range(10_000):
        following = next_tick(trigger, tick, tz)
        if following is None or following > now:
            break
        tick = following
    return tick


@functools.lru_cache(maxsize=1024)
def _newest_elapsed_tick(trigger: str, now: datetime, tz: str) -> datetime:
    """The end of dlt's interval for `now`; one turn asks it once per schedule, not per job."""
    _start, newest = compute_run_interval(TTrigger(trigger), now, None, tz=tz)
    return newest.astimezone(UTC)
