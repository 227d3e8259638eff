"""`headwater automation ls` and `headwater delivery ls`: the rules of headwater.toml in
force, and what they delivered (or failed to)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.console import WorkspaceOpt, call, client_for, out, when

automation_app = typer.Typer(help="Automations of headwater.toml.", no_args_is_help=True)
delivery_app = typer.Typer(help="What automations delivered.", no_args_is_help=True)

STATUS = {"delivered": "green", "pending": "yellow", "failed": "red"}


@automation_app.command("ls")
def automation_ls(workspace: WorkspaceOpt = Path(".")) -> None:
    """The automations in force (the last good headwater.toml); secrets never shown."""
    client = client_for(workspace)
    table = Table("name", "on", "does", "enabled", box=None)
    for rule in call(client.automations):
        does = [f"notify {u}" for u in rule["notify"]]
        if rule["webhook"]:
            does.append(f"webhook {rule['webhook']['url']}")
        does += [" ".join(f"{k} {v}" for k, v in a.items()) for a in rule["actions"]]
        on = ", ".join(rule["on"]) + (f" ({rule['count']} in a row)" if rule["count"] > 1 else "")
        table.add_row(
            escape(rule["name"]), escape(on), escape("\n".join(does)), str(rule["enabled"]).lower()
        )
    out.print(table)


@delivery_app.command("ls")
def delivery_ls(
    failed: Annotated[bool, typer.Option(help="Only those given up on or still failing.")] = False,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """The delivery log: each notification, webhook, hook and action, with its attempts."""
    client = client_for(workspace)
    table = Table("when", "automation", "event", "kind", "target", "status", "attempts", box=None)
    for d in call(client.deliveries, failed, limit):
        status = f"[{STATUS.get(d['status'], 'white')}]{d['status']}[/]"
        last = (d["history"] or [{}])[-1]
        if d["status"] != "delivered" and last.get("error"):
            status += f" [dim]{escape(str(last['error']))[:80]}[/dim]"
        table.add_row(
            when(d["created_at"]),
            escape(d["automation"]),
            d["event"],
            d["kind"],
            escape(d["target"]),
            status,
            str(d["attempts"]),
        )
    out.print(table)
