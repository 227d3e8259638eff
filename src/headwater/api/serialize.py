"""Store rows to the JSON shapes of the dltHub runtime API (`dlthub-api.md`, section 2).

Required keys are always present (null where the type allows); Headwater's
own additions (`reason`, `exit_code`, `parameters`, ...) are extra keys, which
the clients keep.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dlt._workspace.deployment._job_ref import short_name
from dlt._workspace.profile import DEFAULT_PROFILE

from headwater.api.responses import MAX_INT, ApiError
from headwater.core.policy import is_served
from headwater.workspace.launch import effective_profile

if TYPE_CHECKING:
    from headwater.workspace.deployments import DeployResult

SYSTEM_NS = uuid.UUID("6f1d8f3e-9c1e-4a8b-9a0e-7f4c2b1d5e60")


def system_id(*parts: str) -> str:
    """Stable ids for what Headwater has one of (its organization, its user, a package)."""
    return str(uuid.uuid5(SYSTEM_NS, "/".join(parts)))


def job_page(base_url: str, ws_id: str, job_id: str) -> str:
    """The job's page; the path is the one the `dlthub` CLI builds for its links."""
    return f"{base_url}/w/{ws_id}/jobs/{job_id}"


def run_page(base_url: str, ws_id: str, run_id: str) -> str:
    return f"{base_url}/w/{ws_id}/runs/{run_id}"


def public_page(base_url: str, public_secret: str) -> str:
    """A published job's public link; the secret in it is the only credential."""
    return f"{base_url}/p/{public_secret}"


def duration(run: dict[str, Any]) -> float | None:
    start: datetime | None = run.get("started_at")
    end: datetime | None = run.get("finished_at")
    if start is None:
        return None
    if end is None:
        return None
    return round((end - start).total_seconds(), 3)


def workspace(ws: dict[str, Any], base_url: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ws["id"],
        "name": ws["name"],
        "description": ws.get("description"),
        "organization_id": system_id("organization", ws["id"]),
        "dataplane_id": "headwater",
        "dataplane_url": base_url,
        "created_at": ws["created_at"],
        "updated_at": ws["updated_at"],
        "archived_at": ws.get("archived_at"),
        "is_playground": False,
        "predefined_profiles": {},
        "path": ws["path"],
        "manifest": manifest,
    }


def job_profile(job_def: dict[str, Any], default: str = DEFAULT_PROFILE) -> str:
    """The job's profile (`require.profile`), else the one dlt picks for a run without one
    (`default`: the server's `WORKSPACE__PROFILE`, the code's pinned profile, or `dev`)."""
    return run_profile({}, job_def, default)


def run_profile(r: dict[str, Any], job_def: dict[str, Any], default: str = DEFAULT_PROFILE) -> str:
    """The profile dlt runs the run with: the run's own, else its job's, else `default`."""
    return str(effective_profile(r, job_def) or default)


