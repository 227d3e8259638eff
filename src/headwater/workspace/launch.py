"""From a stored job to a run request, and from a run to dlt's launcher command.

`fire` is the one way every trigger (API, schedule, chain, deployment) asks
for a run, so they all get the same policy, interval and limits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dlt._workspace.deployment._run_helpers import build_runtime_entry_point, pick_launcher
from dlt._workspace.deployment.requirements import get_pkg_install_spec
from dlt._workspace.deployment.typing import TInstallSpec

from headwater.core import debounce, policy
from headwater.core import intervals as core_intervals
from headwater.core.intervals import Interval
from headwater.core.leases import pool_of
from headwater.core.retries import RetryPolicy
from headwater.core.specs import JobSpec, RunRecorder, RunRequest, TriggerResult
from headwater.workspace import external, intervals, triggers
from headwater.workspace.config import CONFIG_MODULE, WorkspaceConfig, settings_for
from headwater.workspace.manifest import DEPLOYMENT_MODULE, LoadedManifest, job_definition_hash


def job_specs(loaded: LoadedManifest, config: WorkspaceConfig | None = None) -> list[JobSpec]:
    """The manifest's jobs and the jobs `headwater.toml` declares, each with its settings
    from the file; `ConfigError` (key and line) when the file does not fit the manifest."""
    config = config or WorkspaceConfig()
    defs = [(jd, None) for jd in loaded.jobs]
    refs = [jd["job_ref"] for jd in loaded.jobs]
    refs += [j.job_ref for j in config.dbt_cloud.jobs]
    defs += [
        (external.dbt_cloud_definition(config, j, refs), CONFIG_MODULE)
        for j in config.dbt_cloud.jobs
    ]
    settings = settings_for(
        config, [(jd["job_ref"], (jd.get("expose") or {}).get("tags") or []) for jd, _m in defs]
    )
    specs = []
    for jd, module in defs:
        own = {**external.debounce_settings(jd), **settings[jd["job_ref"]]}
        added = external.resolve_chains(own.get("triggers") or [], refs, jd["job_ref"])
        specs.append(
            JobSpec(
                job_ref=jd["job_ref"],
                job_type=external.job_type_of(jd),
                definition=jd,
                definition_hash=job_definition_hash(jd),
                triggers=triggers.expanded_triggers(jd) + added,
                default_trigger=triggers.default_trigger(jd),
                pipeline_name=triggers.pipeline_name_of(jd),
                settings={**own, "triggers": added} if added else own,
                deployment_module=module,
            )
        )
    return specs


def run_request(
    job: dict[str, Any],
    trigger: str,
    *,
    now: datetime,
    profile: str | None = None,
    parameters: dict[str, Any] | None = None,
    refresh: bool = False,
    previous_run_id: str | None = None,
    triggered_by: str | None = None,
    dedupe_key: str | None = None,
    interval: Interval | None = None,
    backfill_id: str | None = None,
) -> RunRequest:
    """What a trigger of `job` asks the store for: its interval, limits and concurrency.
    `interval` is the one an interval job's run processes; without it, dlt's interval for
    the trigger (`intervals.run_interval`)."""
    job_def = job["definition"]
    settings = job.get("settings") or {}
    timeout, grace = triggers.timeout_of(job_def)
    start: datetime | None
    end: datetime | None
    if interval is not None:
        start, end = interval
    else:
        start, end = intervals.run_interval(job_def, trigger, now, refresh)
    return RunRequest(
        job_id=job["id"],
        trigger=trigger,
        profile=profile,
        parameters=parameters,
        refresh=refresh,
        previous_run_id=previous_run_id,
        triggered_by=triggered_by,
        dedupe_key=dedupe_key,
        interval_start=start,
        interval_end=end,
        timeout_s=timeout,
        grace_period_s=grace,
        concurrency=triggers.concurrency_of(job_def),
        overlap=settings.get("overlap") or "skip",
        locks=settings.get("locks") or None,
        retry_policy=retry.as_dict() if (retry := RetryPolicy.from_settings(settings)) else None,
        backfill_id=backfill_id,
        deadline_at=_deadline(job_def, end, now),
        pool=pool_of(settings, job_def),
    )


def _deadline(job_def: dict[str, Any], end: datetime | None, now: datetime) -> datetime | None:
    """When the run must have completed: its deadline after its interval closed (or after
    it was asked for). A run made after its deadline (a catch-up, a backfill) has none: it
    was missed before the run existed, and a first deploy must not raise a flood."""
    at = intervals.deadline_at(job_def, end if end is not None else now)
    return at if at is None or at > now else None


def fire(
    store: RunRecorder,
    job: dict[str, Any],
    trigger: str,
    *,
    now: datetime,
    dry_run: bool = False,
    skip_freshness: bool = False,
    **request: Any,
) -> TriggerResult:
    """Ask for a run of `job` (see `run_request` for the keyword arguments).

    On the way: a refresh clears the job's completed intervals and those of the jobs it
    cascades to; a job whose upstreams are not fresh is not started (its trigger waits,
    unless `skip_freshness`); an interval job runs its next open interval; a job with a
    `run_interval` is debounced (the trigger fires, or is folded into a fire to come).
    """
    if needs_planning(job, request):
        held = _refresh_and_freshness(store, job, trigger, now, dry_run, skip_freshness, request)
        if held is not None:
            return held
        basis = intervals.interval_job(job["definition"])
        if basis is not None and not request.get("refresh"):
            return fire_next_intervals(
                store, job, basis, trigger, now=now, dry_run=dry_run, **request
            )
    req = run_request(job, trigger, now=now, **request)
    interval = run_interval(job)
    if interval is not None and not dry_run:
        return fire_debounced(store, job, req, now, interval)
    return store.create_run(req, now=now, dry_run=dry_run)


async def fire_async(
    store: RunRecorder,
    job: dict[str, Any],
    trigger: str,
    *,
    now: datetime,
    dry_run: bool = False,
    skip_freshness: bool = False,
    **request: Any,
) -> TriggerResult:
    """`fire` for the event loop: the loop serves other requests while the run is recorded."""
    if needs_planning(job, request):
        return await asyncio.to_thread(
            functools.partial(
                fire, store, job, trigger, now=now, dry_run=dry_run,
                skip_freshness=skip_freshness, **request,
            )
        )  # fmt: skip
    req = run_request(job, trigger, now=now, **request)
    interval = run_interval(job)
    if interval is not None and not dry_run:
        return await asyncio.to_thread(fire_debounced, store, job, req, now, interval)
    return await store.create_run_async(req, now=now, dry_run=dry_run)


def needs_planning(job: dict[str, Any], request: Mapping[str, Any]) -> bool:
    """Whether a trigger of the job must read more than the job row: a refresh, an interval
    job, freshness constraints, or a refresh cascaded to it. The plain path stays one write."""
    d = job["definition"]
    return bool(
        request.get("refresh")
        or d.get("interval")
        or d.get("freshness")
        or job.get("intervals_reset_at")
    )


def _refresh_and_freshness(
    store: RunRecorder,
    job: dict[str, Any],
    trigger: str,
    now: datetime,
    dry_run: bool,
    skip_freshness: bool,
    request: dict[str, Any],
) -> TriggerResult | None:
    """Carry out a refresh (updating `request`), and hold a trigger whose upstreams are not
    fresh; None: go on and fire."""
    job_def = job["definition"]
    if request.get("refresh"):
        effective, _warning = intervals.refresh_of(job_def, True)
        request["refresh"] = effective
        if effective and not dry_run:
            refresh_jobs(store, job, now)
    elif job.get("intervals_reset_at") and store.first_run_since_reset(job["id"]):
        # a refresh cascaded here: the job's first run since carries it to dlt
        request["refresh"] = True
    if skip_freshness or not job_def.get("freshness"):
        return None
    reasons = stale_reasons(store, job, now)
    if not reasons:
        return None
    if not dry_run and intervals.interval_job(job_def) is None:
        # an interval job needs no wait: the interval planner starts it once fresh
        asked = {"trigger": trigger, **{k: v for k, v in request.items() if k != "dedupe_key"}}
        store.wait_for_freshness(job["id"], asked, reasons, now)
    return TriggerResult(
        policy.Decision(
            policy.TriggerStatus.SKIPPED_UPSTREAM_PENDING,
            reasons + ["starts when its upstreams are fresh (skip_freshness overrides)"],
        ),
        None,
    )


def refresh_jobs(store: RunRecorder, job: dict[str, Any], now: datetime) -> list[str]:
    """Clear the completed intervals of `job` and of the jobs its refresh cascades to
    (`refresh_propagation`); answers the refs of those others. Their next runs carry the
    refresh to dlt."""
    jobs = store.active_jobs_cached(job["workspace_id"])
    by_ref = {j["job_ref"]: j for j in jobs}
    cascade = intervals.refresh_cascade(
        job["job_ref"], {ref: j["definition"] for ref, j in by_ref.items()}
    )
    others = [by_ref[ref] for ref in cascade if ref in by_ref]
    store.reset_intervals([job, *others], now, cause=f"refresh of {job['job_ref']}")
    return [j["job_ref"] for j in others]


def stale_reasons(store: RunRecorder, job: dict[str, Any], now: datetime) -> list[str]:
    """Why the job's upstreams are not fresh (empty: they are)."""
    job_def = job["definition"]
    if not job_def.get("freshness"):
        return []
    jobs = store.active_jobs_cached(job["workspace_id"])
    by_ref = {j["job_ref"]: j for j in jobs}
    ups = [by_ref[r] for r in intervals.upstream_refs(job_def) if r in by_ref]
    ends = store.last_completed([u["id"] for u in ups])
    return intervals.stale_reasons(
        job_def,
        {ref: j["definition"] for ref, j in by_ref.items()},
        {u["job_ref"]: ends.get(u["id"]) for u in ups},
        now,
    )


