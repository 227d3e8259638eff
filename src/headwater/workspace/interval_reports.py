"""What people read of intervals and backfills (the API, the CLI), and the backfill view
the interval planner acts on: each interval of a backfill with its state, a job's window,
watermark, next due, running and failed intervals, its freshness and deadline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headwater.core import intervals as core_intervals
from headwater.core.errors import HeadwaterError
from headwater.workspace import intervals
from headwater.workspace.launch import stale_reasons
from headwater.workspace.triggers import next_tick

Store = Any
"""The store (`headwater.store.store.Store`): this module reads its intervals, runs,
backfills, freshness waits and deadlines."""


def backfill_view(
    store: Store, backfill: dict[str, Any], job: dict[str, Any], basis: intervals.IntervalJob
) -> dict[str, Any]:
    """Where a backfill stands: each interval's slot, the job's interval runs and the
    backfill's own."""
    runs, reset = store.interval_runs(job["id"])
    state = core_intervals.summarize(runs, reset)
    before = core_intervals.summarize(
        [r for r in runs if r["created_at"] < backfill["created_at"]], reset
    )
    own = [r for r in runs if r.get("backfill_id") == backfill["id"]]
    slots = core_intervals.backfill_slots(
        basis.between(backfill["start_at"], backfill["end_at"]),
        basis.bounds(),
        before.completed,
        state,
        own,
    )
    return {"slots": slots, "state": state, "own_runs": own}


# -- what people read (API, CLI) ---------------------------------------------------------------

NEXT_SHOWN = 5


def _iv(iv: core_intervals.Interval) -> dict[str, str]:
    return {"start": iv[0].isoformat(), "end": iv[1].isoformat()}


def interval_report(store: Store, job: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The job's intervals: its window, watermark, the next ones due, running and failed
    ones; its freshness; its deadline."""
    job_def = job["definition"]
    out: dict[str, Any] = {
        "job_id": job["id"],
        "job_ref": job["job_ref"],
        "is_interval_job": False,
        "freshness": None,
        "deadline": None,
    }
    if job_def.get("freshness"):
        reasons = stale_reasons(store, job, now)
        waits = {w["job_id"]: w for w in store.freshness_waits(job["workspace_id"])}
        wait = waits.get(job["id"])
        out["freshness"] = {
            "constraints": list(job_def["freshness"]),
            "fresh": not reasons,
            "reasons": reasons,
            "waiting_trigger": (wait or {}).get("request", {}).get("trigger"),
            "waiting_since": wait["since"].isoformat() if wait else None,
        }
    if text := intervals.deadline_text(job_def):
        missed = store.deadlines_missed([job["id"]]).get(job["id"])
        out["deadline"] = {
            "text": text,
            "problem": intervals.deadline_problem(job_def),
            "last_missed_at": missed.isoformat() if missed else None,
        }
    basis = intervals.interval_job(job_def)
    if basis is None:
        if job_def.get("interval"):
            out["problem"] = "the job declares an interval but no schedule: trigger to cut it"
        return out
    runs, reset = store.interval_runs(job["id"])
    state = core_intervals.summarize(runs, reset)
    window = basis.window(now)
    open_ivs = basis.open_intervals(now, state.completed)
    active = set(state.active)
    out.update(
        is_interval_job=True,
        mode=basis.mode,
        timezone=basis.tz,
        schedule=f"schedule:{basis.cron}",
        window=_iv(window),
        declared={k: str(v) for k, v in dict(basis.spec).items()},
        watermark=core_intervals.watermark(
            intervals.coalesce(state.completed), basis.declared_start()
        ).isoformat(),
        completed=len(set(state.completed)),
        intervals_reset_at=reset.isoformat() if reset else None,
        running=[_iv(iv) for iv in state.active],
        failed=[
            {**_iv(iv), "failed_at": at.isoformat()}
            for iv, at in sorted(state.failed.items())
            if iv in set(open_ivs)
        ],
        next_due=[_iv(iv) for iv in open_ivs if iv not in active][:NEXT_SHOWN],
        open=len(open_ivs),
        next_tick=None,
    )
    tick = next_tick(out["schedule"], now, basis.tz)
    out["next_tick"] = tick.isoformat() if tick else None
    return out


def backfill_report(store: Store, backfill: dict[str, Any]) -> dict[str, Any]:
    """A backfill as people read it: its range, state, counts and each interval."""
    job = store.get_job(backfill["job_id"])
    basis = intervals.backfill_basis(job["definition"]) if job else None
    out = {
        "id": backfill["id"],
        "number": backfill["number"],
        "job_id": backfill["job_id"],
        "job_ref": backfill.get("job_ref") or (job or {}).get("job_ref"),
        "start": backfill["start_at"].isoformat(),
        "end": backfill["end_at"].isoformat(),
        "refresh": bool(backfill["refresh"]),
        "status": backfill["status"],
        "reason": backfill.get("reason"),
        "created_at": backfill["created_at"].isoformat(),
        "finished_at": backfill["finished_at"].isoformat() if backfill["finished_at"] else None,
        "counts": {},
        "intervals": [],
    }
    if job is None or basis is None:
        return out
    slots = backfill_view(store, backfill, job, basis)["slots"]
    out["counts"] = core_intervals.backfill_counts(slots)
    out["intervals"] = [slot_view(s) for s in slots]
    return out


def slot_view(slot: core_intervals.BackfillSlot) -> dict[str, Any]:
    run = slot.run or {}
    return {
        **_iv(slot.interval),
        "state": slot.state,
        "job_run_id": run.get("id"),
        "job_run_number": run.get("number"),
    }


def plan_backfill(
    store: Store, job: dict[str, Any], start: datetime, end: datetime, now: datetime
) -> tuple[intervals.IntervalJob, list[core_intervals.BackfillSlot]]:
    """What a backfill of `[start, end)` would run now (its dry run); `BackfillError` when
    the job or the range cannot be backfilled."""
    basis = intervals.backfill_basis(job["definition"])
    if basis is None:
        raise BackfillError(
            f"job {job['job_ref']} has no schedule: trigger; a backfill runs the intervals"
            " its cron cuts"
        )
    if start >= end:
        raise BackfillError(f"--start {start.isoformat()} is not before --end {end.isoformat()}")
    elapsed = basis.last_tick(now)
    ivs = [iv for iv in basis.between(start, min(end, elapsed))]
    if not ivs:
        raise BackfillError(
            f"no whole interval of {basis.cron!r} ({basis.tz}) lies in"
            f" [{start.isoformat()}, {min(end, elapsed).isoformat()}) and has elapsed"
        )
    runs, reset = store.interval_runs(job["id"])
    state = core_intervals.summarize(runs, reset)
    slots = core_intervals.backfill_slots(ivs, basis.bounds(), state.completed, state, [])
    return basis, slots


class BackfillError(HeadwaterError, ValueError):
    code = "invalid_backfill"
    status = 400
