"""Overlap modes, locks and debounce of headwater.toml on a real `headwater up`: two real dlt
jobs writing one DuckDB file never overlap under a lock, `replace` cancels the run it
replaces, and a debounced job's pending fire survives a SIGKILL of the server. Each test runs
on `up`'s own worker and on remote workers (`[remote]`: PostgreSQL, RabbitMQ, two workers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.integration.harness import WHERE, Server, run_dlthub, served

pytestmark = pytest.mark.integration

WORKSPACE = """
import os
import time

import dlt
import dlt.hub.run as run


def _load(table):
    path = os.path.join(os.getcwd(), "warehouse.duckdb")
    pipeline = dlt.pipeline(
        f"ld_{table}", destination=dlt.destinations.duckdb(path), dataset_name="raw"
    )
    pipeline.run([{"n": i} for i in range(50)], table_name=table)


@run.job(expose={"tags": ["ingest"]})
def orders():
    _load("orders")


@run.job(expose={"tags": ["ingest"]})
def customers():
    _load("customers")


# a cancelled run gets a second, not the default 30 s, to stop
@run.job(execute={"timeout": {"timeout": 3600, "grace_period": 1}})
def slow():
    print("slow started", flush=True)
    time.sleep(60)


@run.job(execute={"concurrency": None})
def tick():
    print("tick")


__all__ = ["orders", "customers", "slow", "tick"]
"""

CONFIG = """
[jobs."tag:ingest"]
locks = ["warehouse"]

[jobs.slow]
overlap = "replace"

[jobs.tick]
run_interval = "4s"
trigger_on_start = false
"""


@pytest.fixture(scope="module", params=WHERE)
def srv(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("overlap") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    (ws / "headwater.toml").write_text(CONFIG)
    with served(ws, request.param, workers=2) as server:
        yield server


def finished(srv: Server, run: dict) -> dict:
    return srv.wait_run(run["id"], timeout=90)


def test_two_loads_of_one_duckdb_file_started_together_never_overlap(srv: Server) -> None:
    answer = srv.post(f"{srv.w}/jobs/-trigger", json={"selectors": ["tag:ingest"]})
    runs = [item["job_run"] for item in answer["succeeded"]]
    assert len(runs) == 2
    # one of them waits for the lock, naming it and its holder
    waiting = srv.wait_for(
        lambda: next(
            (
                r
                for r in (srv.run(x["id"]) for x in runs)
                if (r.get("reason") or "").startswith("waiting for lock 'warehouse'")
            ),
            None,
        ),
        30,
        "a run waiting for the lock",
    )
    assert "held by run 1 of jobs.__deployment__." in waiting["reason"]
    done = [finished(srv, r) for r in runs]
    assert [r["status"] for r in done] == ["completed", "completed"], done
    first, second = sorted(done, key=lambda r: r["started_at"])
    assert datetime.fromisoformat(first["finished_at"]) <= datetime.fromisoformat(
        second["started_at"]
    )


def test_replace_cancels_the_running_run_and_starts_the_new_one(srv: Server) -> None:
    first = srv.start_run("slow")
    srv.wait_for(lambda: "slow started" in "".join(srv.user_output(first["id"])), 30, "slow")
    second = srv.start_run("slow")
    ended = srv.wait_run(first["id"], timeout=60)
    assert ended["status"] == "cancelled"
    srv.wait_run(second["id"], timeout=30, states={"running"})
    srv.post(f"{srv.w}/job-runs/{second['id']}/-cancel")
    srv.wait_run(second["id"], timeout=60)


def test_a_debounced_job_folds_triggers_and_its_pending_fire_survives_sigkill(
    srv: Server,
) -> None:
    first = srv.trigger("tick")["succeeded"][0]
    assert first["job_run"] is not None  # the first trigger fires at once
    finished(srv, first["job_run"])
    folded = srv.trigger("tick")["succeeded"][0]
    assert folded["job_run"] is None
    assert folded["reasons"][0].startswith("debounced: folded into the fire at ")
    # the official client parses the answer
    client = srv.workspace.parent / "client"
    (client / ".dlt").mkdir(parents=True, exist_ok=True)
    (client / ".dlt" / ".workspace").touch()
    triggered = run_dlthub(srv, srv.key, client, client, "job", "trigger", "tick")
    assert triggered.returncode == 0, triggered.stdout + triggered.stderr
    print(triggered.stdout)
    srv.kill()  # SIGKILL with the fire pending
    srv.start()
    srv.wait_for(lambda: len(srv.runs("tick")) == 2, 30, "the pending fire")
    runs = srv.runs("tick")
    finished(srv, runs[0])
    assert runs[0]["trigger"] == "manual:jobs.__deployment__.tick"
    srv.wait_for(lambda: srv.runs("tick")[0]["status"] == "completed", 30, "completed")
    assert len(srv.runs("tick")) == 2
