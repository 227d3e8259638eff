"""Run telemetry in the store, the same on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from headwater.core.traces import TraceError
from headwater.store import telemetry
from headwater.store.store import Store
from headwater.store.telemetry import (
    PipelineRunFilter,
    StatsQuery,
    TelemetryStore,
    TooManyPayloads,
)
from tests.store.test_store import add_jobs, job_spec, run_request, to_running

TRACES = Path(__file__).parents[1] / "core" / "traces"
STARTED = datetime(2026, 12, 1, 13, 27, 9, 340530, tzinfo=UTC)  # in currencies_trace.json


def trace(name: str = "currencies_trace.json", **changes: Any) -> dict[str, Any]:
    data = json.loads((TRACES / name).read_text())
    data.update(changes)
    return data


def new_run(store: Store, ws: str, ref: str = "jobs.m.a", **kw: Any) -> dict[str, Any]:
    job = add_jobs(store, ws, job_spec(ref))[ref]
    result = store.create_run(run_request(job, **kw), now=datetime.now(UTC))
    assert result.run is not None
    to_running(store, result.run["id"])
    run = store.get_run(result.run["id"])
    assert run is not None
    return run


@pytest.fixture
def ws(store: Store) -> str:
    return str(store.ensure_workspace("/ws", "ws")["id"])


@pytest.fixture
def tele(store: Store) -> TelemetryStore:
    return TelemetryStore(store.engine)


def window(**kw: Any) -> PipelineRunFilter:
    return PipelineRunFilter(
        start=STARTED - timedelta(days=1), end=STARTED + timedelta(days=1), **kw
    )


def test_a_trace_becomes_a_pipeline_run_and_is_kept_as_it_came(
    store: Store, ws: str, tele: TelemetryStore
) -> None:
    run = new_run(store, ws)
    pr = tele.record(run, "trace", trace(), 24_633)
    assert pr is not None
    assert pr["run_id"] == run["id"] and pr["pipeline_name"] == "demo_currencies"
    assert pr["status"] == "succeeded" and pr["total_rows_loaded"] == 156
    assert pr["started_at"] == STARTED
    assert pr["detail"]["tables"][0]["table_name"] == "currencies"
    stored = tele.payload(pr["trace_id"])
    assert stored is not None and stored["payload"] == trace() and stored["size_bytes"] == 24_633
    assert tele.get_pipeline_run(pr["id"]) == pr


def test_the_same_transaction_sent_again_replaces_its_pipeline_run(
    store: Store, ws: str, tele: TelemetryStore
) -> None:
    run = new_run(store, ws)
    first = tele.record(run, "trace", trace(), 1)
    failed = trace("failing_extract_trace.json", transaction_id=trace()["transaction_id"])
    failed["pipeline_name"] = "demo_currencies"
    again = tele.record(run, "trace", failed, 1)
    assert first is not None and again is not None
    assert again["id"] == first["id"] and again["status"] == "failed"
    assert again["trace_id"] != first["trace_id"]
    assert [s["status"] for s in tele.summaries([run["id"]])[run["id"]]] == ["failed"]


def test_summaries_of_many_runs_in_one_call(store: Store, ws: str, tele: TelemetryStore) -> None:
    a, b = new_run(store, ws, "jobs.m.a"), new_run(store, ws, "jobs.m.b")
    tele.record(a, "trace", trace(), 1)
    later = (STARTED + timedelta(minutes=1)).isoformat()
    tele.record(a, "trace", trace(transaction_id="t2", pipeline_name="second", started_at=later), 1)
    found = tele.summaries([a["id"], b["id"], a["id"]])
    assert [s["pipeline_name"] for s in found[a["id"]]] == ["demo_currencies", "second"]
    assert found[b["id"]] == []
    assert tele.summaries([]) == {}


def test_state_keeps_the_newest_per_pipeline(store: Store, ws: str, tele: TelemetryStore) -> None:
    run = new_run(store, ws)
    assert tele.record(run, "state", {"pipeline_name": "p", "schemas": [1]}, 1) is None
    tele.record(run, "state", {"pipeline_name": "p", "schemas": [2]}, 1)
    tele.record(run, "state", {"pipeline_name": "q", "schemas": [3]}, 1)
    states = tele.payloads(run["id"], "state")
    assert sorted((s["pipeline_name"], s["payload"]["schemas"]) for s in states) == [
        ("p", [2]),
        ("q", [3]),
    ]


def test_the_newest_job_result_is_the_run_s(store: Store, ws: str, tele: TelemetryStore) -> None:
    run = new_run(store, ws)
    assert tele.job_result(run["id"]) is None
    tele.record(run, "job_result", {"type": "job.a", "engine_version": 1, "result": 1}, 1)
    tele.record(run, "job_result", {"type": "job.a", "engine_version": 1, "result": 2}, 1)
    row = tele.job_result(run["id"])
    assert row is not None and row["payload"]["result"] == 2
    assert tele.watermark(ws) == row["received_at"]
    assert tele.watermark("elsewhere") is None


def test_a_trace_without_its_names_stores_nothing(
    store: Store, ws: str, tele: TelemetryStore
) -> None:
    run = new_run(store, ws)
    with pytest.raises(TraceError):
        tele.record(run, "trace", {"steps": []}, 1)
    assert tele.payloads(run["id"]) == []


def test_a_run_keeps_a_bounded_number_of_payloads(
    store: Store, ws: str, tele: TelemetryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "MAX_PAYLOADS_PER_RUN", 2)
    run = new_run(store, ws)
    tele.record(run, "job_result", {"type": "job.a"}, 1)
    tele.record(run, "trace", trace(), 1)
    with pytest.raises(TooManyPayloads):
        tele.record(run, "trace", trace(transaction_id="t2"), 1)
    assert len(tele.payloads(run["id"])) == 2


def test_list_filters_sorts_and_pages(store: Store, ws: str, tele: TelemetryStore) -> None:
    a, b = new_run(store, ws, "jobs.m.a"), new_run(store, ws, "jobs.m.b", triggered_by="key-1")
    tele.record(a, "trace", trace(), 1)
    failing = trace("failing_extract_trace.json")
    failing["started_at"] = (STARTED + timedelta(hours=1)).isoformat()
    tele.record(b, "trace", failing, 1)
    old = trace(transaction_id="old", started_at=(STARTED - timedelta(days=3)).isoformat())
    tele.record(a, "trace", old, 1)

    def names(f: PipelineRunFilter, limit: int = 100, offset: int = 0) -> tuple[list[str], int]:
        rows, total = tele.list_pipeline_runs(ws, f, limit=limit, offset=offset)
        return [r["pipeline_name"] for r in rows], total

    assert names(window()) == (["failing_pipe", "demo_currencies"], 2)  # newest first
    assert names(window(sort=[("started_at", "asc")])) == (["demo_currencies", "failing_pipe"], 2)
    assert names(window(), limit=1, offset=1) == (["demo_currencies"], 2)
    assert names(window(statuses=["failed"]))[0] == ["failing_pipe"]
    assert names(window(pipeline_names=["demo_currencies"]))[0] == ["demo_currencies"]
    assert names(window(run_ids=[b["id"]]))[0] == ["failing_pipe"]
    assert names(window(dataset_names=["raw"], destination_names=["duckdb"]))[0] == [
        "demo_currencies"
    ]
    assert names(window(is_empty_run=True))[0] == ["failing_pipe"]
    assert names(window(q="CURR"))[0] == ["demo_currencies"]
    assert names(window(q="%"))[0] == []  # a literal %, not a wildcard
    assert names(window(triggered_by="key-1"))[0] == ["failing_pipe"]
    assert names(window(sort=[("total_rows_loaded", "desc")]))[0][0] == "demo_currencies"
    everything = copy.copy(window())
    everything.start = STARTED - timedelta(days=7)
    assert names(everything)[1] == 3
    assert tele.list_pipeline_runs("elsewhere", window(), limit=10, offset=0) == ([], 0)


def python_stats(rows: list[dict[str, Any]], q: StatsQuery) -> list[dict[str, Any]]:
    """The stats as Headwater grouped them in Python before the store's one GROUP BY: the
    reference the SQL must answer the same as."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["started_at"], r["id"])):
        if row[q.by] is not None:
            groups.setdefault(row[q.by], []).append(row)
    out = []
    for key, runs in groups.items():
        latest, total = runs[-1], len(runs)
        succeeded = sum(r["status"] == "succeeded" for r in runs)
        durations = [r["duration_ms"] for r in runs if r["duration_ms"] is not None]
        out.append(
            {
                "group_key": key,
                "total_pipeline_run_count": total,
                "succeeded_pipeline_run_count": succeeded,
                "success_ratio": succeeded / total,
                "total_rows_loaded": sum(r["total_rows_loaded"] or 0 for r in runs),
                "total_bytes_loaded": sum(r["total_bytes_loaded"] or 0 for r in runs),
                "average_duration_ms": round(sum(durations) / len(durations))
                if durations
                else None,
                "latest_destination_name": latest["destination_name"],
                "latest_pipeline_run_at": latest["started_at"],
                "latest_status": latest["status"],
                "total_rows_extracted": sum(r["total_rows_extracted"] or 0 for r in runs),
                "total_duration_ms": sum(durations),
                "latest_dataset_name": latest["dataset_name"],
                "distinct_pipeline_count": len({r["pipeline_name"] for r in runs}),
                "schema_migration_count": sum(bool(r["has_schema_migration"]) for r in runs),
                "latest_pipeline_name": latest["pipeline_name"],
                "latest_pipeline_run_id": latest["id"],
            }
        )
    out = [
        x
        for x in out
        if (not q.latest_statuses or x["latest_status"] in q.latest_statuses)
        and (
            not q.latest_destination_names
            or x["latest_destination_name"] in q.latest_destination_names
        )
    ]
    for key, direction in reversed(q.sort):
        k = "group_key" if key == q.by else key
        desc = direction == "desc"
        out.sort(key=lambda x, k=k, d=desc: ((x[k] is None) != d, x[k]), reverse=desc)
    return out


