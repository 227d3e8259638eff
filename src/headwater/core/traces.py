"""From a dlt pipeline trace (what dlt PUTs to `{dlthub_dsn}/trace`) to a pipeline-run record.

dlt sends one trace per `pipeline.run` (or `extract`/`normalize`/`load` called on
their own): `transaction_id`, `pipeline_name`, `execution_context`, `started_at`,
`finished_at` and `steps`, each step with `step_exception`/`exception_traces`,
its `*_info` metrics (`extract_info.table_metrics`, `normalize_info.table_metrics`,
`load_info` with destination, dataset and `job_metrics`) and `step_info.load_packages`.

The trace comes from job code, so nothing in it is trusted to have the expected
shape: every lookup tolerates a missing key or a wrong type. Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from headwater.core.errors import HeadwaterError

MAX_INT = 2**63 - 1
DLT_TABLE_PREFIX = "_dlt"
PACKAGE_STATUSES = ("new", "extracted", "normalized", "loaded", "aborted")


class TraceError(HeadwaterError, ValueError):
    """The payload is not a pipeline trace (no pipeline name or transaction id)."""

    code = "invalid_payload"
    status = 400


def text(value: Any, limit: int = 10_000) -> str | None:
    """A string fit for a text column: no NUL (PostgreSQL refuses it), at most `limit` long."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    return s.replace("\x00", "")[:limit]


def count(value: Any) -> int:
    """A non-negative count that fits a BIGINT; anything else is 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(int(value), MAX_INT))


def when(value: Any) -> datetime | None:
    """An aware UTC datetime from dlt's ISO strings; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _iso(value: datetime | None) -> str | None:
    """For the JSON `detail`: datetimes as ISO strings with `Z`."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def ms_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _user_table(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and not name.startswith(DLT_TABLE_PREFIX)


def _traceback(traces: list[dict[str, Any]]) -> str | None:
    """dlt's exception traces (outermost first) as one Python-style traceback text."""
    parts = []
    for t in traces:
        frames = [f for f in t.get("stack_trace") or [] if isinstance(f, str)]
        head = f"{t.get('exception_type') or 'Exception'}: {t.get('message') or ''}"
        parts.append("Traceback (most recent call last):\n" + "".join(frames) + head)
    return "\n\nDuring handling, another exception was raised:\n\n".join(parts) or None


