"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Index, PrimaryKeyConstraint, UniqueConstraint, inspect

from headwater.store.db import MIGRATIONS, upgrade
from headwater.store.models import Base


def _skip_unique_constraints(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # Alembic pairs unique constraints by name; with two constraints sharing a name
    # which pairs wins depends on set order (PYTHONHASHSEED), so the answer flips
    # from run to run. Unique constraints are compared by name and columns in
    # test_upgraded_schema_has_the_unique_constraints_of_the_models instead.
    return type_ != "unique_constraint"


def schema_diff(engine: Engine) -> list[Any]:
    """What autogenerate would write into a new migration; empty when in step.

    Tables, columns, types, nullability, server defaults, indexes and foreign keys.
    """
    with engine.connect() as conn:
        # spelled out so a change of Alembic's defaults cannot narrow the comparison
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": _skip_unique_constraints,
            },
        )
        return list(compare_metadata(ctx, Base.metadata))


def current_revisions(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as conn:
        return tuple(MigrationContext.configure(conn).get_current_heads())


def head_revisions() -> tuple[str, ...]:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return tuple(ScriptDirectory.from_config(cfg).get_heads())


def unique_constraints(engine: Engine) -> set[tuple[str, str | None, tuple[str, ...]]]:
    inspector = inspect(engine)
    return {
        (table, u["name"], tuple(u["column_names"]))
        for table in Base.metadata.tables
        for u in inspector.get_unique_constraints(table)
    }


def test_upgraded_schema_matches_the_models(engine: Engine) -> None:
    upgrade(engine)

    assert schema_diff(engine) == []
    assert current_revisions(engine) == head_revisions()


def test_upgraded_schema_has_the_unique_constraints_of_the_models(
    engine: Engine, backend: str, request: pytest.FixtureRequest
) -> None:
    upgrade(engine)

    wanted = {
        (table.name, str(c.name), tuple(col.name for col in c.columns))
        for table in Base.metadata.sorted_tables
        for c in table.constraints
        if isinstance(c, UniqueConstraint)
    }
    assert unique_constraints(engine) == wanted


def test_upgrade_creates_every_table_of_the_models(engine: Engine) -> None:
    upgrade(engine)

    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_second_upgrade_is_a_noop(engine: Engine) -> None:
    upgrade(engine)
    revisions = current_revisions(engine)
    tables = sorted(inspect(engine).get_table_names())
    uniques = unique_constraints(engine)

    upgrade(engine)

    assert current_revisions(engine) == revisions == head_revisions()
    assert sorted(inspect(engine).get_table_names()) == tables
    assert unique_constraints(engine) == uniques
    assert schema_diff(engine) == []


def test_index_and_constraint_names_are_unique_in_the_schema() -> None:
    """PostgreSQL keeps one namespace per schema for tables, indexes and the indexes
    behind primary keys and unique constraints; autogenerate pairs constraints by name."""
    names = list(Base.metadata.tables)
    for table in Base.metadata.sorted_tables:
        names += [
            str(c.name)
            for c in table.constraints
            if isinstance(c, PrimaryKeyConstraint | UniqueConstraint)
        ]
        names += [str(i.name) for i in table.indexes if isinstance(i, Index)]

    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []
