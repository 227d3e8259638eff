"""`headwater up --db-url postgresql://...`: the same runtime on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.integration.harness import HERE, Server, copy_workspace, new_pg_database
from tests.store.conftest import _admin_dsn

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def database() -> Iterator[str]:
    with new_pg_database("hw_it") as url:
        yield url


def test_runs_chains_and_restart_on_postgresql(tmp_path: Path, database: str) -> None:
    ws = copy_workspace(HERE / "workspace", tmp_path / "ws")
    srv = Server(ws, "--db-url", database).start()
    try:
        upstream = srv.wait_run(srv.start_run("ok")["id"])
        assert upstream["status"] == "completed"
        down = srv.wait_for(lambda: srv.runs("after_ok"), 20, "chained run on PostgreSQL")
        assert srv.wait_run(down[0]["id"])["status"] == "completed"
        assert "ok ran" in srv.user_output(upstream["id"])
        assert not (ws / ".headwater" / "headwater.db").exists()
        # wake-ups from other hosts: the server listens on the database
        assert wake_listeners(database) == 1
    finally:
        srv.stop()
    # the same database after a restart: same workspace, history kept
    ws_id = srv.ws_id
    srv.new_port()
    srv.start(wait_warm=False)
    try:
        assert srv.ws_id == ws_id
        assert srv.run(upstream["id"])["status"] == "completed"
    finally:
        srv.stop()


def wake_listeners(database: str) -> int:
    """Connections of Headwater's `PgWakeBridge` to `database`."""
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'headwater-wake'",
            (make_url(database).database,),
        ).fetchone()
    assert row is not None
    return int(row[0])
