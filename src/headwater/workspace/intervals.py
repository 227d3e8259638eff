"""Intervals, freshness and refresh of jobs, through dlt's own helpers.

Everything here wraps `dlt._workspace.deployment.interval`, `._interval_store_freshness`,
`.freshness` and `._run_helpers`, so the rules are dlt's, never re-derived: which
`[start, end)` windows a job's cron cuts in its time zone, which are still open, whether
an upstream is fresh, where a refresh cascades.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from dlt._workspace.deployment._interval_store_freshness import (
    get_eligible_intervals,
    iter_intervals,
    sort_and_coalesce,
)
from dlt._workspace.deployment._run_helpers import resolve_interval, resolve_refresh
from dlt._workspace.deployment._trigger_helpers import maybe_parse_schedule
from dlt._workspace.deployment.freshness import (
    get_refresh_cascade_targets,
    parse_freshness_constraint,
)
from dlt._workspace.deployment.interval import (
    check_all_upstream_run_fresh,
    cron_floor,
    resolve_interval_spec,
)
from dlt._workspace.deployment.typing import TJobDefinition, TTrigger
from dlt.common.typing import TTimeInterval

from headwater.core import deliver_deadline
from headwater.core.errors import HeadwaterError
from headwater.core.intervals import Interval
from headwater.workspace.triggers import as_dlt_job, kind, timezone_of

NOT_IMPLEMENTED_FRESHNESS = "job.is_matching_interval_fresh"


class IntervalError(HeadwaterError, ValueError):
    """The job's interval cannot be worked out (a bad `interval` spec or trigger)."""

    code = "invalid_interval"
    status = 400


@dataclass(frozen=True)
class IntervalJob:
    """A job that processes discrete intervals: an `interval` spec over its cron schedule."""

    cron: str
    tz: str
    spec: Mapping[str, Any]
    mode: str
    """sequential (one interval at a time, in order) or parallel."""

    def window(self, now: datetime) -> Interval:
        """The intervals the job may run at `now`: from its declared start to the newest
        elapsed tick (or its declared end, when that comes first), snapped to the cron."""
        end = now.astimezone(UTC)
        declared_end = self.declared_end()
        if declared_end is not None:
            end = min(end, declared_end)
        try:
            start, stop = resolve_interval_spec(
                {"start": self.spec["start"], "end": end.isoformat()}, self.cron, tz=self.tz
            )
        except Exception as ex:
            raise IntervalError(f"interval {dict(self.spec)!r}: {ex}") from ex
        return (start, max(start, stop))

    def declared_end(self) -> datetime | None:
        if not self.spec.get("end"):
            return None
        _start, end = resolve_interval_spec(dict(self.spec), self.cron, tz=self.tz)  # type: ignore[arg-type]
        return end

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The declared window, snapped to the cron (None where it is open)."""
        if not self.spec.get("start"):
            return None, None
        return self.declared_start(), self.declared_end()

    def declared_start(self) -> datetime:
        """The declared start, snapped back to a cron tick."""
        start, _ = resolve_interval_spec(
            {"start": self.spec["start"], "end": self.spec["start"]}, self.cron, tz=self.tz
        )
        return start

    def open_intervals(self, now: datetime, completed: Iterable[Interval]) -> list[Interval]:
        """The intervals in the window no completed run covers, earliest first (dlt's
        `get_eligible_intervals`)."""
        window = self.window(now)
        done = sort_and_coalesce([TTimeInterval(s, e) for s, e in completed])
        eligible = get_eligible_intervals(self.cron, TTimeInterval(*window), done, tz=self.tz)
        return [(s, e) for s, e in eligible if s < e]

    def between(self, start: datetime, end: datetime) -> list[Interval]:
        """The cron's intervals inside `[start, end)`, in the job's time zone. A tick in a
        DST gap makes dlt yield an empty interval: it holds nothing and is left out."""
        ivs = iter_intervals(self.cron, TTimeInterval(start, end), tz=self.tz)
        return [(s, e) for s, e in ivs if s < e]

    def last_tick(self, now: datetime) -> datetime:
        """The newest cron tick at or before `now`, UTC."""
        return cron_floor(self.cron, now.astimezone(ZoneInfo(self.tz))).astimezone(UTC)


def interval_job(job_def: Mapping[str, Any]) -> IntervalJob | None:
    """The job's intervals, when it declares an `interval` over a `schedule:` trigger."""
    spec = job_def.get("interval")
    if not spec:
        return None
    cron = maybe_parse_schedule(as_dlt_job(job_def))
    if cron is None:
        return None
    return IntervalJob(cron, timezone_of(dict(job_def)), spec, spec.get("mode") or "sequential")