def job(j: dict[str, Any], base_url: str, default_profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    d = j["definition"]
    secret = j.get("public_secret")
    return {
        "id": j["id"],
        "job_ref": j["job_ref"],
        "job_type": j["job_type"],
        "job_definition": d,
        "job_definition_engine_version": d.get("engine_version", 2),
        "job_definition_hash": j["definition_hash"],
        "job_url": job_page(base_url, j["workspace_id"], j["id"]),
        "public_url": public_page(base_url, secret) if secret else None,
        "profile": job_profile(d, default_profile),
        "version": j["version"],
        "workspace_id": j["workspace_id"],
        "created_at": j["created_at"],
        "created_by": system_id("user", "headwater"),
        "updated_at": j["updated_at"],
        "name": short_name(j["job_ref"]),
        "description": d.get("description"),
        "default_trigger": j["default_trigger"],
        "triggers": j["triggers"],
        "freshness": d.get("freshness"),
        "deployment_module": j["deployment_module"],
        "pipeline_name": j["pipeline_name"],
        "next_scheduled_run_at": j["next_run_at"],
        "interval_start": None,
        "interval_end": None,
        "public_secret": secret,
        "is_paused": j["is_paused"],
        "is_archived": j["is_archived"],
        # Headwater's own: interactive and stream jobs are listed, but not run here yet
        "is_served": is_served(j["job_type"]),
        # Headwater's own: what headwater.toml sets for the job (secrets stay references)
        "settings": j.get("settings") or {},
    }


def job_version(
    v: dict[str, Any],
    j: dict[str, Any],
    timeout_s: float | None,
    default_profile: str = DEFAULT_PROFILE,
) -> dict[str, Any]:
    d = v["definition"]
    return {
        "id": v["id"],
        "job_id": j["id"],
        "job_ref": j["job_ref"],
        "job_type": j["job_type"],
        "job_definition": d,
        "job_definition_engine_version": d.get("engine_version", 2),
        "job_definition_hash": v["definition_hash"],
        "profile": job_profile(d, default_profile),
        "version": v["version"],
        "created_at": v["created_at"],
        "created_by": system_id("user", "headwater"),
        "updated_at": v["created_at"],
        "max_run_time_seconds": int(timeout_s) if timeout_s else 0,
        "provider": "local",
    }


def deploy_answer(result: DeployResult, base_url: str, default_profile: str) -> dict[str, Any]:
    """A DeployWorkspaceResponse: the job receipt of a remote deploy (`-deploy`)."""
    succeeded, skipped = [], []
    for o in result.outcomes:
        j = {**o.job, "next_run_at": o.job.get("next_run_at")}
        previous = (
            job_version(o.previous_version, j, None, default_profile)
            if o.previous_version
            else None
        )
        item = {
            "job": job(j, base_url, default_profile),
            "outcome": o.outcome,
            "previous_version": previous,
        }
        (skipped if o.outcome == "unchanged" else succeeded).append(item)
    return {
        "job_receipt": {"succeeded": succeeded, "skipped": skipped, "failed": []},
        "warnings": result.warnings,
        "deployment_module": result.deployment_module,
    }


def run(
    r: dict[str, Any], base_url: str, job_ref: str | None = None, profile: str | None = None
) -> dict[str, Any]:
    """`profile`: the one dlt runs it with (`run_profile`); without it, the run's own or
    dlt's default."""
    ws = r["workspace_id"]
    return {
        "id": r["id"],
        "number": r["number"],
        "status": r["status"],
        "trigger": r["trigger"],
        "profile": profile or r["profile"] or DEFAULT_PROFILE,
        "workspace_id": ws,
        # the packages it was created on; a workspace folder has stable stand-ins
        "configuration_id": r.get("config_package_id") or system_id("configuration", ws),
        "deployment_id": r.get("code_package_id") or system_id("deployment", ws),
        "job_version_id": r["job_version_id"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
        "started_at": r["started_at"],
        "finished_at": r["finished_at"],
        "duration_seconds": duration(r),
        "logs_url": f"{base_url}/logs/v1/workspaces/{ws}/job-runs/{r['id']}/logs",
        "run_url": run_page(base_url, ws, r["id"]),
        "job_url": job_page(base_url, ws, r["job_id"]),
        "triggered_by": r["triggered_by"],
        "interval_start": r["interval_start"],
        "interval_end": r["interval_end"],
        "previous_job_run_id": r["previous_run_id"],
        "pipeline_run_summaries": r.get("pipeline_run_summaries") or [],
        # Headwater's own keys
        "job_id": r["job_id"],
        "job_ref": job_ref,
        "reason": r["reason"],
        "exit_code": r["exit_code"],
        "parameters": r["parameters"],
        "refresh": r["refresh"],
        "launch_mode": r["launch_mode"],
    }


def detailed_run(
    r: dict[str, Any],
    j: dict[str, Any],
    v: dict[str, Any] | None,
    base_url: str,
    default_profile: str = DEFAULT_PROFILE,
) -> dict[str, Any]:
    v = v or _version_of(j)
    out = run(r, base_url, j["job_ref"], run_profile(r, v["definition"], default_profile))
    out["job"] = job(j, base_url, default_profile)
    out["job_version"] = job_version(v, j, r["timeout_s"], default_profile)
    out["downstream_job_runs"] = None
    return out


def _version_of(j: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": j["current_version_id"],
        "definition": j["definition"],
        "definition_hash": j["definition_hash"],
        "version": j["version"],
        "created_at": j["updated_at"],
    }


def log_line(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": line["content"],
        "line_num": line["line_num"],
        "reported_at": line["reported_at"],
        "source": line["source"],
        "stage": line["stage"],
        "io_stream": line["io_stream"],
        # the older API's stream event called the stream `channel`
        "channel": line["io_stream"],
    }


def page(
    items: list[Any], total: int, limit: int, offset: int, next_cursor: str | None = None
) -> dict[str, Any]:
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": next_cursor,
    }


def encode_cursor(run: dict[str, Any]) -> str:
    """Where the next page of runs starts: after this one (opaque to clients)."""
    raw = f"{run['created_at'].isoformat()}|{run['number']}|{run['id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, number, run_id = raw.split("|")
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("no zone")
        return at, int(number), run_id
    except (ValueError, UnicodeDecodeError) as ex:
        raise ApiError(400, "cursor is not one this server gave", "invalid_cursor") from ex


def pipeline_run_summary(p: dict[str, Any]) -> dict[str, Any]:
    """One entry of `JobRunResponse.pipeline_run_summaries`, from a `pipeline_runs` row."""
    return {
        "pipeline_name": p["pipeline_name"],
        "pipeline_run_id": p["id"],
        "transaction_id": p["transaction_id"],
        "destination_name": p["destination_name"],
        "dataset_name": p["dataset_name"],
        "status": p["status"],
        "total_rows": p["total_rows_loaded"],
        "duration_ms": p["duration_ms"],
        "started_at": p["started_at"],
        "finished_at": p["finished_at"],
    }


# -- telemetry (`/telemetry/v1`) ---------------------------------------------------------


def job_result(row: dict[str, Any], run: dict[str, Any], job_ref: str | None) -> Any:
    """JobResultResponse: the envelope's promoted scalars (an agent's come from its trace)."""
    env = row["payload"]
    trace = env.get("trace") if isinstance(env.get("trace"), dict) else {}

    def pick(key: str, kind: type | tuple[type, ...]) -> Any:
        value = env.get(key, trace.get(key))
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    cost = env.get("cost_usd", trace.get("cost_usd"))
    version = env.get("engine_version")
    return {
        "id": row["id"],
        "job_run_id": run["id"],
        "job_ref": env.get("job_ref") if isinstance(env.get("job_ref"), str) else job_ref,
        "result_type": env["type"],
        "engine_version": version if isinstance(version, int) and version <= MAX_INT else 1,
        "created_at": row["received_at"],
        "updated_at": row["received_at"],
        "result": env.get("result"),
        "summary": pick("summary", str),
        "agent_status": pick("status", str),
        "model": pick("model", str),
        "loop_type": pick("loop_type", str),
        "stop_reason": pick("stop_reason", str),
        "input_tokens": pick("input_tokens", int),
        "output_tokens": pick("output_tokens", int),
        "total_tokens": pick("total_tokens", int),
        "turn_count": pick("turn_count", int),
        "cost_usd": None if cost is None or isinstance(cost, bool) else str(cost),
    }


def pipeline_run(row: dict[str, Any]) -> dict[str, Any]:
    """PipelineRunResponse, plus the job run and transaction it belongs to."""
    return {
        "id": row["id"],
        "pipeline_name": row["pipeline_name"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "dataset_name": row["dataset_name"],
        "destination_name": row["destination_name"],
        "dlt_version": row["dlt_version"],
        "duration_ms": row["duration_ms"],
        "error_message": row["error_message"],
        "error_step": row["error_step"],
        "finished_at": row["finished_at"],
        "has_schema_migration": row["has_schema_migration"],
        "started_at": row["started_at"],
        "total_bytes_loaded": row["total_bytes_loaded"],
        "total_rows_extracted": row["total_rows_extracted"],
        "total_rows_loaded": row["total_rows_loaded"],
        "job_run_id": row["run_id"],
        "transaction_id": row["transaction_id"],
    }


def detailed_pipeline_run(row: dict[str, Any]) -> dict[str, Any]:
    """DetailedPipelineRunResponse."""
    detail = row["detail"] or {}
    packages = detail.get("load_packages") or []
    return {
        **pipeline_run(row),
        "destination_type": row["destination_type"],
        "dlt_plus_version": None,
        "error_traceback": detail.get("error_traceback"),
        "extract_duration_ms": detail.get("extract_duration_ms"),
        "normalize_duration_ms": detail.get("normalize_duration_ms"),
        "load_duration_ms": detail.get("load_duration_ms"),
        "has_failed_load_jobs": row["has_failed_load_jobs"],
        "has_pending_packages": row["has_pending_packages"],
        "is_empty_run": row["is_empty_run"],
        "load_package_count": len(packages),
        "load_packages": packages,
        "os_name": detail.get("os_name"),
        "os_version": detail.get("os_version"),
        "python_version": detail.get("python_version"),
        "resources": detail.get("resources") or [],
        "tables": detail.get("tables") or [],
        "total_bytes_extracted": sum(
            t.get("bytes_extracted") or 0 for t in detail.get("tables") or []
        ),
    }


def activity(by: str, row: dict[str, Any]) -> dict[str, Any]:
    """PipelineStatsResponse (`by="pipeline_name"`) or DatasetStatsResponse of one group, from
    a row of `TelemetryStore.stats`."""
    out: dict[str, Any] = {
        by: row["group_key"],
        "total_pipeline_run_count": row["total_pipeline_run_count"],
        "succeeded_pipeline_run_count": row["succeeded_pipeline_run_count"],
        "success_ratio": row["success_ratio"],
        "total_rows_loaded": row["total_rows_loaded"],
        "total_bytes_loaded": row["total_bytes_loaded"],
        "average_duration_ms": row["average_duration_ms"],
        "latest_destination_name": row["latest_destination_name"],
        "latest_pipeline_run_at": row["latest_pipeline_run_at"],
        "latest_status": row["latest_status"],
    }
    if by == "pipeline_name":
        out["total_rows_extracted"] = row["total_rows_extracted"]
        out["total_duration_ms"] = row["total_duration_ms"]
        out["latest_dataset_name"] = row["latest_dataset_name"]
    else:
        out["distinct_pipeline_count"] = row["distinct_pipeline_count"]
        out["schema_migration_count"] = row["schema_migration_count"]
        out["latest_pipeline_name"] = row["latest_pipeline_name"]
        out["latest_pipeline_run_id"] = row["latest_pipeline_run_id"]
    return out