def _packages(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Load packages by load id, as the last step that reported each left it."""
    out: dict[str, dict[str, Any]] = {}
    for step in steps:
        for pkg in _list(_dict(step.get("step_info")).get("load_packages")):
            load_id = text(pkg.get("load_id"), 100)
            if load_id:
                out[load_id] = pkg
    return out


def pipeline_run(trace: Any) -> dict[str, Any]:
    """The pipeline-run record of one trace: the columns of `pipeline_runs` plus `detail`
    (tables, resources, load packages, step timings and the run's environment)."""
    if not isinstance(trace, dict):
        raise TraceError("a trace is a JSON object")
    name = text(trace.get("pipeline_name"), 300)
    transaction_id = text(trace.get("transaction_id"), 100)
    if not name or not transaction_id:
        raise TraceError("a trace names its pipeline_name and transaction_id")
    steps = _list(trace.get("steps"))
    by_step: dict[str, dict[str, Any]] = {}
    for step in steps:
        by_step[str(step.get("step"))] = step  # the last of a kind wins (a retried load)

    # what failed: the first failing step other than `run`, which only wraps the others
    failed = [s for s in steps if s.get("step_exception")]
    failing = next((s for s in failed if s.get("step") != "run"), failed[0] if failed else None)
    error_traces = _list(failing.get("exception_traces")) if failing else []

    extract = _dict(by_step.get("extract", {}).get("extract_info"))
    normalize = _dict(by_step.get("normalize", {}).get("normalize_info"))
    load_step = by_step.get("load", {})
    load = _dict(load_step.get("load_info"))
    packages = _packages(steps)
    schema_of = {lid: text(p.get("schema_name"), 300) or "" for lid, p in packages.items()}

    hints = {
        h.get("resource_name"): h for h in _list(extract.get("hints")) if h.get("resource_name")
    }
    parents = {d.get("resource_name"): d.get("parent_name") for d in _list(extract.get("dag"))}

    # tables: extracted and normalized rows; loaded when their load jobs completed
    tables: dict[str, dict[str, Any]] = {}

    def table(tname: str, load_id: Any) -> dict[str, Any]:
        return tables.setdefault(
            tname,
            {
                "table_name": tname,
                "schema_name": schema_of.get(str(load_id), ""),
                "rows_extracted": 0,
                "bytes_extracted": 0,
                "rows_loaded": 0,
                "bytes_loaded": 0,
                "file_format": None,
                "load_duration_ms": None,
                "load_job_state": None,
                "write_disposition": None,
            },
        )

    for m in _list(extract.get("table_metrics")):
        if _user_table(m.get("table_name")):
            t = table(str(m["table_name"]), m.get("load_id"))
            t["rows_extracted"] += count(m.get("items_count"))
            t["bytes_extracted"] += count(m.get("file_size"))
    normalized_rows: dict[str, int] = {}
    for m in _list(normalize.get("table_metrics")):
        if _user_table(m.get("table_name")):
            table(str(m["table_name"]), m.get("load_id"))
            normalized_rows[str(m["table_name"])] = normalized_rows.get(
                str(m["table_name"]), 0
            ) + count(m.get("items_count"))

    job_states: dict[str, set[str]] = {}
    for jm in _list(load.get("job_metrics")):
        tname = jm.get("table_name")
        if not _user_table(tname):
            continue
        t = table(str(tname), jm.get("load_id"))
        state = jm.get("state")
        job_states.setdefault(str(tname), set()).add(str(state))
        ms = ms_between(when(jm.get("started_at")), when(jm.get("finished_at")))
        if ms is not None:
            t["load_duration_ms"] = (t["load_duration_ms"] or 0) + ms
    for pkg in packages.values():
        for job in _list(pkg.get("jobs")):
            tname = job.get("table_name")
            if not _user_table(tname):
                continue
            t = table(str(tname), pkg.get("load_id"))
            t["file_format"] = t["file_format"] or text(job.get("file_format"), 40)
            if job.get("state") == "completed_jobs":
                t["bytes_loaded"] += count(job.get("file_size"))
            elif job.get("state") == "failed_jobs":
                job_states.setdefault(str(tname), set()).add("failed")
    for tname, t in tables.items():
        states = job_states.get(tname, set())
        if "failed" in states:
            t["load_job_state"] = "failed"
        elif states:
            t["load_job_state"] = "completed"
            t["rows_loaded"] = normalized_rows.get(tname, 0)
        hint = hints.get(tname) or {}
        t["write_disposition"] = text(hint.get("write_disposition"), 40)

    resources = []
    for m in _list(extract.get("resource_metrics")):
        rname = text(m.get("resource_name"), 300)
        if not rname:
            continue
        parent = parents.get(rname)
        resources.append(
            {
                "resource_name": rname,
                "schema_name": schema_of.get(str(m.get("load_id")), ""),
                "rows_extracted": count(m.get("items_count")),
                "bytes_extracted": count(m.get("file_size")),
                "parent_resource_name": text(parent, 300) if parent != rname else None,
                "write_disposition": text(_dict(hints.get(rname)).get("write_disposition"), 40),
            }
        )

    load_packages = []
    for load_id, pkg in packages.items():
        jobs = _list(pkg.get("jobs"))
        completed = sum(j.get("state") == "completed_jobs" for j in jobs)
        failed_jobs = sum(j.get("state") == "failed_jobs" for j in jobs)
        state = pkg.get("state")
        load_packages.append(
            {
                "load_id": load_id,
                "load_status": state if state in PACKAGE_STATUSES else None,
                "completed_at": _iso(when(pkg.get("completed_at"))),
                "job_count": len(jobs),
                "completed_job_count": completed,
                "failed_job_count": failed_jobs,
                "has_failed_load_jobs": failed_jobs > 0,
                "has_schema_migration": bool(pkg.get("schema_migrated")),
                "is_pending": state not in ("loaded", "aborted"),
                "schema_name": schema_of.get(load_id) or None,
                "schema_hash": text(pkg.get("schema_hash"), 100),
                "total_bytes_loaded": sum(
                    count(j.get("file_size")) for j in jobs if j.get("state") == "completed_jobs"
                ),
                "total_rows_loaded": 0,
            }
        )

    started, finished = when(trace.get("started_at")), when(trace.get("finished_at"))
    ctx = _dict(trace.get("execution_context"))
    library = _dict(ctx.get("library"))
    os_info = _dict(ctx.get("os"))
    rows_extracted = sum(t["rows_extracted"] for t in tables.values())
    rows_loaded = sum(t["rows_loaded"] for t in tables.values())
    if len(load_packages) == 1:
        load_packages[0]["total_rows_loaded"] = rows_loaded

    def step_ms(name: str) -> int | None:
        s = by_step.get(name)
        return ms_between(when(s.get("started_at")), when(s.get("finished_at"))) if s else None

    has_failed_jobs = any(p["has_failed_load_jobs"] for p in load_packages) or any(
        t["load_job_state"] == "failed" for t in tables.values()
    )
    return {
        "transaction_id": transaction_id,
        "pipeline_name": name,
        "status": "failed" if failed else "succeeded",
        "destination_name": text(load.get("destination_name"), 300),
        "destination_type": text(load.get("destination_type"), 300),
        "dataset_name": text(load.get("dataset_name"), 300),
        "started_at": started,
        "finished_at": finished,
        "duration_ms": ms_between(started, finished),
        "total_rows_extracted": rows_extracted,
        "total_rows_loaded": rows_loaded,
        "total_bytes_loaded": sum(p["total_bytes_loaded"] for p in load_packages),
        "is_empty_run": rows_extracted == 0 and rows_loaded == 0,
        "has_failed_load_jobs": has_failed_jobs,
        "has_pending_packages": any(p["is_pending"] for p in load_packages),
        "has_schema_migration": any(p["has_schema_migration"] for p in load_packages)
        if load_packages
        else None,
        "error_step": text(failing.get("step"), 20) if failing else None,
        "error_message": text(failing.get("step_exception")) if failing else None,
        "dlt_version": text(library.get("version"), 40) if library.get("name") == "dlt" else None,
        "detail": {
            "error_traceback": text(_traceback(error_traces), 100_000),
            "extract_duration_ms": step_ms("extract"),
            "normalize_duration_ms": step_ms("normalize"),
            "load_duration_ms": step_ms("load"),
            "python_version": text(ctx.get("python"), 40),
            "os_name": text(os_info.get("name"), 100),
            "os_version": text(os_info.get("version"), 200),
            "tables": sorted(tables.values(), key=lambda t: t["table_name"]),
            "resources": resources,
            "load_packages": load_packages,
        },
    }