def test_stats_group_sort_and_page_as_python_did(
    store: Store, ws: str, tele: TelemetryStore
) -> None:
    runs = [new_run(store, ws, f"jobs.m.j{i}") for i in range(3)]
    names = ["alpha", "Beta", "beta", "gamma", "ümlaut", "_x"]
    rows = []
    for i in range(60):
        started = STARTED + timedelta(minutes=i % 17)  # ties on started_at across groups
        duration = None if i % 5 == 0 else [1, 2, 3, 10, 15][i % 4] * (i % 3 + 1)
        rows.append(
            {
                "id": f"{(i * 7919) % 1000:08d}-0000-0000-0000-000000000000",
                "workspace_id": ws,
                "run_id": runs[i % 3]["id"],
                "trace_id": "t",
                "transaction_id": f"tx{i}",
                "pipeline_name": names[i % len(names)],
                "status": "failed" if i % 4 == 1 else "succeeded",
                "destination_name": [None, "duckdb", "postgres"][i % 3],
                "destination_type": None,
                "dataset_name": [None, "raw", "Raw", "staging"][i % 4],
                "started_at": started,
                "finished_at": None,
                "duration_ms": duration,
                "total_rows_extracted": i * 3,
                "total_rows_loaded": (i * 37) % 11,
                "total_bytes_loaded": i * 100,
                "is_empty_run": False,
                "has_failed_load_jobs": False,
                "has_pending_packages": False,
                "has_schema_migration": [None, True, False][i % 3],
                "error_step": None,
                "error_message": None,
                "dlt_version": None,
                "detail": {},
                "created_at": started,
                "updated_at": started,
            }
        )
    for i, (name, duration) in enumerate(
        [("half", 2), ("half", 3), ("half_odd", 3), ("half_odd", 4), ("third", 1), ("third", 0)]
    ):
        # means of 2.5, 3.5 and 0.5: Python rounds half to even
        rows.append({**rows[i], "id": f"h{i}", "transaction_id": f"h{i}", "pipeline_name": name})
        rows[-1]["duration_ms"] = duration
    with store.engine.begin() as conn:
        conn.execute(telemetry.PR.insert(), rows)
    everything, _ = tele.list_pipeline_runs(ws, window(), limit=1000, offset=0)
    sorts: list[list[tuple[str, str]]] = [[("latest_pipeline_run_at", "desc")]]
    for key in (*telemetry.STATS_SORTABLE, "by"):
        sorts += [[(key, "asc")], [(key, "desc")]]
    sorts += [[("success_ratio", "desc"), ("average_duration_ms", "asc")]]
    for by in ("pipeline_name", "dataset_name"):
        for sort in sorts:
            for latest in (
                {},
                {"latest_statuses": ["failed"]},
                {"latest_destination_names": ["duckdb"]},
            ):
                q = StatsQuery(by=by, sort=[(by if k == "by" else k, d) for k, d in sort], **latest)
                expected = python_stats(everything, q)
                got, total = tele.stats(ws, window(), q, limit=1000, offset=0)
                assert total == len(expected)
                drop = ("first_at", "first_id")
                assert [{k: v for k, v in g.items() if k not in drop} for g in got] == expected, (
                    by,
                    sort,
                    latest,
                )
                page, total = tele.stats(ws, window(), q, limit=2, offset=1)
                assert [x["group_key"] for x in page] == [x["group_key"] for x in expected[1:3]]
    assert tele.stats("elsewhere", window(), StatsQuery(by="pipeline_name"), limit=9, offset=0) == (
        [],
        0,
    )