def fire_next_intervals(
    store: RunRecorder,
    job: dict[str, Any],
    basis: intervals.IntervalJob,
    trigger: str,
    *,
    now: datetime,
    dry_run: bool = False,
    last_tick: datetime | None = None,
    **request: Any,
) -> TriggerResult:
    """Run the interval job's next open intervals (`core/intervals.plan`): one in
    sequential mode, as many as `execute.concurrency` allows in parallel mode.

    `last_tick` is given by the interval planner: a failed interval then waits for the next
    tick. A person's or a tick's trigger retries it at once. Answers the first run made, or
    why none was.
    """
    request.pop("dedupe_key", None)  # an interval's run is keyed by its interval
    job_def = job["definition"]
    lo, hi = basis.bounds()
    if (
        last_tick is None
        and triggers.kind(trigger) == "schedule"
        and ((lo is not None and now < lo) or (hi is not None and now > hi))
    ):
        return TriggerResult(
            policy.Decision(
                policy.TriggerStatus.SKIPPED_OUT_OF_INTERVAL,
                [f"tick {now.isoformat()} is outside the job's interval {dict(basis.spec)}"],
            ),
            None,
        )
    runs, reset = store.interval_runs(job["id"])
    state = core_intervals.summarize(runs, reset)
    open_ivs = basis.open_intervals(now, state.completed)
    chosen = core_intervals.plan(
        open_ivs,
        state,
        basis.mode,
        triggers.concurrency_of(job_def),
        last_tick if last_tick is not None else datetime.max.replace(tzinfo=UTC),
    )
    if not chosen:
        if state.active:
            s, e = state.active[0]
            why = f"interval [{s.isoformat()}, {e.isoformat()}) is running" + (
                " (sequential mode)" if basis.mode != "parallel" else "; concurrency is full"
            )
            return TriggerResult(
                policy.Decision(policy.TriggerStatus.SKIPPED_CONCURRENCY_LIMIT, [why]), None
            )
        if open_ivs:
            s, e = open_ivs[0]
            why = f"interval [{s.isoformat()}, {e.isoformat()}) failed; the next tick retries it"
            return TriggerResult(
                policy.Decision(policy.TriggerStatus.SKIPPED_CONCURRENCY_LIMIT, [why]), None
            )
        end = basis.window(now)[1]
        return TriggerResult(
            policy.Decision(
                policy.TriggerStatus.SKIPPED_ALREADY_COVERED,
                [f"every interval up to {end.isoformat()} is completed"],
            ),
            None,
        )
    first: TriggerResult | None = None
    for iv in chosen:
        req = run_request(
            job,
            trigger,
            now=now,
            interval=iv,
            dedupe_key=core_intervals.interval_key(iv[0], state.runs_per_start.get(iv[0], 0)),
            **request,
        )
        result = store.create_run(req, now=now, dry_run=dry_run)
        first = first or result
        request["refresh"] = False  # a cascaded refresh goes with the first run only
    assert first is not None
    return first


