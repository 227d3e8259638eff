"""Jobs `headwater.toml` declares (dbt Cloud jobs), given the shape of dlt's job definitions.

Such a job is stored, listed, triggered, chained, tagged and paused like a manifest job, so
its definition follows dlt's `TJobDefinition` (clients parse it) with the job's own
settings under `dbt_cloud`. Its entry point's launcher is not dlt's: no worker runs it,
the server's `monitors/` drive its runs. Secrets stay references (`env:`/`secret:`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headwater.workspace import triggers
from headwater.workspace.config import (
    CONFIG_FILE,
    DBT_CLOUD_JOB_TYPE,
    ConfigError,
    DbtCloudJob,
    WorkspaceConfig,
)

DBT_CLOUD_LAUNCHER = "headwater.monitors.dbt_cloud"
"""The entry point launcher of a dbt Cloud job: the server's monitor, not a process."""
CHAIN_KINDS = ("job.success", "job.fail")


def dbt_cloud_definition(
    config: WorkspaceConfig, job: DbtCloudJob, refs: Sequence[str]
) -> dict[str, Any]:
    """A dbt Cloud job of `[[dbt_cloud.jobs]]` as a job definition; its chain triggers are
    resolved against `refs` (full, half or bare refs, as dlt resolves them)."""
    conn = config.dbt_cloud.connections[job.connection]
    settings = job.model_dump(mode="json", exclude={"name", "connection", "tags", "description"})
    settings["connection"] = {
        "name": job.connection,
        "account_id": conn.account_id,
        "access_url": conn.access_url,
        "token": conn.token,
    }
    definition: dict[str, Any] = {
        "engine_version": 2,
        "job_ref": job.job_ref,
        "entry_point": {
            "module": CONFIG_FILE,
            "function": job.name,
            "job_type": "batch",
            "launcher": DBT_CLOUD_LAUNCHER,
        },
        "triggers": [_check(t, refs, job.job_ref) for t in job.trigger],
        # dbt Cloud's own runs decide overlap (`mode`), at fire time
        "execute": {"concurrency": None},
        "description": job.description
        or f"dbt Cloud job {job.job_id} of account {conn.account_id}",
        "expose": {"tags": list(job.tags), "display_name": job.name},
        DBT_CLOUD_JOB_TYPE: settings,
    }
    return definition


def job_type_of(job_def: dict[str, Any]) -> str:
    """Headwater's type of a job: `dbt_cloud` for those the monitors drive, else dlt's."""
    if (
        DBT_CLOUD_JOB_TYPE in job_def
        and (job_def.get("entry_point") or {}).get("launcher") == DBT_CLOUD_LAUNCHER
    ):
        return DBT_CLOUD_JOB_TYPE
    return triggers.job_type(job_def)


def debounce_settings(job_def: dict[str, Any]) -> dict[str, Any]:
    """A dbt Cloud job's own `run_interval` and `trigger_on_start`, as job settings: its
    triggers are debounced like any job's (a `[jobs."..."]` table may still override)."""
    own = job_def.get(DBT_CLOUD_JOB_TYPE) if job_type_of(job_def) == DBT_CLOUD_JOB_TYPE else None
    if not own or own.get("run_interval") is None:
        return {}
    return {"run_interval": own["run_interval"], "trigger_on_start": own["trigger_on_start"]}


def resolve_chains(chains: Sequence[str], refs: Sequence[str], own_ref: str) -> list[str]:
    """`job.success:<ref>` triggers added in `headwater.toml`, with full refs."""
    return [_check(t, refs, own_ref) for t in chains]


def _check(trigger: str, refs: Sequence[str], own_ref: str) -> str:
    kind, _sep, target = trigger.partition(":")
    try:
        if kind in CHAIN_KINDS:
            ref = triggers.resolve_ref(target, refs)
            if ref == own_ref:
                raise ConfigError([f"{own_ref}: {trigger!r} would chain the job to itself"])
            return f"{kind}:{ref}"
        return triggers.check_trigger(trigger)
    except (triggers.JobRefError, triggers.TriggerError) as ex:
        raise ConfigError([f"{own_ref}: trigger {trigger!r}: {ex}"]) from ex
