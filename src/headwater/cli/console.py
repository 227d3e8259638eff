"""What every command shares: the console it prints to, how it fails, and the server and
the job it names (`-w`, a job reference)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from headwater.cli.find import FoundServer, locate_server
from headwater.client import Client, ClientError
from headwater.core.policy import is_served

out = Console()
err = Console(stderr=True)
if not out.is_terminal:
    # piped or captured output: keep rows whole instead of wrapping at 80 columns
    out.width = 240

WorkspaceOpt = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        help="The workspace folder (default: the current folder; outside any workspace, the"
        " running server of one below it, else the one `headwater up` started last).",
    ),
]
MaxLogLinesOpt = Annotated[
    int,
    typer.Option(
        min=1,
        envvar="HEADWATER_MAX_LOG_LINES",
        help="Most lines of output one run stores; past it, a truncation line and the"
        " rest is dropped (the run goes on).",
    ),
]
MaxLogMbOpt = Annotated[
    int,
    typer.Option(
        min=1,
        envvar="HEADWATER_MAX_LOG_MB",
        help="Most megabytes of output one run stores (as --max-log-lines).",
    ),
]
"""The caps of one run's stored output, for `up` and `worker` alike."""

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "starting": "cyan",
    "pending": "blue",
    "cancelling": "yellow",
    # dbt's node statuses
    "success": "green",
    "pass": "green",
    "warn": "yellow",
    "error": "red",
    "fail": "red",
    "runtime error": "red",
}


def client_for(workspace: Path) -> Client:
    found = server_for(workspace)
    return Client(found.url, found.workspace_id, found.api_key)


def server_for(workspace: Path) -> FoundServer:
    """The server for `-w`; without `-w` (the current folder), one found nearby, said so."""
    try:
        found = locate_server(workspace, search=workspace == Path("."))
    except ClientError as ex:
        fail(ex.detail)
    if found.note:
        err.print(f"[dim]{escape(found.note)}[/dim]", soft_wrap=True)
    return found


def fail(message: str, code: int = 1) -> Any:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except ClientError as ex:
        extra = ""
        if ex.extra and isinstance(ex.extra, dict) and ex.extra.get("reasons"):
            extra = ": " + "; ".join(ex.extra["reasons"])
        fail(f"{ex.detail}{extra}")


def status_markup(s: str | None) -> str:
    if not s:
        return "-"
    return f"[{STATUS_STYLE.get(s, 'white')}]{s}[/]"


def not_served(job_type: str) -> str:
    """A marker for jobs Headwater lists but does not run (interactive, stream)."""
    return "" if is_served(job_type) else f" [yellow](not served: {job_type})[/yellow]"


def when(value: str | None) -> str:
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def resolve_job(client: Client, ref: str) -> dict[str, Any]:
    from headwater.workspace.triggers import JobRefError, resolve_ref

    jobs = call(client.jobs, include_archived=True)
    try:
        full = resolve_ref(ref, [j["job_ref"] for j in jobs])
    except JobRefError as ex:
        fail(ex.reason)
    return next(j for j in jobs if j["job_ref"] == full)