# -- debounced jobs (`run_interval` in headwater.toml) --------------------------------------


def run_interval(job: dict[str, Any]) -> float | None:
    """The job's debounce interval in seconds; None: not debounced."""
    value = (job.get("settings") or {}).get("run_interval")
    return None if value is None else float(value)


def fire_debounced(
    store: RunRecorder, job: dict[str, Any], req: RunRequest, now: datetime, interval: float
) -> TriggerResult:
    """A trigger of a debounced job: fire now, or fold it into the fire that covers it
    (`core/debounce.signal`). It never waits for anything but the store."""
    request = {
        "trigger": req.trigger,
        "parameters": req.parameters,
        "profile": req.profile,
        "refresh": req.refresh,
        "triggered_by": req.triggered_by,
        "previous_run_id": req.previous_run_id,
    }
    t = now.timestamp()
    out = store.debounce_step(
        job["id"], now, interval, lambda s: debounce.signal(s, t, interval), request=request
    )
    return carry_out(store, job, out, now, interval)


def carry_out(
    store: RunRecorder, job: dict[str, Any], out: Any, now: datetime, interval: float
) -> TriggerResult:
    """Do what a debouncer step decided: create the fire's run (once, by its key) and
    record it; or answer where a folded trigger went."""
    first: TriggerResult | None = None
    for _ in range(3):  # a fire that makes no run lands at once; its follow-up may fire
        if out.step.action is not debounce.Action.FIRE:
            break
        asked = dict(out.request or {})
        req = run_request(
            job,
            asked.pop("trigger", None) or triggers.manual_trigger(job["definition"]),
            now=now,
            dedupe_key=debounce.fire_key(out.fire_count),
            **{k: v for k, v in asked.items() if v is not None},
        )
        result = store.create_run(req, now=now)
        first = first or result
        run_id = result.run["id"] if result.run and result.decision.creates_run else None
        out = store.debounce_step(
            job["id"],
            now,
            interval,
            lambda s: debounce.Step(s, debounce.Action.WAIT),
            fired_run=(out.fire_count, run_id),
        )
    if first is not None:
        return first
    return folded(store, out)


