"""`headwater run ...`: list, show, follow and cancel runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.console import (
    WorkspaceOpt,
    call,
    client_for,
    out,
    resolve_job,
    status_markup,
    when,
)
from headwater.client import Client, ClientError

app = typer.Typer(help="Runs of jobs.", no_args_is_help=True)


@app.command("ls")
def run_ls(
    workspace: WorkspaceOpt = Path("."),
    job: Annotated[str | None, typer.Option(help="Only runs of this job.")] = None,
    status: Annotated[list[str], typer.Option(help="Only runs in this status (repeatable).")] = [],  # noqa: B006
    limit: int = 50,
) -> None:
    """List runs, newest first."""
    client = client_for(workspace)
    job_id = resolve_job(client, job)["id"] if job else None
    page = call(client.runs, job_id=job_id, statuses=status, limit=limit)
    table = Table("id", "job", "#", "status", "trigger", "started", "duration", "reason", box=None)
    for r in page["items"]:
        dur = f"{r['duration_seconds']:.2f}s" if r["duration_seconds"] is not None else "-"
        table.add_row(
            r["id"],
            r["job"]["job_ref"],
            str(r["number"]),
            status_markup(r["status"]),
            r["trigger"],
            when(r["started_at"]),
            dur,
            r.get("reason") or "",
        )
    out.print(table)
    out.print(f"[dim]{len(page['items'])} of {page['total']} runs[/dim]")


@app.command("show")
def run_show(run_id: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Show one run: its fields, the job's previous run and the rows its pipelines loaded."""
    client = client_for(workspace)
    run = call(client.run, run_id)
    keys = (
        "id",
        "number",
        "status",
        "reason",
        "trigger",
        "profile",
        "parameters",
        "created_at",
        "started_at",
        "finished_at",
        "duration_seconds",
        "exit_code",
        "attempt",
        "launch_mode",
        "interval_start",
        "interval_end",
        "logs_url",
    )
    out.print(f"[bold]{run['job']['job_ref']}[/bold] run #{run['number']}")
    for key in keys:
        value = run.get(key)
        out.print(
            f"  {key:<20} {status_markup(value) if key == 'status' else value}", highlight=False
        )
    previous = None
    if run["number"] > 1:
        page = call(client.runs, job_id=run["job"]["id"], number=run["number"] - 1, limit=1)
        previous = page["items"][0] if page["items"] else None
    out.print(
        f"  {'previous run':<20} "
        + (
            f"#{previous['number']} {previous['id']} {status_markup(previous['status'])}"
            if previous
            else "-"
        ),
        highlight=False,
    )
    if run.get("previous_job_run_id"):
        # a chained run: the upstream run whose outcome fired it
        upstream = call(client.run, run["previous_job_run_id"])
        out.print(
            f"  {'upstream run':<20} {upstream['job']['job_ref']} #{upstream['number']}"
            f" {upstream['id']} {status_markup(upstream['status'])}",
            highlight=False,
        )
    for attempt in run.get("attempts") or []:
        out.print(
            f"  {'attempt ' + str(attempt['attempt']):<20} {status_markup(attempt['status'])}"
            f" exit code {attempt['exit_code']}: {escape(attempt['reason'] or '')}"
            + (f" (retried at {when(attempt['retry_at'])})" if attempt["retry_at"] else ""),
            highlight=False,
        )
    _rows_loaded(client, run.get("pipeline_run_summaries") or [])
    _dbt_table(call(client.artifacts, run["id"]))


def _dbt_table(artifacts: dict[str, Any]) -> None:
    """The run's dbt models and tests, one row each, when it ran dbt (Core or Cloud)."""
    dbt = artifacts.get("dbt")
    if not dbt:
        return
    counts = ", ".join(f"{n} {status}" for status, n in dbt["counts"].items())
    table = Table(title=f"dbt ({dbt['source']}): {counts}", title_justify="left")
    for column in ("node", "status", "time", "rows", "message"):
        table.add_column(column, justify="right" if column in ("time", "rows") else "left")
    for row in dbt["results"]:
        seconds = row.get("execution_time")
        rows = row.get("failures") if row["resource_type"] == "test" else row.get("rows_affected")
        table.add_row(
            row["unique_id"],
            status_markup(row["status"]),
            f"{seconds:.2f}s" if seconds is not None else "-",
            "-" if rows is None else str(rows),
            escape((row.get("message") or "").splitlines()[0] if row.get("message") else ""),
        )
    out.print(table)
    names = ", ".join(a["name"] for a in artifacts.get("items") or [])
    out.print(f"  {'artifacts':<20} {names}", highlight=False)


def _rows_loaded(client: Client, summaries: list[dict[str, Any]]) -> None:
    """Rows loaded per pipeline and, where the pipeline run says, per table."""
    if not summaries:
        out.print(f"  {'rows loaded':<20} - (no pipeline ran)", highlight=False)
        return
    total = sum(s.get("total_rows") or 0 for s in summaries)
    out.print(f"  {'rows loaded':<20} {total} rows in total", highlight=False)
    for summary in summaries:
        where = ".".join(
            str(x) for x in (summary.get("destination_name"), summary.get("dataset_name")) if x
        )
        status = summary.get("status")
        out.print(
            f"    {summary['pipeline_name']:<18} {summary.get('total_rows') or 0} rows"
            + (f" into {where}" if where else "")
            + (f" ({status_markup(status)})" if status else ""),
            highlight=False,
        )
        if not summary.get("pipeline_run_id"):
            continue
        try:
            tables = client.pipeline_run(summary["pipeline_run_id"]).get("tables") or []
        except ClientError:
            continue  # the per-pipeline line is all there is
        for table in tables:
            rows = table.get("rows_loaded")
            out.print(
                f"      {table['table_name']:<16} {rows if rows is not None else '-'}",
                highlight=False,
            )


@app.command("logs")
def run_logs(
    run_id: str,
    workspace: WorkspaceOpt = Path("."),
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow until the run ends.")
    ] = False,
) -> None:
    """Print a run's log."""
    client = client_for(workspace)
    if follow:
        raise typer.Exit(follow_run(client, run_id))

    def show() -> None:
        for line in client.logs(run_id):
            print_line(line)

    call(show)


@app.command("cancel")
def run_cancel(run_id: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Cancel a run: SIGTERM, then SIGKILL after the job's grace period."""
    client = client_for(workspace)
    run = call(client.cancel, run_id)
    out.print(f"run #{run['number']} {status_markup(run['status'])}")


def follow_run(client: Client, run_id: str) -> int:
    for line in call(lambda: list(_iter_follow(client, run_id))):
        del line
    run = call(client.run, run_id)
    out.print(
        f"run #{run['number']} {status_markup(run['status'])}"
        + (f": {run['reason']}" if run.get("reason") else "")
    )
    return 0 if run["status"] == "completed" else 1


def _iter_follow(client: Client, run_id: str) -> Any:
    for line in client.follow_logs(run_id):
        print_line(line)
        yield line


def print_line(line: dict[str, Any]) -> None:
    from rich.text import Text

    num = f"{line['line_num'] + 1:>4} "
    if line["source"] != "user":
        out.print(Text(num + line["content"], style="dim"), highlight=False)
    else:
        bar = Text("| ", style="red" if line["io_stream"] == "stderr" else "")
        out.print(Text(num) + bar + Text(line["content"]), highlight=False)
