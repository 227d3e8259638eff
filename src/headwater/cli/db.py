"""`headwater db ...`: the database's schema revision, and migrating it.

`headwater up` migrates an older schema itself unless `--no-upgrade`; where several
servers and workers share one PostgreSQL, run `headwater db upgrade` once, from the new
version, before starting them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from headwater.cli.console import fail, out

app = typer.Typer(
    help="The database's schema: its revision, and upgrading it.", no_args_is_help=True
)

DbUrlOpt = Annotated[
    str | None,
    typer.Option(help="Database URL (default: SQLite under WORKSPACE/.headwater), as for `up`."),
]
DbWorkspaceOpt = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        help="The workspace whose SQLite database is meant when --db-url is not given.",
    ),
]


@app.command("current")
def db_current(db_url: DbUrlOpt = None, workspace: DbWorkspaceOpt = Path(".")) -> None:
    """Show the database's schema revision and the newest this Headwater knows."""
    from headwater.store.db import current_revision, head_revision, known_revisions

    engine = _engine(db_url, workspace, create=False)
    try:
        current, head = current_revision(engine), head_revision()
    except DBAPIError as ex:
        fail(f"cannot read {_shown(engine)}: {' '.join(str(ex.orig).split())}")
    finally:
        engine.dispose()
    if current == head:
        state = "[green]up to date[/green]"
    elif current is None:
        state = "[yellow]no schema yet[/yellow]: `headwater db upgrade` creates it"
    elif current in known_revisions():
        state = "[yellow]older than this Headwater[/yellow]: run `headwater db upgrade`"
    else:
        state = (
            "[red]unknown to this Headwater[/red]: a newer Headwater migrated it; upgrade Headwater"
        )
    out.print(f"database  {escape(_shown(engine))}")
    out.print(f"current   {current or '-'}")
    out.print(f"head      {head}")
    out.print(state)


@app.command("upgrade")
def db_upgrade(db_url: DbUrlOpt = None, workspace: DbWorkspaceOpt = Path(".")) -> None:
    """Migrate the database's schema to this Headwater's newest revision.

    Creates the schema on an empty database; refuses one a newer Headwater migrated.
    """
    from headwater.store.db import SchemaError, check_schema, head_revision

    engine = _engine(db_url, workspace, create=True)
    try:
        before = check_schema(engine, upgrade=True)
    except SchemaError as ex:
        fail(str(ex))
    except DBAPIError as ex:
        fail(f"cannot migrate {_shown(engine)}: {' '.join(str(ex.orig).split())}")
    finally:
        engine.dispose()
    head = head_revision()
    out.print(f"database  {escape(_shown(engine))}")
    if before == head:
        out.print(f"already at revision {head}, the newest this Headwater knows")
    else:
        out.print(f"upgraded {before or 'none (empty)'} -> {head}")


def _engine(db_url: str | None, workspace: Path, *, create: bool) -> Engine:
    """The engine `up` would open for these options; without `create`, a SQLite file that
    is not there is an error rather than made empty."""
    from headwater.store.db import make_engine, sqlite_url

    if db_url is None:
        # as `Runtime` names it (spelled out: `workspace.packages` would import dlt)
        db_url = sqlite_url(workspace.resolve() / ".headwater" / "headwater.db")
    try:
        url = make_url(db_url)
    except ArgumentError as ex:
        fail(f"--db-url {db_url!r}: {ex}")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.exists():
            if not create:
                fail(f"no database at {path}: `headwater up` or `headwater db upgrade` makes it")
            path.parent.mkdir(parents=True, exist_ok=True)
    return make_engine(db_url)


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
