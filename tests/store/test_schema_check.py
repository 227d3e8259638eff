"""A process checks the schema before it uses the database: it upgrades an older one when
allowed, and refuses one a newer Headwater migrated. On SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import Engine, text

from headwater.core.errors import HeadwaterError
from headwater.store.db import (
    OutdatedSchema,
    UnknownSchema,
    check_schema,
    current_revision,
    head_revision,
    known_revisions,
    make_engine,
    upgrade,
    upgrade_in_process,
)
from tests.store.conftest import require_postgres

HEAD = head_revision()
OLDER = known_revisions()[-2]


@pytest.fixture(autouse=True)
def _postgresql_or_fail(request: pytest.FixtureRequest) -> None:
    """The PostgreSQL cases fail, not skip, without a server."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "postgresql":
        require_postgres(strict=True)


def stamp(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_current_schema_passes_without_upgrading(engine: Engine) -> None:
    upgrade(engine)
    assert check_schema(engine, upgrade=False) == HEAD


def test_empty_database_gets_the_schema_when_upgrading_is_allowed(engine: Engine) -> None:
    assert check_schema(engine, upgrade=True) is None
    assert current_revision(engine) == HEAD


def test_empty_database_is_refused_without_upgrading(engine: Engine) -> None:
    with pytest.raises(OutdatedSchema) as refused:
        check_schema(engine, upgrade=False)
    assert "empty" in str(refused.value)
    assert "run `headwater db upgrade`" in str(refused.value)
    assert current_revision(engine) is None


def test_older_schema_is_upgraded_when_allowed(engine: Engine) -> None:
    upgrade_in_process(engine, OLDER)
    assert check_schema(engine, upgrade=True) == OLDER
    assert current_revision(engine) == HEAD


def test_older_schema_is_refused_without_upgrading(engine: Engine) -> None:
    upgrade_in_process(engine, OLDER)
    with pytest.raises(OutdatedSchema) as refused:
        check_schema(engine, upgrade=False)
    message = str(refused.value)
    assert f"revision {OLDER}" in message and f"revision {HEAD}" in message
    assert "run `headwater db upgrade`" in message
    assert (refused.value.current, refused.value.head) == (OLDER, HEAD)
    assert current_revision(engine) == OLDER


def test_schema_of_a_newer_headwater_is_refused_even_when_upgrading(engine: Engine) -> None:
    upgrade(engine)
    stamp(engine, "9999")
    for attempt in (
        lambda: check_schema(engine, upgrade=True),
        lambda: check_schema(engine, upgrade=False),
        lambda: upgrade(engine),
    ):
        with pytest.raises(UnknownSchema) as refused:
            attempt()
        message = str(refused.value)
        assert "revision 9999" in message and f"newest is {HEAD}" in message
        assert "Upgrade Headwater" in message
        assert isinstance(refused.value, HeadwaterError)
        assert refused.value.code == "schema_unknown"
    assert current_revision(engine) == "9999"


def test_two_servers_upgrading_at_once_both_start(db_url: str) -> None:
    """Servers sharing a database may start together: each migrates in a child process
    (`upgrade(isolated=True)`); one migrates, the other waits for it and finds the schema
    current."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "headwater.store.db", db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_unreachable_database_is_an_error_not_an_empty_one() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(Exception, match="127.0.0.1"):
        current_revision(engine)
