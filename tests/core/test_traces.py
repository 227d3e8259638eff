"""Pipeline-run records from real dlt traces (captured from dlt 1.31 as it PUT them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from headwater.core.traces import TraceError, pipeline_run

HERE = Path(__file__).parent / "traces"


def load(name: str) -> dict[str, Any]:
    return json.loads((HERE / name).read_text())


def test_a_successful_run_of_the_demo_currencies_pipeline() -> None:
    run = pipeline_run(load("currencies_trace.json"))
    assert run["pipeline_name"] == "demo_currencies"
    assert run["transaction_id"] == "2e702c6ecd388930a3a48dd0b7bde895"
    assert run["status"] == "succeeded"
    assert (run["destination_name"], run["destination_type"], run["dataset_name"]) == (
        "duckdb",
        "dlt.destinations.duckdb",
        "raw",
    )
    # 6 currencies and 150 rates; dlt's own `_dlt_pipeline_state` row is not counted
    assert run["total_rows_extracted"] == run["total_rows_loaded"] == 156
    assert run["started_at"] == datetime(2026, 12, 1, 13, 27, 9, 340530, tzinfo=UTC)
    assert run["duration_ms"] == 634
    assert run["error_step"] is run["error_message"] is None
    assert run["is_empty_run"] is False and run["has_failed_load_jobs"] is False
    assert run["has_pending_packages"] is False and run["has_schema_migration"] is True
    assert run["dlt_version"] == "1.31.0"
    detail = run["detail"]
    tables = {t["table_name"]: t for t in detail["tables"]}
    assert set(tables) == {"currencies", "rates"}
    assert tables["rates"]["rows_loaded"] == 150 and tables["rates"]["write_disposition"] == "merge"
    assert tables["currencies"]["load_job_state"] == "completed"
    assert tables["currencies"]["file_format"] == "insert_values"
    (package,) = detail["load_packages"]
    assert package["load_status"] == "loaded" and package["schema_name"] == "exchange_rates"
    assert package["completed_job_count"] == package["job_count"] == 4
    assert {r["resource_name"] for r in detail["resources"]} >= {"currencies", "rates"}
    assert detail["extract_duration_ms"] is not None and detail["load_duration_ms"] is not None
    json.dumps(detail)  # stored in a JSON column as it is


def test_a_run_that_failed_in_extract() -> None:
    run = pipeline_run(load("failing_extract_trace.json"))
    assert run["pipeline_name"] == "failing_pipe"
    assert run["status"] == "failed"
    assert run["error_step"] == "extract"  # not `run`, which only wraps the failing step
    assert "source exploded" in run["error_message"]
    assert "ResourceExtractionError: In processing pipe `bad`" in run["detail"]["error_traceback"]
    assert run["destination_name"] is None and run["dataset_name"] is None
    assert run["total_rows_loaded"] == 0 and run["is_empty_run"] is True
    assert run["has_pending_packages"] is True


@pytest.mark.parametrize(
    "payload",
    [[], "trace", {}, {"pipeline_name": "p"}, {"transaction_id": "t"}, {"pipeline_name": 3}],
)
def test_a_payload_without_pipeline_name_and_transaction_is_refused(payload: Any) -> None:
    with pytest.raises(TraceError):
        pipeline_run(payload)


def test_a_trace_of_the_wrong_shape_still_gives_a_record() -> None:
    """The trace comes from job code: wrong types are skipped, never a crash."""
    run = pipeline_run(
        {
            "pipeline_name": "p\x00q" + "x" * 400,
            "transaction_id": "t",
            "started_at": "yesterday",
            "finished_at": 17,
            "execution_context": [],
            "steps": [
                "extract",
                {"step": "extract", "extract_info": {"table_metrics": [{"table_name": 5}]}},
                {
                    "step": "normalize",
                    "normalize_info": {"table_metrics": [{"table_name": "t", "items_count": 1e30}]},
                    "step_info": {"load_packages": [{"load_id": "1", "jobs": "none"}]},
                },
                {"step": "load", "load_info": {"job_metrics": [{"table_name": "t", "state": 1}]}},
            ],
        }
    )
    assert run["pipeline_name"].startswith("pq") and len(run["pipeline_name"]) == 300
    assert run["started_at"] is None and run["duration_ms"] is None
    assert run["total_rows_loaded"] == 2**63 - 1  # clamped to what a BIGINT holds
    assert run["status"] == "succeeded"
