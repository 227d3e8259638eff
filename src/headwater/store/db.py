"""Engines for SQLite (WAL) and PostgreSQL, and schema upgrades through Alembic.

A process checks the schema before it uses the database (`check_schema`): a schema this
code knows but older is upgraded (or refused, where upgrades are left to `headwater db
upgrade`), and a schema a newer Headwater migrated is always refused, since this code
would misread it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from headwater.core.errors import HeadwaterError

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x6877_6D69_6772_6174  # "hwmigrat"
"""The PostgreSQL advisory lock upgrades hold: servers starting at once migrate one at a time."""


class SchemaError(HeadwaterError):
    """The database's schema is not the one this Headwater runs on."""

    code = "schema_mismatch"

    def __init__(self, current: str | None, head: str, reason: str) -> None:
        super().__init__(reason)
        self.current = current
        """The database's revision; None when it has no schema yet."""
        self.head = head
        """The newest revision this Headwater knows."""
        self.reason = reason


class UnknownSchema(SchemaError):
    """A newer Headwater migrated the database: this one cannot use it."""

    code = "schema_unknown"

    def __init__(self, current: str, head: str) -> None:
        super().__init__(
            current,
            head,
            f"the database's schema is at revision {current}, which this Headwater does not"
            f" know (its newest is {head}): a newer Headwater has migrated it. Upgrade"
            " Headwater here to that version or later; schemas are never migrated down.",
        )


class OutdatedSchema(SchemaError):
    """The database's schema is older than this Headwater's, and upgrading was not allowed."""

    code = "schema_outdated"

    def __init__(self, current: str | None, head: str) -> None:
        found = f"at revision {current}" if current else "empty (no schema yet)"
        super().__init__(
            current,
            head,
            f"the database's schema is {found}; this Headwater needs revision {head}:"
            " run `headwater db upgrade` (with the same --db-url) first.",
        )


class WriteLock:
    """One SQLite writer at a time across this machine's Headwater processes.

    Threads queue on a lock, and processes on an `flock` of a file beside the
    database, instead of in SQLite's busy handler, whose sleeps (up to 100 ms
    each) made the latency tail under concurrent triggers.
    """

    def __init__(self, path: Path | None) -> None:
        self._threads = threading.Lock()
        self._path = path
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self._path is None:
            return None
        if self._pid != os.getpid():
            # a forked child shares the parent's open file, and with it the parent's flock
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def try_acquire(self) -> bool:
        """Take the lock if no thread or process holds it; never waits (for an event loop)."""
        if not self._threads.acquire(blocking=False):
            return False
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._threads.release()
            return False
        except BaseException:
            self._threads.release()
            raise
        return True

    def release(self) -> None:
        self.__exit__()


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriteLock] = weakref.WeakKeyDictionary()


IDLE_IN_TRANSACTION_MS = 15_000
"""PostgreSQL ends a session left idle inside a transaction this long. A process frozen
(SIGSTOP, a suspended VM) or cut off between two statements of a transaction holds its row
locks until then: a worker frozen mid-heartbeat blocked the server's reaper on its runs'
rows, and with it every dispatch of the fleet. Our transactions never wait between
statements for anything but Python; a worker frozen this long has lost its lease anyway."""


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
            # connections are kept: opening one (and its PRAGMAs) cost more than a trigger;
            # each holds a small page cache. The most recently used one is handed out first,
            # so a steady load keeps few caches warm (first in, first out, it filled one after
            # another: 10,000 dbt Cloud watches crept up by 8 MB in 4 minutes, bench/RESULTS.md)
            pool_size=24,
            max_overflow=40,
            pool_use_lifo=True,
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
            cur.execute("PRAGMA cache_size=-1024")
            cur.close()

        database = engine.url.database
        on_disk = bool(database) and database != ":memory:" and not database.startswith("file:")
        _WRITE_LOCKS[engine] = WriteLock(Path(f"{database}-writelock") if on_disk else None)
        if on_disk:
            private_files(Path(str(database)))

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            readonly = conn.get_execution_options().get("readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # added to the URL's own `options` (a search_path, say), which this argument replaces
    options = make_url(url).query.get("options", "")
    options = f"{options} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    return create_engine(
        url,
        pool_size=20,
        max_overflow=20,
        pool_pre_ping=True,
        pool_use_lifo=True,
        connect_args={"options": options.strip()},
    )


def private_files(database: Path) -> None:
    """The database, its WAL and shared-memory files: readable by their owner only (0600).

    SQLite makes `-wal` and `-shm` with the mode of the database file, so the file is made
    here first, 0600, and files an older version made are tightened."""
    try:
        fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return  # SQLite says why when it opens it
    os.close(fd)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except OSError:
            pass


def write_lock(engine: Engine) -> WriteLock | None:
    """The engine's `WriteLock` (SQLite); None where the database queues writers itself."""
    return _WRITE_LOCKS.get(engine)


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction; on SQLite, writers queue on the engine's `WriteLock` first."""
    lock: Any = _WRITE_LOCKS.get(engine) or nullcontext()
    with lock, engine.begin() as conn:
        yield conn


def known_revisions() -> list[str]:
    """Every migration's id, oldest first: files are named `<id>_<slug>.py` with ids in order."""
    return sorted(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def head_revision() -> str:
    """The newest migration's id."""
    return known_revisions()[-1]


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision; None when it has no schema yet. A database that
    cannot be reached raises (it is not an empty one)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def check_schema(engine: Engine, *, upgrade: bool, isolated: bool = False) -> str | None:
    """Make sure this Headwater can use the database; answers the revision found.

    A current schema passes. An older one (or none) is upgraded when `upgrade` is true,
    else `OutdatedSchema` is raised; a revision this code does not know (a newer
    Headwater migrated the database) raises `UnknownSchema` either way. `isolated` as
    for `upgrade`.
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return current
    if current is not None and current not in known_revisions():
        raise UnknownSchema(current, head)
    if not upgrade:
        raise OutdatedSchema(current, head)
    _migrate(engine, isolated)
    return current


def upgrade(engine: Engine, isolated: bool = False) -> None:
    """Bring the schema to the newest revision (creates it on an empty database).

    Nothing is imported when the schema is current; with `isolated` Alembic runs
    in a child process, so it never takes up the memory of a long-running server.
    Raises `UnknownSchema` on a schema a newer Headwater migrated.
    """
    check_schema(engine, upgrade=True, isolated=isolated)


def _migrate(engine: Engine, isolated: bool) -> None:
    if not isolated:
        upgrade_in_process(engine)
        return
    url = engine.url.render_as_string(hide_password=False)
    proc = subprocess.run(
        [sys.executable, "-m", "headwater.store.db", url], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"database migration failed:\n{proc.stderr.strip()[-4000:]}")


def upgrade_in_process(engine: Engine, revision: str = "head") -> None:
    """Migrate up to `revision` in one transaction (both backends have transactional DDL)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            # a second server starting now waits here, then finds the schema current
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


if __name__ == "__main__":
    upgrade_in_process(make_engine(sys.argv[1]))
