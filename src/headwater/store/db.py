"""Engines for SQLite (WAL) and PostgreSQL, and schema upgrades through Alembic."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event

MIGRATIONS = Path(__file__).parent / "migrations"
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    """An engine whose transactions serialize writers.

    On SQLite every write transaction starts with `BEGIN IMMEDIATE`, so a
    read-then-write (count active runs, then insert one) cannot interleave with
    another writer; connections made with `readonly=True` execution options
    begin a plain deferred transaction and read alongside a writer (WAL).
    On PostgreSQL the same code locks the job row with `FOR UPDATE`.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # take over transaction control from the driver (SQLAlchemy's documented recipe)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _WRITE_LOCKS[engine] = threading.Lock()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            readonly = conn.get_execution_options().get("readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction.

    SQLite has one writer at a time; threads of this process queue on a lock
    instead of in SQLite's busy handler, whose sleeps (up to 100 ms each) made
    the latency tail under concurrent triggers.
    """
    lock: Any = _WRITE_LOCKS.get(engine) or nullcontext()
    with lock, engine.begin() as conn:
        yield conn


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
