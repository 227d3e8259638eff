"""What the routes share: the store, the served workspace, and lookups that answer 404."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from headwater.api import serialize as ser
from headwater.api.responses import ApiError
from headwater.store.packages import PackageStore
from headwater.store.store import Store
from headwater.store.telemetry import TelemetryStore
from headwater.store.vault import VariableStore
from headwater.workspace import intervals
from headwater.workspace.packages import ReadPackage


@dataclass
class ApiContext:
    """What the API needs from the runtime that serves it."""

    store: Store
    ws_id: str
    base_url: Callable[[], str]
    reload_manifest: Callable[[], dict[str, Any]]
    manifest_status: Callable[[], dict[str, Any]]
    packages: PackageStore
    accept_package: Callable[[str, BinaryIO], ReadPackage]
    """Check and unpack an uploaded package (kind, the gzipped tar); raises PackageError."""
    deploy: Callable[[dict[str, Any], bool], dict[str, Any]]
    """Validate and reconcile a posted manifest (`-deploy` body, dry run)."""
    variables: VariableStore
    package_stored: Callable[[dict[str, Any]], bool] = lambda _row: True
    """Whether a numbered package's files are on this server's disk."""
    webhook_secret: Callable[[], str | None] = lambda: None
    """The secret webhook senders sign bodies with (HMAC-SHA256), if one is set."""
    default_profile: Callable[[], str] = lambda: ser.DEFAULT_PROFILE
    """The profile dlt picks for a run that names none and whose job names none."""
    telemetry: TelemetryStore | None = None
    """What runs' dlt sent to their beacons; None: read from `store`'s database."""
    beacon_key: bytes | None = None
    """The key of the runs' beacon secrets (`core/beacon.py`); None: no beacon."""
    package_archive: Callable[[dict[str, Any]], Path] | None = None
    """A numbered package as a `.tar.gz` file (raises PackageMissing); None: not served."""
    run_environment: Callable[[dict[str, Any]], tuple[dict[str, str], list[str]]] | None = None
    """A run's environment variables and the secret values among them; None: not served."""

    def __post_init__(self) -> None:
        if self.telemetry is None:
            self.telemetry = TelemetryStore(self.store.engine)

    def check_ws(self, ws: str) -> None:
        if ws != self.ws_id:
            raise ApiError(404, f"no workspace {ws!r} on this server", "workspace_not_found")

    def job(self, ws: str, job_id: str, cached: bool = False) -> dict[str, Any]:
        """The job, or 404. `cached`: from the store's job cache (for a trigger, which
        re-reads the job under its lock; a miss reads one row)."""
        self.check_ws(ws)
        job = self.store.get_job_cached(job_id) if cached else self.store.get_job(job_id)
        if job is None or job["workspace_id"] != ws:
            raise ApiError(404, f"no job {job_id!r} in this workspace", "job_not_found")
        return job

    def run(self, ws: str, run_id: str) -> dict[str, Any]:
        self.check_ws(ws)
        run = self.store.get_run(run_id)
        if run is None or run["workspace_id"] != ws:
            raise ApiError(404, f"no job run {run_id!r} in this workspace", "job_run_not_found")
        return run

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        """A JobResponse."""
        return ser.job(job, self.base_url(), self.default_profile())

    def run_view(self, run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        """A JobRunResponse, with the profile dlt runs it with."""
        version = self.store.get_job_version(run["job_version_id"])
        job_def = (version or job)["definition"]
        profile = ser.run_profile(run, job_def, self.default_profile())
        return ser.run(run, self.base_url(), job["job_ref"], profile)

    def detailed_job(self, job: dict[str, Any], latest: dict[str, Any] | None) -> dict[str, Any]:
        out = self.job_view(job)
        out["latest_job_run"] = self.run_view(latest, job) if latest else None
        out["current_version"] = None
        out["recent_job_runs"] = None
        out["downstream_job_runs"] = None
        job_def = job["definition"]
        if job_def.get("interval"):
            # the declared interval window, snapped to the job's cron
            try:
                basis = intervals.interval_job(job_def)
                lo, hi = basis.bounds() if basis else (None, None)
            except ValueError:
                lo = hi = None
            out["interval_start"], out["interval_end"] = lo, hi
        if intervals.deadline_text(job_def):
            # Headwater's own: when a run of the job last missed its `deliver.deadline`
            out["deadline_missed_at"] = self.store.deadlines_missed([job["id"]]).get(job["id"])
        if (job.get("settings") or {}).get("run_interval") is not None:
            # Headwater's own: where a debounced job's triggers go
            state = self.store.debounce_state(job["id"]) or {}
            out["debounce"] = {
                "last_fire_at": state.get("last_fire_at"),
                "next_fire_at": state.get("due_at"),
                "fire_in_flight": bool(state.get("in_flight")),
                "last_fire_run_id": state.get("last_run_id"),
            }
        return out

    def latest_runs(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The newest run of each job, with its pipeline runs, keyed by job id."""
        latest = self.store.latest_runs(job_ids)
        return {r["job_id"]: r for r in self.with_summaries(list(latest.values()))}

    def with_summaries(self, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The runs with their `pipeline_run_summaries`, read for all of them in one query
        (a run that never started has none to read)."""
        assert self.telemetry is not None
        wanted = [
            r["id"]
            for r in runs
            if "pipeline_run_summaries" not in r and r.get("started_at") is not None
        ]
        found = self.telemetry.summaries(wanted) if wanted else {}
        return [
            r
            if "pipeline_run_summaries" in r
            else {
                **r,
                "pipeline_run_summaries": [
                    ser.pipeline_run_summary(s) for s in found.get(r["id"], [])
                ],
            }
            for r in runs
        ]

    def detailed_run(
        self, run: dict[str, Any], job: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        (run,) = self.with_summaries([run])
        job = job or self.store.get_job(run["job_id"])
        assert job is not None
        version = self.store.get_job_version(run["job_version_id"])
        out = ser.detailed_run(run, job, version, self.base_url(), self.default_profile())
        # Headwater's own: which attempt the run is on, and how the earlier ones ended
        out["attempt"] = run.get("attempt") or 1
        out["attempts"] = (
            [
                {
                    "attempt": a["attempt"],
                    "status": a["status"],
                    "exit_code": a["exit_code"],
                    "reason": a["reason"],
                    "started_at": a["started_at"],
                    "finished_at": a["finished_at"],
                    "retry_at": a["retry_at"],
                }
                for a in self.store.attempts_of(run["id"])
            ]
            if run.get("retry_policy")
            else []
        )
        if job.get("job_type") == "dbt_cloud":
            # Headwater's own: the dbt Cloud run it started or watches, and its page
            watch = self.store.get_watch(run["id"]) or {}
            out["dbt_cloud"] = {"run_id": watch.get("dbt_run_id"), "job_run_url": watch.get("href")}
        return out
