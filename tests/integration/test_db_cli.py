"""`headwater db current` / `db upgrade`, and `up` refusing a schema it does not know, as
a user runs them: the real CLI in a child process, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from headwater.store.db import (
    current_revision,
    head_revision,
    known_revisions,
    make_engine,
    sqlite_url,
    upgrade_in_process,
)
from tests.integration.harness import free_port
from tests.store.conftest import PG_URL, _admin_dsn, require_postgres

pytestmark = pytest.mark.integration

HEAD = head_revision()
OLDER = known_revisions()[-2]


def headwater(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_STATE_DIR"] = str(cwd / "state")  # `up` must not note itself anywhere else
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with Rich's wrapping undone."""
    return " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file not made yet, or a new PostgreSQL database
    (a failure, not a skip, without a server)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data" / "headwater.db")
        return
    require_postgres(strict=True)
    name = f"hw_it_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_db_upgrade_creates_the_schema_and_db_current_shows_it(tmp_path: Path, db_url: str) -> None:
    upgraded = headwater(tmp_path, "db", "upgrade", "--db-url", db_url)
    assert upgraded.returncode == 0, one_line(upgraded)
    assert f"upgraded none (empty) -> {HEAD}" in one_line(upgraded)

    current = headwater(tmp_path, "db", "current", "--db-url", db_url)
    assert current.returncode == 0, one_line(current)
    assert f"current {HEAD} head {HEAD} up to date" in one_line(current)

    again = headwater(tmp_path, "db", "upgrade", "--db-url", db_url)
    assert again.returncode == 0, one_line(again)
    assert f"already at revision {HEAD}" in one_line(again)


def test_db_upgrade_says_from_which_revision(tmp_path: Path, db_url: str) -> None:
    older(db_url)
    current = headwater(tmp_path, "db", "current", "--db-url", db_url)
    assert f"current {OLDER} head {HEAD} older than this Headwater" in one_line(current)

    upgraded = headwater(tmp_path, "db", "upgrade", "--db-url", db_url)
    assert upgraded.returncode == 0, one_line(upgraded)
    assert f"upgraded {OLDER} -> {HEAD}" in one_line(upgraded)


def test_db_commands_default_to_the_workspaces_sqlite_file(tmp_path: Path) -> None:
    missing = headwater(tmp_path, "db", "current", "-w", "ws")
    assert missing.returncode == 1
    assert "no database at" in one_line(missing)
    assert not (tmp_path / "ws" / ".headwater" / "headwater.db").exists()

    upgraded = headwater(tmp_path, "db", "upgrade", "-w", "ws")
    assert upgraded.returncode == 0, one_line(upgraded)
    assert (tmp_path / "ws" / ".headwater" / "headwater.db").exists()


def test_up_refuses_a_schema_a_newer_headwater_migrated(tmp_path: Path, db_url: str) -> None:
    older(db_url)
    stamp(db_url, "9999")
    (tmp_path / "ws").mkdir()
    up = headwater(tmp_path, "up", "ws", "--db-url", db_url, "--port", str(free_port()))
    assert up.returncode == 1, one_line(up)
    message = one_line(up)
    assert "revision 9999" in message and f"newest is {HEAD}" in message
    assert "Upgrade Headwater" in message

    refused = headwater(tmp_path, "db", "upgrade", "--db-url", db_url)
    assert refused.returncode == 1
    assert "revision 9999" in one_line(refused)
    assert revision(db_url) == "9999"


def test_up_with_no_upgrade_refuses_an_older_schema(tmp_path: Path, db_url: str) -> None:
    older(db_url)
    (tmp_path / "ws").mkdir()
    up = headwater(
        tmp_path, "up", "ws", "--db-url", db_url, "--port", str(free_port()), "--no-upgrade"
    )
    assert up.returncode == 1, one_line(up)
    message = one_line(up)
    assert f"revision {OLDER}" in message and f"revision {HEAD}" in message
    assert "run `headwater db upgrade`" in message
    assert revision(db_url) == OLDER


def older(db_url: str) -> None:
    """Migrate the database up to the revision before the newest."""
    path = make_url(db_url).database
    if db_url.startswith("sqlite") and path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db_url)
    try:
        upgrade_in_process(engine, OLDER)
    finally:
        engine.dispose()


def stamp(db_url: str, rev: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": rev})
    finally:
        engine.dispose()


def revision(db_url: str) -> str | None:
    engine = make_engine(db_url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()
