"""`headwater key ...`: create, list and revoke the server's API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headwater.cli.console import WorkspaceOpt, call, client_for, err, out, when

app = typer.Typer(help="API keys of the server.", no_args_is_help=True)


@app.command("create")
def key_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        str, typer.Option(help="trigger, read, admin, or worker (for `headwater worker`).")
    ] = "trigger",
    expires_in_days: Annotated[int | None, typer.Option(help="Days until it expires.")] = None,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Create an API key; it is printed once and never again."""
    client = client_for(workspace)
    key = call(client.create_key, name, scope, expires_in_days)
    err.print(f"created {key['scope']} key {key['name']!r} ({key['prefix']}...); store it now:")
    print(key["key"])


@app.command("ls")
def key_ls(workspace: WorkspaceOpt = Path(".")) -> None:
    """List API keys (never the keys themselves)."""
    client = client_for(workspace)
    table = Table(
        "name", "id", "prefix", "scope", "created", "expires", "last used", "state", box=None
    )
    for k in call(client.keys):
        state = "[red]revoked[/red]" if k["revoked_at"] else "active"
        table.add_row(
            k["name"],
            k["id"],
            k["prefix"] + "...",
            k["scope"],
            when(k["created_at"]),
            when(k["expires_at"]),
            when(k["last_used_at"]),
            state,
        )
    out.print(table)


@app.command("revoke")
def key_revoke(id_or_name: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Revoke a key by name, id or prefix; it stops working at once."""
    client = client_for(workspace)
    for k in call(client.revoke_key, id_or_name):
        out.print(f"revoked {k['name']} ({k['prefix']}...)")