def backfill_basis(job_def: Mapping[str, Any]) -> IntervalJob | None:
    """How a backfill cuts the job's time: its interval job, or for a job with a
    `schedule:` but no `interval`, that cron (sequentially, no declared window)."""
    found = interval_job(job_def)
    if found is not None:
        return found
    cron = maybe_parse_schedule(as_dlt_job(job_def))
    if cron is None:
        return None
    return IntervalJob(cron, timezone_of(dict(job_def)), {}, "sequential")


def coalesce(intervals: Iterable[Interval]) -> list[Interval]:
    return [(s, e) for s, e in sort_and_coalesce([TTimeInterval(s, e) for s, e in intervals])]


def run_interval(
    job_def: Mapping[str, Any], trigger: str, now: datetime, refresh: bool
) -> tuple[datetime | None, datetime | None]:
    """dlt's interval for a run of a job without interval bookkeeping: the last elapsed
    window of its timed trigger (a manual run gets its default trigger's), or none.

    A point-in-time interval for a chained run or a manual run of a job without a timed
    trigger would make interval incrementals load nothing, so those runs get none.
    """
    from headwater.workspace import triggers

    basis = trigger
    if kind(trigger) == "manual":
        basis = triggers.default_trigger(dict(job_def)) or trigger
    if kind(basis) not in triggers.TIMED_KINDS and not job_def.get("interval"):
        return None, None
    try:
        start, end, _tz = resolve_interval(
            None, None, as_dlt_job(job_def), TTrigger(basis), now, refresh
        )
    except Exception as ex:
        raise IntervalError(
            f"job {job_def.get('job_ref')}: cannot work out the interval of trigger {basis!r}: {ex}"
        ) from ex
    return start, end


# -- freshness -------------------------------------------------------------------------------


def upstream_refs(job_def: Mapping[str, Any]) -> list[str]:
    """The jobs the job's `freshness` constraints name."""
    refs = []
    for constraint in job_def.get("freshness") or []:
        try:
            refs.append(parse_freshness_constraint(str(constraint)).expr)
        except Exception:
            continue
    return refs


def stale_reasons(
    job_def: Mapping[str, Any],
    all_defs: Mapping[str, Mapping[str, Any]],
    last_ends: Mapping[str, datetime | None],
    now: datetime,
) -> list[str]:
    """Why the job's upstreams are not fresh at `now` (empty: fresh), by dlt's
    `check_all_upstream_run_fresh`. `last_ends` is each upstream's last completed interval
    end (or completion time), since its last refresh."""
    constraints = [str(c) for c in job_def.get("freshness") or []]
    if not constraints:
        return []
    known = {ref: as_dlt_job(d) for ref, d in all_defs.items()}
    missing = [ref for ref in upstream_refs(job_def) if ref not in known]
    if missing:
        return [f"upstream {ref} is not deployed" for ref in missing]
    _fresh, reasons = check_all_upstream_run_fresh(
        constraints,
        known,
        dict(last_ends),
        now_utc=now.astimezone(UTC),  # type: ignore[arg-type]
    )
    return [str(r) for r in reasons]


def refresh_of(job_def: Mapping[str, Any], asked: bool) -> tuple[bool, str | None]:
    """dlt's `resolve_refresh`: a job declaring `refresh_propagation = "block"` ignores a
    refresh (with a warning); `always` refreshes whenever asked to run with one."""
    if not asked:
        return False, None
    effective, warning = resolve_refresh(True, as_dlt_job(job_def))
    return bool(effective), warning


def refresh_cascade(job_ref: str, all_defs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The jobs a refresh of `job_ref` also refreshes (dlt's `get_refresh_cascade_targets`:
    downstream through `freshness`, stopping at `block`)."""
    defs: dict[str, TJobDefinition] = {ref: as_dlt_job(d) for ref, d in all_defs.items()}
    return [str(r) for r in get_refresh_cascade_targets(job_ref, defs)]


# -- deliver.deadline -----------------------------------------------------------------------


def deadline_text(job_def: Mapping[str, Any]) -> str | None:
    value = (job_def.get("deliver") or {}).get("deadline")
    return str(value) if value else None


def deadline_at(job_def: Mapping[str, Any], due: datetime) -> datetime | None:
    """When a run of the job due at `due` must have completed; None without a deadline
    (or one Headwater cannot read: `deadline_problem` says why)."""
    text = deadline_text(job_def)
    if text is None:
        return None
    try:
        return deliver_deadline.deadline_for(
            deliver_deadline.parse(text), due, timezone_of(dict(job_def))
        )
    except deliver_deadline.DeadlineError:
        return None


def deadline_problem(job_def: Mapping[str, Any]) -> str | None:
    text = deadline_text(job_def)
    if text is None:
        return None
    try:
        deliver_deadline.parse(text)
    except deliver_deadline.DeadlineError as ex:
        return str(ex)
    return None


def interval_bounds(intervals: Sequence[Interval]) -> Interval | None:
    return (intervals[0][0], intervals[-1][1]) if intervals else None