def folded(store: RunRecorder, out: Any) -> TriggerResult:
    """The answer to a trigger folded into a fire: the run it joins, or when it fires."""
    last = store.get_run(out.last_run_id) if out.last_run_id else None
    if out.due_at is not None:
        reason = f"debounced: folded into the fire at {out.due_at.isoformat()}"
    elif last is not None:
        reason = (
            f"debounced: folded into run {last['number']} ({last['status']}), whose"
            " follow-up covers it"
        )
    else:
        reason = "debounced: folded into the fire in flight"
    return TriggerResult(
        policy.Decision(policy.TriggerStatus.TRIGGERED, [reason]),
        last if out.due_at is None else None,
    )


def effective_profile(run: dict[str, Any], job_def: dict[str, Any]) -> str | None:
    return run.get("profile") or (job_def.get("require") or {}).get("profile")


@functools.cache
def dlt_install_spec() -> TInstallSpec:
    """How this machine's dlt is installed, classified by dlt itself (pypi, path, git, ...)."""
    return get_pkg_install_spec("dlt")


def launch_command(run: dict[str, Any], job_def: dict[str, Any]) -> tuple[str, list[str]]:
    """The launcher module and its arguments, exactly as `python -m <launcher>` takes them."""
    entry_point = build_runtime_entry_point(
        triggers.as_dlt_job(job_def),
        {str(k): v for k, v in (run.get("parameters") or {}).items()},
        effective_profile(run, job_def),
        bool(run.get("refresh")),
        run.get("interval_start"),
        run.get("interval_end"),
        dlt_install_spec(),
    )
    launcher = pick_launcher(entry_point)
    argv = [
        "--run-id",
        run["id"],
        "--trigger",
        run["trigger"],
        "--entry-point",
        json.dumps(entry_point, default=str),
    ]
    return launcher, argv


