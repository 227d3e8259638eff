"""Intervals on a real `headwater up` with real dlt pipelines and DuckDB: an interval job
whose incremental cursor takes each run's interval loads exactly that interval's rows; a
backfill of 30 intervals survives a SIGKILL of the server without a gap or a repeat; the
CLI's backfill, inspect and dry run. Each on `up`'s own worker and on remote workers
(`[remote]`: PostgreSQL, RabbitMQ), where the SIGKILL leaves the worker's run going."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.integration.harness import WHERE, Server, served

pytestmark = pytest.mark.integration

WORKSPACE = '''
import time
from datetime import datetime, timedelta, timezone

import dlt
import dlt.hub.run as run
from dlt.hub.run import trigger

ORIGIN = datetime.fromisoformat("{origin}")
# the warehouse: one place whichever worker (and run folder) loads into it
DATA = "{data}"


def rows(step):
    """One row every `step` minutes from ORIGIN for 60 days, as a source would answer."""
    t = ORIGIN
    while t < ORIGIN + timedelta(days=60):
        yield {{"id": int(t.timestamp()), "ts": t}}
        t += timedelta(minutes=step)


@dlt.resource(primary_key="id", write_disposition="merge")
def daily_events(ts: dlt.sources.incremental[datetime] = dlt.sources.incremental("ts")):
    yield from rows(60)


@dlt.resource(primary_key="id", write_disposition="merge")
def hourly_events(ts: dlt.sources.incremental[datetime] = dlt.sources.incremental("ts")):
    time.sleep(0.3)
    yield from rows(15)


@run.job(
    trigger=trigger.schedule("0 0 * * *"),
    interval={{"start": "{daily_start}"}},
    incremental_mode="interval",
    require={{"timezone": "Europe/Berlin"}},
)
def daily():
    p = dlt.pipeline("daily", destination=dlt.destinations.duckdb(DATA + "/warehouse.duckdb"))
    print(p.run(daily_events()))


@run.job(trigger=trigger.schedule("0 * * * *"), incremental_mode="interval")
def hourly():
    p = dlt.pipeline("hourly", destination=dlt.destinations.duckdb(DATA + "/hourly.duckdb"))
    print(p.run(hourly_events()))


__all__ = ["daily", "hourly"]
'''


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def data_dir(srv: Server) -> Path:
    return srv.workspace.parent / "warehouse"


@pytest.fixture(scope="module", params=WHERE)
def srv(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("intervals") / "ws"
    ws.mkdir()
    (ws.parent / "warehouse").mkdir()
    now = datetime.now(UTC)
    origin = floor_hour(now) - timedelta(days=10)
    daily_start = (now - timedelta(days=3)).date().isoformat()
    (ws / "__deployment__.py").write_text(
        WORKSPACE.format(
            origin=origin.isoformat(), daily_start=daily_start, data=ws.parent / "warehouse"
        )
    )
    with served(ws, request.param) as server:
        yield server


def rows_by(path: Path, table: str, bucket: str) -> Counter[datetime]:
    with duckdb.connect(str(path), read_only=True) as con:
        got = con.execute(
            f"SELECT date_trunc('{bucket}', ts AT TIME ZONE 'UTC'), count(*)"
            f" FROM {table}.{table.removesuffix('_dataset')}_events GROUP BY 1"
        ).fetchall()
    return Counter({k: v for k, v in got})


def test_an_interval_job_catches_up_and_loads_exactly_each_intervals_rows(srv: Server) -> None:
    job = srv.jobs()["daily"]
    # the declared window is answered, snapped to the job's cron in its time zone
    assert job["interval_start"] is not None
    report = srv.get(f"{srv.w}/jobs/{job['id']}/intervals")
    open_count = report["open"]  # not completed yet, running ones included
    assert report["is_interval_job"] and open_count >= 3
    srv.wait_for(
        lambda: (
            srv.get(f"{srv.w}/jobs/{job['id']}/intervals")["open"] == 0
            and not srv.get(f"{srv.w}/jobs/{job['id']}/intervals")["running"]
        ),
        180,
        "the daily job to catch up",
    )
    runs = sorted(srv.runs("daily"), key=lambda r: r["number"])
    assert all(r["status"] == "completed" for r in runs), runs
    spans = [(r["interval_start"], r["interval_end"]) for r in runs]
    assert len(spans) == open_count and len(set(spans)) == len(spans)
    for (_s, e), (s2, _e) in zip(spans, spans[1:], strict=False):
        assert e == s2  # in order, no gap
    # one row an hour: each run loaded its Berlin day's rows and nothing else
    with duckdb.connect(str(data_dir(srv) / "warehouse.duckdb"), read_only=True) as con:
        for s, e in spans:
            start, end = datetime.fromisoformat(s), datetime.fromisoformat(e)
            (n,) = con.execute(
                "SELECT count(*) FROM daily_dataset.daily_events WHERE ts >= ? AND ts < ?",
                [start, end],
            ).fetchone()
            assert n == (end - start) / timedelta(hours=1)
        (total,) = con.execute("SELECT count(*) FROM daily_dataset.daily_events").fetchone()
    first, last = datetime.fromisoformat(spans[0][0]), datetime.fromisoformat(spans[-1][1])
    assert total == (last - first) / timedelta(hours=1)
    report = srv.get(f"{srv.w}/jobs/{job['id']}/intervals")
    assert report["watermark"] == spans[-1][1].replace("Z", "+00:00") or report["watermark"]
    # covered: a manual trigger has nothing left to run
    answer = srv.trigger("daily")
    assert answer["skipped"][0]["status"] == "skipped_already_covered"
    shown = srv.cli("job", "inspect", "daily").stdout
    assert "watermark" in shown and "sequential" in shown


def test_a_backfill_of_30_intervals_survives_a_sigkill_without_gap_or_repeat(
    srv: Server,
) -> None:
    job_id = srv.job_id("hourly")
    end = floor_hour(datetime.now(UTC)) - timedelta(hours=2)
    start = end - timedelta(hours=30)
    body = {"start": start.isoformat(), "end": end.isoformat()}
    dry = srv.post(f"{srv.w}/jobs/{job_id}/-backfill", json={**body, "dry_run": True})
    assert len(dry["intervals"]) == 30 and srv.runs("hourly") == []
    backfill = srv.post(f"{srv.w}/jobs/{job_id}/-backfill", json=body)
    number = backfill["number"]
    srv.wait_for(
        lambda: srv.get(f"{srv.w}/backfills/{number}")["counts"].get("completed", 0) >= 8,
        120,
        "8 intervals",
    )
    srv.kill()
    srv.start()
    done = srv.wait_for(
        lambda: (b := srv.get(f"{srv.w}/backfills/{number}"))["status"] != "running" and b,
        240,
        "the backfill to finish",
    )
    assert done["status"] == "completed", done
    assert done["counts"] == {"completed": 30}
    runs = srv.runs("hourly")
    # (an hourly tick may have run the hour just gone by: outside the range)
    completed = Counter(
        (r["interval_start"], r["interval_end"])
        for r in runs
        if r["status"] == "completed" and datetime.fromisoformat(r["interval_end"]) <= end
    )
    assert len(completed) == 30 and set(completed.values()) == {1}  # none twice
    per_hour = rows_by(data_dir(srv) / "hourly.duckdb", "hourly_dataset", "hour")
    expected = {start.replace(tzinfo=None) + timedelta(hours=i): 4 for i in range(30)}
    got = {k.replace(tzinfo=None): v for k, v in per_hour.items()}
    assert {k: v for k, v in got.items() if k < end.replace(tzinfo=None)} == expected
    # a second backfill of the range finds every interval covered
    again = srv.cli(
        "job", "backfill", "hourly", "--start", start.isoformat(), "--end", end.isoformat()
    )
    assert "30 skipped_already_covered" in again.stdout, again.stdout
    listed = srv.cli("backfill", "ls").stdout
    assert "hourly" in listed and "completed" in listed


def test_ctrl_c_stops_watching_a_backfill_not_the_backfill(srv: Server) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    end = floor_hour(datetime.now(UTC)) - timedelta(hours=40)
    start = end - timedelta(hours=6)
    env = {**os.environ, "HEADWATER_URL": srv.url, "HEADWATER_WORKSPACE_ID": srv.ws_id}
    cli = subprocess.Popen(
        [sys.executable, "-m", "headwater.cli.main", "job", "backfill", "hourly",
         "--start", start.isoformat(), "--end", end.isoformat()],
        cwd=srv.workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    number = srv.wait_for(
        lambda: [b["number"] for b in srv.get(f"{srv.w}/backfills")["items"]
                 if b["start"].startswith(start.isoformat()[:13])],
        30, "the backfill",
    )[0]  # fmt: skip
    time.sleep(0.5)  # the command is watching: its progress bar is up
    cli.send_signal(signal.SIGINT)
    out, _ = cli.communicate(timeout=30)
    assert cli.returncode == 130, out
    assert f"backfill {number} goes on in the server" in out
    done = srv.wait_for(
        lambda: (b := srv.get(f"{srv.w}/backfills/{number}"))["status"] != "running" and b,
        120,
        "the backfill to finish without its watcher",
    )
    assert done["status"] == "completed" and done["counts"] == {"completed": 6}
    shown = srv.cli("backfill", "show", str(number)).stdout
    assert "completed" in shown and "6 completed" in shown
