"""What dbt's `run_results.json` says about a run, whichever dbt made it (dbt Core in a job,
or dbt Cloud): one row per model, test, seed or snapshot, and the failures named.

Pure: parsed JSON in, rows and a summary out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
"""Result statuses that mean a node failed (`warn` and `skipped` do not)."""
RUN_RESULTS = "run_results.json"
MANIFEST = "manifest.json"
ARTIFACT_NAMES = (RUN_RESULTS, MANIFEST)
"""The dbt artifacts Headwater keeps per run."""


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    resource_type: str
    status: str
    execution_time: float | None
    rows_affected: int | None
    failures: int | None
    """For tests: how many rows failed the test."""
    message: str | None

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "unique_id": self.unique_id,
            "resource_type": self.resource_type,
            "status": self.status,
            "execution_time": self.execution_time,
            "rows_affected": self.rows_affected,
            "failures": self.failures,
            "message": self.message,
        }


def node_results(run_results: dict[str, Any]) -> list[NodeResult]:
    """The rows of a `run_results.json`, in dbt's order; malformed entries are skipped."""
    rows: list[NodeResult] = []
    for item in run_results.get("results") or []:
        if not isinstance(item, dict) or not isinstance(item.get("unique_id"), str):
            continue
        unique_id: str = item["unique_id"]
        adapter = item.get("adapter_response") or {}
        rows_affected = adapter.get("rows_affected") if isinstance(adapter, dict) else None
        failures = item.get("failures")
        timing = item.get("execution_time")
        message = item.get("message")
        rows.append(
            NodeResult(
                unique_id=unique_id,
                resource_type=unique_id.split(".", 1)[0],
                status=str(item.get("status") or "unknown"),
                execution_time=float(timing) if isinstance(timing, int | float) else None,
                rows_affected=int(rows_affected) if isinstance(rows_affected, int) else None,
                failures=int(failures) if isinstance(failures, int) else None,
                message=str(message) if message is not None else None,
            )
        )
    return rows


def failure_summary(rows: list[NodeResult], limit: int = 5) -> str | None:
    """The failed nodes named for a run's failure reason, e.g. `dbt: test
    not_null_orders_id fail (3 failing rows); model orders error: Division by zero`."""
    failed = [r for r in rows if r.failed]
    if not failed:
        return None
    parts = []
    for r in failed[:limit]:
        # `test.<project>.<name>.<hash>`, `model.<project>.<name>`: the name people gave it
        segments = r.unique_id.split(".")
        name = segments[2] if len(segments) >= 3 else r.unique_id
        part = f"{r.resource_type} {name} {r.status}"
        if r.resource_type == "test" and r.failures:
            part += f" ({r.failures} failing rows)"
        elif r.message:
            part += f": {first_line(r.message)}"
        parts.append(part)
    more = f"; and {len(failed) - limit} more" if len(failed) > limit else ""
    return "dbt: " + "; ".join(parts) + more


def first_line(text: str, width: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def counts(rows: list[NodeResult]) -> dict[str, int]:
    """How many nodes ended in each status: `{"success": 4, "pass": 6, "fail": 1}`."""
    out: dict[str, int] = {}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    return out
