"""The SQLite files hold every run's log and the hashes of keys: their owner's only."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text

from headwater.store.db import make_engine, sqlite_url, upgrade, write


def modes(db: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_mode & 0o777
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
        if p.exists()
    }


def test_a_new_database_and_its_wal_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "headwater.db"
    old = os.umask(0o022)
    try:
        engine = make_engine(sqlite_url(db))
        upgrade(engine)
        with write(engine) as conn:
            conn.execute(text("CREATE TABLE t (x TEXT)"))
    finally:
        os.umask(old)
    found = modes(db)
    assert set(found) == {"headwater.db", "headwater.db-wal", "headwater.db-shm"}
    assert set(found.values()) == {0o600}
    engine.dispose()


def test_files_an_older_version_left_readable_are_tightened(tmp_path: Path) -> None:
    db = tmp_path / "headwater.db"
    engine = make_engine(sqlite_url(db))
    upgrade(engine)
    engine.dispose()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.touch()
        path.chmod(0o644)
    engine = make_engine(sqlite_url(db))
    assert set(modes(db).values()) == {0o600}
    engine.dispose()
