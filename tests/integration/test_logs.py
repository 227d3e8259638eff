"""Logs of a real `headwater up`: long logs in pages, the cap, secrets masked, the reason a
run failed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from headwater.store.db import make_engine, sqlite_url
from headwater.store.store import LogLine, Store
from tests.integration.harness import WHERE, RemoteServer, Server, served

pytestmark = pytest.mark.integration

CAP = 500
SECRET = "s3cr3t-Ünïcode value/&?"

WORKSPACE = """
import base64
import os
from urllib.parse import quote

import dlt
import dlt.hub.run as run


@run.job
def chatty(lines: int = dlt.config.value):
    for i in range(int(lines)):
        print(f"line {i}")


@run.job
def leaky():
    value = os.environ["LEAKY_TOKEN"]
    print(f"raw={value}")
    print(f"b64={base64.b64encode(value.encode()).decode()}")
    print(f"url={quote(value, safe='')}")


@run.job
def raiser():
    print("about to fail")
    raise ValueError("boom")


__all__ = ["chatty", "leaky", "raiser"]
"""


@pytest.fixture(scope="module", params=WHERE)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("logs") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    cap = ("--max-log-lines", str(CAP))
    # on remote workers the cap is the worker's own setting
    kw = {"worker_args": cap} if request.param == "remote" else {}
    with served(ws, request.param, *cap, **kw) as srv:
        yield srv


def logs_path(srv: Server, run_id: str) -> str:
    return f"/logs/v1/workspaces/{srv.ws_id}/job-runs/{run_id}/logs"


def test_a_run_printing_past_the_cap_completes_with_a_truncation_marker(server: Server) -> None:
    run = server.wait_run(server.start_run("chatty", parameters={"lines": CAP * 3})["id"])
    assert run["status"] == "completed", run
    user = server.user_output(run["id"])
    assert user[:CAP] == [f"line {i}" for i in range(CAP)]
    assert len(user) == CAP + 1
    assert user[-1].startswith("[headwater] log truncated: this run printed more than its cap")
    final = server.logs(run["id"])[-1]
    assert final["source"] == "runner"
    assert f"{CAP * 2:,} lines over the log cap were not stored" in final["content"]


def rss_kb(pid: int, field: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def fill_log(store: Store, run_id: str, total: int) -> int:
    """Append `total` lines of ~210 characters to the run's log; answers its line count."""
    first = store.next_line_num(run_id)
    now = datetime.now(UTC)
    chunk = 20_000
    for start in range(0, total, chunk):
        lines = [
            LogLine(f"{i:07d} " + "x" * 200, "user", "run", "stdout", now)
            for i in range(start, min(total, start + chunk))
        ]
        store.append_logs({run_id: (first + start, lines)})
    return first + total


def test_a_big_log_is_answered_whole_in_pages_with_flat_memory(server: Server) -> None:
    run = server.wait_run(server.start_run("chatty", parameters={"lines": 3})["id"])
    small = server.wait_run(server.start_run("chatty", parameters={"lines": 3})["id"])
    database = sqlite_url(server.workspace / ".headwater" / "headwater.db")
    if isinstance(server, RemoteServer):
        database = server.database
    store = Store(make_engine(database))
    total = 300_000
    expected = fill_log(store, run["id"], total)
    pages = fill_log(store, small["id"], 25_000)  # 3 pages of the CLI's
    store.engine.dispose()

    assert server.proc is not None
    pid = server.proc.pid
    before = rss_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from now
    count = last = 0
    with server.http.stream("GET", logs_path(server, run["id"]), timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        for text in resp.iter_lines():
            if text.strip():
                line = json.loads(text)
                assert line["line_num"] == count
                count, last = count + 1, line["line_num"]
    grown_mb = (rss_kb(pid, "VmHWM") - before) / 1024
    print(f"server RSS {before / 1024:.0f} MB before, peak grew by {grown_mb:.0f} MB")
    assert count == expected and last == expected - 1
    # the whole log is ~65 MB of JSON; the server holds one page of it at a time
    assert grown_mb < 60

    # a cursor: the lines after a line number, at most `limit`
    page = server.http.get(logs_path(server, run["id"]), params={"after": 99_999, "limit": 3})
    assert [json.loads(x)["line_num"] for x in page.text.splitlines()] == [
        100_000,
        100_001,
        100_002,
    ]
    bad = server.http.get(logs_path(server, run["id"]), params={"limit": 0})
    assert 400 <= bad.status_code < 500

    # the CLI reads a log with that cursor, page after page
    out = server.cli("run", "logs", small["id"], timeout=300).stdout
    assert out.count(" xxxxxxxxxx") == 25_000
    assert f"{pages:>4} " in out


def test_secret_values_are_masked_in_the_api_and_the_database(server: Server) -> None:
    server.http.patch(
        f"{server.w}/variables",
        json={
            "profile": None,
            "upserts": [{"name": "LEAKY_TOKEN", "type": "secret", "value": SECRET}],
        },
    ).raise_for_status()
    run = server.wait_run(server.start_run("leaky")["id"])
    assert run["status"] == "completed", server.logs(run["id"])
    assert server.user_output(run["id"]) == ["raw=***", "b64=***", "url=***"]

    forms = [
        SECRET,
        base64.b64encode(SECRET.encode()).decode().rstrip("="),
        quote(SECRET, safe=""),
    ]
    answer = server.http.get(logs_path(server, run["id"])).text
    stream = server.http.get(
        f"/logs/v1/workspaces/{server.ws_id}/job-runs/{run['id']}/log-stream"
    ).text
    home = server.workspace / ".headwater"
    files = [home / name for name in ("headwater.db", "headwater.db-wal", "headwater.db-shm")]
    stored = b"".join(p.read_bytes() for p in files if p.exists())
    for form in forms:
        # the run page reads the same stored lines
        assert form not in answer and form not in stream
        assert form.encode() not in stored
    for path in files:
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_failed_runs_reason_names_the_exception(server: Server) -> None:
    run = server.wait_run(server.start_run("raiser")["id"])
    assert run["status"] == "failed"
    assert run["reason"] == "ValueError: boom (exit code 1)"
    shown = server.cli("run", "show", run["id"]).stdout
    assert "ValueError: boom (exit code 1)" in shown
