"""dbt's run_results.json read into rows and a failure summary (a real file from a dbt-duckdb
build of the demo's project with one failing test, and the models it skipped)."""

from __future__ import annotations

import json
from pathlib import Path

from headwater.core.dbt_results import counts, failure_summary, node_results

FAILED = json.loads((Path(__file__).parent / "dbt" / "run_results_failed.json").read_text())


def test_every_node_becomes_a_row_in_dbt_order() -> None:
    rows = node_results(FAILED)
    assert len(rows) == 12
    first = rows[0]
    assert first.unique_id == "model.demo_transform.stg_currencies"
    assert first.resource_type == "model" and first.status == "success"
    assert first.execution_time is not None and first.execution_time > 0


def test_a_failing_test_is_named_with_its_failing_rows() -> None:
    rows = node_results(FAILED)
    assert counts(rows) == {"success": 3, "pass": 4, "fail": 1, "skipped": 4}
    assert failure_summary(rows) == (
        "dbt: test accepted_values_stg_products_currency__EUR fail (5 failing rows)"
    )


def test_nothing_failed_nothing_to_say() -> None:
    passed = {"results": [r for r in FAILED["results"] if r["status"] != "fail"]}
    assert failure_summary(node_results(passed)) is None


def test_malformed_entries_are_skipped() -> None:
    rows = node_results({"results": [None, {"status": "error"}, {"unique_id": "model.p.m"}]})
    assert [(r.unique_id, r.status) for r in rows] == [("model.p.m", "unknown")]
    errored = node_results(
        {"results": [{"unique_id": "model.p.m", "status": "error", "message": "boom\nmore"}]}
    )
    assert failure_summary(errored) == "dbt: model m error: boom"
