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
from datetime import datetime
from pathlib import Path
from typing import Any

from dlt._workspace.deployment._run_helpers import (
    build_runtime_entry_point,
    pick_launcher,
    resolve_interval,
)
from dlt._workspace.deployment.requirements import get_pkg_install_spec
from dlt._workspace.deployment.typing import TInstallSpec, TTrigger

from headwater.core import debounce, policy
from headwater.core.retries import RetryPolicy
from headwater.core.specs import JobSpec, RunRecorder, RunRequest, TriggerResult
from headwater.workspace import external, triggers
from headwater.workspace.config import CONFIG_MODULE, WorkspaceConfig, settings_for
from headwater.workspace.manifest import DEPLOYMENT_MODULE, LoadedManifest, job_definition_hash

INTERVAL_TRIGGER_KINDS = ("schedule", "every", "once")


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


def _interval(
    job_def: dict[str, Any], trigger: str, now: datetime, refresh: bool
) -> tuple[datetime | None, datetime | None]:
    """dlt's interval for timed triggers and jobs that declare one; none otherwise.

    A manual run gets its default trigger's interval (a manual run of a daily job loads
    the last elapsed day, as that day's tick would). A point-in-time interval for a
    manual run without a timed trigger, or a chained run, would make interval
    incrementals load nothing, so those runs get no interval at all.
    """
    basis = trigger
    if triggers.kind(trigger) == "manual":
        basis = triggers.default_trigger(job_def) or trigger
    if triggers.kind(basis) not in INTERVAL_TRIGGER_KINDS and not job_def.get("interval"):
        return None, None
    try:
        start, end, _tz = resolve_interval(
            None, None, triggers.as_dlt_job(job_def), TTrigger(basis), now, refresh
        )
    except Exception:
        return None, None
    return start, end


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
) -> RunRequest:
    """What a trigger of `job` asks the store for: its interval, limits and concurrency."""
    job_def = job["definition"]
    settings = job.get("settings") or {}
    timeout, grace = triggers.timeout_of(job_def)
    start, end = _interval(job_def, trigger, now, refresh)
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
        retry_policy=policy.as_dict() if (policy := RetryPolicy.from_settings(settings)) else None,
    )


def fire(
    store: RunRecorder,
    job: dict[str, Any],
    trigger: str,
    *,
    now: datetime,
    dry_run: bool = False,
    **request: Any,
) -> TriggerResult:
    """Ask for a run of `job` (see `run_request` for the keyword arguments). A job with a
    `run_interval` is debounced: the trigger fires, or is folded into a fire to come."""
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
    **request: Any,
) -> TriggerResult:
    """`fire` for the event loop: the loop serves other requests while the run is recorded."""
    req = run_request(job, trigger, now=now, **request)
    interval = run_interval(job)
    if interval is not None and not dry_run:
        return await asyncio.to_thread(fire_debounced, store, job, req, now, interval)
    return await store.create_run_async(req, now=now, dry_run=dry_run)


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
    env = {k: v for k, v in base_env.items() if not k.startswith("HEADWATER_")}
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