def served_local_dir(workspace: Path, profile: str, env: Mapping[str, str]) -> Path:
    """dlt's local dir (relative destination paths such as `duckdb("x.duckdb")`, files of
    the job's own) for runs of the served folder `workspace`, wherever their code comes from.

    It is where dlt puts it for a run in the folder itself: `DLT_LOCAL_DIR` if set, a plain
    folder with its own code (no `.dlt/.workspace`) is its own local dir, and otherwise
    `[workspace.settings] local_dir` or `.dlt/data/<profile>` (a dlt workspace; also a folder
    filled by remote deploys only, whose packages come from dlt workspaces).
    """
    if env.get("DLT_LOCAL_DIR"):
        return Path(env["DLT_LOCAL_DIR"])
    from dlt._workspace.run_context import DEFAULT_LOCAL_FOLDER

    settings = workspace / ".dlt"
    is_workspace = (settings / ".workspace").is_file()
    if not is_workspace and (workspace / f"{DEPLOYMENT_MODULE}.py").is_file():
        return workspace
    configured = env.get("WORKSPACE__SETTINGS__LOCAL_DIR")
    if not configured and is_workspace:
        try:
            with (settings / "config.toml").open("rb") as f:
                configured = (
                    tomllib.load(f).get("workspace", {}).get("settings", {}).get("local_dir")
                )
        except (OSError, tomllib.TOMLDecodeError):
            configured = None
    if configured:
        return workspace / str(configured)
    return settings / DEFAULT_LOCAL_FOLDER / profile


def run_environment(
    base_env: dict[str, str],
    code_dir: Path,
    run: dict[str, Any],
    ws_id: str,
    data_dir: Path,
    beacon_dsn: str | None = None,
    local_dir: Path | None = None,
) -> dict[str, str]:
    """A fresh environment for one run: the server's own, plus where dlt finds code and data.

    `code_dir` is the workspace folder or an uploaded package; `data_dir` (pipeline
    state) stays the same across deployments, and so does `local_dir`, dlt's local dir:
    given for code from a package, it pins the run's local files to the served folder
    (`served_local_dir`); dlt finds it itself in the folder. `beacon_dsn` is where the run's dlt
    sends its traces and job result, unless `base_env` names a DSN of its own (the
    server's environment or a workspace variable: the user's choice wins). Without
    `beacon_dsn` dlt sends nothing at all: the warm launcher must not, since dlt's
    sender is a thread and a process with threads is not forked.
    """
    env = {
        k: v
        for k, v in base_env.items()
        if not k.startswith("HEADWATER_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    own_dsn = env.pop("RUNTIME__DLTHUB_DSN", None)
    if beacon_dsn:
        env["RUNTIME__DLTHUB_DSN"] = own_dsn or beacon_dsn
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), env.get("PYTHONPATH")) if p)
    env["DLT_PROJECT_DIR"] = str(code_dir)
    # never dlt's global directory: pipeline state belongs to this workspace
    env.setdefault("DLT_DATA_DIR", str(data_dir))
    if local_dir is not None:
        # code from a package: its local files still belong in the served folder
        env.setdefault("DLT_LOCAL_DIR", str(local_dir))
    if run.get("profile"):
        # dlt picks its profile when it sets up its run context, before the launcher runs
        env["WORKSPACE__PROFILE"] = run["profile"]
    env["RUNTIME__RUN_ID"] = run["id"]
    env["RUNTIME__WORKSPACE_ID"] = ws_id
    env["HEADWATER_RUN_ID"] = run["id"]
    env["HEADWATER_RUN_NUMBER"] = str(run["number"])
    return env


def dlt_profile(
    run: dict[str, Any], job_def: dict[str, Any], code_dir: Path, env: Mapping[str, str]
) -> str:
    """The profile dlt runs a run with: the run's or the job's, else what dlt itself picks in
    `code_dir` (`WORKSPACE__PROFILE`, the pinned `.dlt/profile-name`, or `dev`)."""
    from dlt._workspace.profile import DEFAULT_PROFILE, PIN_FILE_NAME

    if profile := effective_profile(run, job_def) or env.get("WORKSPACE__PROFILE"):
        return str(profile)
    pin = code_dir / ".dlt" / PIN_FILE_NAME
    if pin.is_file():
        with pin.open(encoding="utf-8") as f:
            if pinned := f.readline().strip():
                return pinned
    return DEFAULT_PROFILE
