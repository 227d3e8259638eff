"""A forked run sees its own dlt settings, not those the warm launcher started with."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from tests.integration.harness import Server

pytestmark = pytest.mark.integration

WORKSPACE = """
import os

import dlt
import dlt.hub.run as run


@run.job
def load():
    path = os.path.join(os.getcwd(), "t.duckdb")
    pipeline = dlt.pipeline("fork_ctx", destination=dlt.destinations.duckdb(path))
    print(pipeline.run([{"a": 1}, {"a": 2}], table_name="items"))


__all__ = ["load"]
"""


def test_runtime_settings_set_as_variables_reach_forked_runs(tmp_path: Path) -> None:
    received: list[str] = []

    class Beacon(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    beacon = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Beacon)
    threading.Thread(target=beacon.serve_forever, daemon=True).start()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    srv = Server(ws).start()
    try:
        dsn = f"http://127.0.0.1:{beacon.server_address[1]}/beacon/abc"
        srv.http.patch(
            f"{srv.w}/variables",
            json={"upserts": [{"name": "RUNTIME__DLTHUB_DSN", "type": "plain", "value": dsn}]},
        ).raise_for_status()
        run = srv.wait_run(srv.start_run("load")["id"], timeout=60)
        assert run["status"] == "completed", srv.logs(run["id"])
        assert run["launch_mode"] == "fork"
        srv.wait_for(lambda: "/beacon/abc/trace" in received, 10, "pipeline trace at the DSN")
    finally:
        srv.stop()
        beacon.shutdown()


def profile_workspace(ws: Path) -> Path:
    (ws / ".dlt").mkdir(parents=True)
    (ws / ".dlt" / ".workspace").touch()
    (ws / "__deployment__.py").write_text(
        "import dlt.hub.run as run\n\n\n@run.job\ndef prof():\n"
        "    from dlt._workspace._workspace_context import active\n\n"
        "    print(f'dlt profile={active().profile}')\n\n\n__all__ = ['prof']\n"
    )
    return ws


def test_a_forked_run_uses_its_own_profile(tmp_path: Path) -> None:
    srv = Server(profile_workspace(tmp_path / "ws")).start()
    try:
        prod = srv.wait_run(srv.start_run("prof", profile="prod")["id"])
        plain = srv.wait_run(srv.start_run("prof")["id"])
        assert prod["launch_mode"] == plain["launch_mode"] == "fork"
        assert "dlt profile=prod" in srv.user_output(prod["id"])
        assert "dlt profile=dev" in srv.user_output(plain["id"])
        # each run answers the profile dlt ran it with, as does the job
        assert (prod["profile"], plain["profile"]) == ("prod", "dev")
        assert plain["job"]["profile"] == srv.jobs()["prof"]["profile"] == "dev"
    finally:
        srv.stop()


def test_a_pinned_profile_is_what_runs_without_one_answer(tmp_path: Path) -> None:
    ws = profile_workspace(tmp_path / "ws")
    (ws / ".dlt" / "profile-name").write_text("qa\n")
    srv = Server(ws).start()
    try:
        pinned = srv.wait_run(srv.start_run("prof")["id"])
        assert "dlt profile=qa" in srv.user_output(pinned["id"])
        assert pinned["profile"] == pinned["job"]["profile"] == "qa"
        prod = srv.wait_run(srv.start_run("prof", profile="prod")["id"])
        assert "dlt profile=prod" in srv.user_output(prod["id"])
        assert (prod["profile"], prod["job"]["profile"]) == ("prod", "qa")
    finally:
        srv.stop()
