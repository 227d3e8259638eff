"""One store, two backends: every test here runs on SQLite and on PostgreSQL.

Each test gets a clean database: a new SQLite file under `tmp_path`, or on
PostgreSQL a new schema `hw_<random>` inside a database `hw_test_<random>` that
the session creates on the server named by `HEADWATER_TEST_PG_URL` (default:
the local `test` database) and drops at its end. Nothing else on the server is
touched.

When PostgreSQL cannot be reached its tests are skipped with the reason; when
the `CI` environment variable is set they fail instead, so a CI job cannot go
green without having tested PostgreSQL.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import Store

PG_URL = os.environ.get("HEADWATER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[pytest.mark.postgres],
    ),
]


def in_ci() -> bool:
    """`CI` is set to anything but an explicit no (`CI=true`, `CI=1`, ...)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _admin_dsn() -> str:
    """`PG_URL` in the form psycopg accepts (no `+psycopg` driver suffix)."""
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def _pg_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None; asked once per session."""
    try:
        import psycopg
    except ImportError:
        return 'psycopg is not installed (pip install "psycopg[binary]")'
    try:
        with psycopg.connect(_admin_dsn(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # any failure to connect means the same thing here
        return f"{type(e).__name__}: {' '.join(str(e).split())}"
    return None


def require_postgres(strict: bool = False) -> None:
    """Skip the test when PostgreSQL is unreachable; fail it in CI or when `strict`
    (tests of what only PostgreSQL has, which would otherwise never run)."""
    problem = _pg_problem()
    if problem is None:
        return
    msg = (
        f"PostgreSQL at {make_url(PG_URL).render_as_string()} is unreachable ({problem});"
        " start it or point HEADWATER_TEST_PG_URL at one"
    )
    if strict:
        pytest.fail(msg, pytrace=False)
    if in_ci():
        pytest.fail(f"{msg}. CI is set, so PostgreSQL tests must not be skipped.", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def new_pg_database(prefix: str = "hw_test") -> Iterator[str]:
    """A database of our own on the PostgreSQL server (skipped on a laptop without it,
    failed in CI), dropped after."""
    require_postgres()
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_admin_dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own for the whole session."""
    with new_pg_database() as url:
        yield url


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty database of `backend`, removed after the test.

    On PostgreSQL that is a new schema (a new database costs ~0.3 s, a schema
    almost nothing), made the connections' only `search_path` entry, so the
    migrations, the store and the inspector all see it as the whole database.
    """
    if backend == "sqlite":
        yield sqlite_url(tmp_path / "headwater.db")
        return
    require_postgres()
    import psycopg

    database: str = request.getfixturevalue("pg_database")
    dsn = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"hw_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(database)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """`make_engine` on the fresh database, schema not yet created."""
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    """A store on a database brought to the newest migration."""
    try:
        upgrade(engine)
    except ProgrammingError as e:
        # same error, without ~100 Alembic and SQLAlchemy frames that pytest takes
        # ~0.3 s per test to format; test_migrations.py shows the full traceback
        raise ProgrammingError(e.statement, e.params, e.orig) from None
    return Store(engine)


@pytest.fixture
def ws(store: Store) -> str:
    """A workspace in the store."""
    return store.ensure_workspace("/srv/workspace", "demo")["id"]
