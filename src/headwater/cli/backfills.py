"""`headwater job backfill` and `headwater backfill ls/show/cancel`: the missing intervals
of a job, run by the server in order; the command only watches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headwater.cli.console import WorkspaceOpt, call, client_for, out, resolve_job, when
from headwater.client import Client

app = typer.Typer(help="Backfills: the intervals of a job the server runs for you.")

POLL_S = 1.0
DONE_STATES = ("completed", "skipped_already_covered", "skipped_out_of_interval")
STATE_STYLE = {
    "completed": "green",
    "running": "cyan",
    "pending": "dim",
    "failed": "red",
    "cancelled": "yellow",
    "skipped_already_covered": "dim green",
    "skipped_out_of_interval": "dim",
}


def start_backfill(
    ref: str,
    start: str,
    end: str,
    workspace: Path,
    dry_run: bool,
    refresh: bool,
    detach: bool,
) -> None:
    client = client_for(workspace)
    job = resolve_job(client, ref)
    body = {"start": start, "end": end, "dry_run": dry_run, "refresh": refresh}
    answer = call(client.backfill, job["id"], **body)
    if dry_run:
        out.print(
            f"[bold]dry run[/bold]: {job['job_ref']} from {answer['start']} to {answer['end']}"
            f" ({answer['mode']})"
        )
        out.print(interval_table(answer["intervals"]))
        todo = sum(1 for i in answer["intervals"] if i["state"] == "pending")
        out.print(f"{todo} interval(s) would run; nothing was started.")
        return
    number = answer["number"]
    out.print(
        f"backfill [bold]{number}[/bold] of {job['job_ref']}: {len(answer['intervals'])}"
        f" interval(s) from {answer['start']} to {answer['end']}"
    )
    if answer.get("refreshed_downstream"):
        out.print("refresh cascades to " + ", ".join(answer["refreshed_downstream"]))
    if detach:
        out.print(f"it runs in the server: [bold]headwater backfill show {number}[/bold]")
        return
    try:
        final = follow(client, number)
    except KeyboardInterrupt:
        out.print(
            f"\nstopped watching; backfill {number} goes on in the server:"
            f" [bold]headwater backfill show {number}[/bold]"
            f" (or [bold]headwater backfill cancel {number}[/bold])"
        )
        raise typer.Exit(130) from None
    out.print(summary(final))
    if final["status"] != "completed":
        raise typer.Exit(1)


def follow(client: Client, number: int) -> dict[str, Any]:
    """A progress bar until the backfill ends: intervals done, running and failed."""
    columns = (
        TextColumn("[bold]backfill {task.fields[number]}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("backfill", total=None, number=number, detail="")
        while True:
            b = call(client.get_backfill, str(number))
            counts = b["counts"]
            done = sum(counts.get(s, 0) for s in DONE_STATES)
            detail = (
                f"running {counts.get('running', 0)}, failed {counts.get('failed', 0)},"
                f" pending {counts.get('pending', 0)}"
            )
            progress.update(task, total=len(b["intervals"]), completed=done, detail=detail)
            if b["status"] != "running":
                return b
            time.sleep(POLL_S)


def summary(b: dict[str, Any]) -> str:
    style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(b["status"], "")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(b["counts"].items()))
    text = f"backfill {b['number']} [{style}]{b['status']}[/{style}]: {counts}"
    if b.get("reason"):
        text += f"\n  {b['reason']}"
    return text


def interval_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("interval start", "interval end", "state", "run", box=None)
    for row in rows:
        style = STATE_STYLE.get(row["state"], "")
        run = f"#{row['job_run_number']}" if row.get("job_run_number") else "-"
        table.add_row(row["start"], row["end"], f"[{style}]{row['state']}[/{style}]", run)
    return table


@app.command("ls")
def backfill_ls(
    workspace: WorkspaceOpt = Path("."),
    job: Annotated[str | None, typer.Option("--job", help="Only this job's.")] = None,
) -> None:
    """List backfills, newest first."""
    client = client_for(workspace)
    job_id = resolve_job(client, job)["id"] if job else None
    table = Table("#", "job", "from", "to", "status", "intervals", "created", box=None)
    for b in call(client.backfills, job_id):
        counts = ", ".join(f"{v} {k}" for k, v in sorted(b["counts"].items()))
        table.add_row(
            str(b["number"]),
            b["job_ref"],
            b["start"],
            b["end"],
            b["status"],
            counts,
            when(b["created_at"]),
        )
    out.print(table)


@app.command("show")
def backfill_show(
    number: str,
    workspace: WorkspaceOpt = Path("."),
    follow_it: Annotated[bool, typer.Option("--follow", "-f", help="Watch it.")] = False,
) -> None:
    """A backfill and each of its intervals."""
    client = client_for(workspace)
    b = call(client.get_backfill, number)
    if follow_it and b["status"] == "running":
        b = follow(client, b["number"])
    out.print(f"backfill {b['number']} of {b['job_ref']}: {b['start']} to {b['end']}")
    out.print(interval_table(b["intervals"]))
    out.print(summary(b))


@app.command("cancel")
def backfill_cancel(number: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Start no more intervals and cancel the backfill's active runs."""
    client = client_for(workspace)
    b = call(client.cancel_backfill, number)
    out.print(summary(b))
