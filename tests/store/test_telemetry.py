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
from headwater.store.telemetry import PipelineRunFilter, TelemetryStore, TooManyPayloads
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
