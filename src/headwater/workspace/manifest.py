"""Reading a workspace's `__deployment__.py` with dlt's own manifest functions.

The module is imported in a child process (dlt's `_manifest_worker`), with the
workspace as its working directory, so a user's import error or endless import
cannot hurt the server, and `from dlt.hub import run` fails as it would for the
user even when this process has imported `dlt.hub.run`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from dlt._workspace.deployment.manifest import (
    generate_manifest_hash,
    hash_job_definition,
    validate_manifest,
)
from dlt._workspace.deployment.typing import TJobDefinition, TJobsDeploymentManifest

from headwater.core.errors import HeadwaterError

DEPLOYMENT_MODULE = "__deployment__"
MANIFEST_TIMEOUT_S = 60.0


class ManifestError(HeadwaterError):
    """The workspace's manifest could not be read; `detail` is dlt's message."""

    code = "invalid_manifest"
    status = 400

    def __init__(self, detail: str, error_type: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.error_type = error_type


def explain(error: str) -> str:
    """dlt's error, with what to do where dlt's own words do not say it."""
    if "job.is_matching_interval_fresh" in error and "not yet implemented" in error:
        return (
            f"{error}\n(dlt 1.31 refuses `is_matching_interval_fresh` freshness constraints"
            " in every runtime, Headwater included: declare `<upstream>.is_fresh` instead,"
            " which holds the job until the upstream's latest interval has completed)"
        )
    return error


@dataclass(frozen=True)
class LoadedManifest:
    manifest: dict[str, Any]
    warnings: list[str]
    hash: str

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return list(self.manifest["jobs"])


def _clean_env(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    # the workspace must win over anything on the caller's path
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workspace), env.get("PYTHONPATH", "")) if p)
    env["DLT_PROJECT_DIR"] = str(workspace)
    return env


def load_manifest(workspace: Path, timeout: float = MANIFEST_TIMEOUT_S) -> LoadedManifest:
    """Import `__deployment__.py` of `workspace` in a child process and validate it."""
    workspace = workspace.resolve()
    if not (workspace / f"{DEPLOYMENT_MODULE}.py").exists():
        raise ManifestError(
            f"no {DEPLOYMENT_MODULE}.py in {workspace}: a workspace declares its jobs there",
            "ManifestMissing",
        )
    cmd = [sys.executable, "-m", "dlt._workspace.deployment._manifest_worker", DEPLOYMENT_MODULE]
    try:
        proc = subprocess.run(
            cmd,
            cwd=workspace,
            env=_clean_env(workspace),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as ex:
        raise ManifestError(
            f"importing {DEPLOYMENT_MODULE}.py took longer than {timeout:.0f}s; "
            "does it run work at import time?",
            "ManifestTimeout",
        ) from ex
    return parse_worker_output(proc.stdout, proc.stderr, proc.returncode)


def parse_worker_output(stdout: str, stderr: str, returncode: int) -> LoadedManifest:
    """Read dlt's worker JSON ourselves: dlt's re-raise breaks on some error classes."""
    try:
        payload = json.loads(stdout.strip() or "null")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        tail = (stderr.strip() or stdout.strip())[-4000:]
        raise ManifestError(tail or f"manifest worker exited with code {returncode}")
    if "error" in payload:
        raise ManifestError(explain(str(payload["error"])), str(payload.get("error_type", "")))
    return from_manifest(payload["manifest"], list(payload.get("warnings", [])))


def as_dlt_manifest(manifest: dict[str, Any]) -> TJobsDeploymentManifest:
    """A manifest held as plain data (a remote deploy's body, a stored row) as dlt's type."""
    return cast(TJobsDeploymentManifest, manifest)


def from_manifest(manifest: dict[str, Any], warnings: list[str] | None = None) -> LoadedManifest:
    """Validate a manifest given as data (a remote deploy) and compute its hash."""
    try:
        result = validate_manifest(as_dlt_manifest(manifest), raise_on_error=True)
    except Exception as ex:  # dlt raises several validation classes
        raise ManifestError(str(ex), type(ex).__name__) from ex
    all_warnings = list(warnings or []) + list(getattr(result, "warnings", []) or [])
    return LoadedManifest(manifest, all_warnings, generate_manifest_hash(as_dlt_manifest(manifest)))


def job_definition_hash(job_def: dict[str, Any]) -> str:
    return hash_job_definition(cast(TJobDefinition, job_def))
