"""dbt artifacts of a run, kept with no change to the job's code: each run gets its own dbt
target folder (`DBT_TARGET_PATH`, honoured by dbt's CLI, `dbtRunner` and dlt's dbt helper
alike), and when the run ends its `run_results.json` and `manifest.json` are stored."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from headwater.core import dbt_results
from headwater.store.store import Store

log = logging.getLogger(__name__)


def dbt_folder(workspace: Path, run_id: str) -> Path:
    """Where a run's dbt writes its target and logs folders."""
    return workspace / ".headwater" / "runs" / run_id / "dbt"


def dbt_environment(workspace: Path, run_id: str) -> dict[str, str]:
    folder = dbt_folder(workspace, run_id)
    return {"DBT_TARGET_PATH": str(folder / "target"), "DBT_LOG_PATH": str(folder / "logs")}


def collect(store: Store, workspace: Path, run_id: str) -> str | None:
    """Store the run's dbt artifacts, if it made any, and remove its dbt folder. Answers
    the failed models and tests named (`core/dbt_results.failure_summary`), if any."""
    folder = dbt_folder(workspace, run_id)
    target = folder / "target"
    files: dict[str, bytes] = {}
    for name in dbt_results.ARTIFACT_NAMES:
        try:
            files[name] = (target / name).read_bytes()
        except OSError:
            continue
    summary: str | None = None
    try:
        if files:
            store.save_artifacts(run_id, files, "dbt_core")
        if dbt_results.RUN_RESULTS in files:
            parsed = json.loads(files[dbt_results.RUN_RESULTS])
            summary = dbt_results.failure_summary(dbt_results.node_results(parsed))
    except (ValueError, OSError) as ex:
        log.warning("run %s: its dbt artifacts could not be kept: %s", run_id, ex)
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    return summary
