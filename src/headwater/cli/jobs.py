"""`headwater job ...`: list, inspect, trigger, pause and resume the workspace's jobs."""

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
    fail,
    not_served,
    out,
    resolve_job,
    status_markup,
    when,
)
from headwater.cli.runs import follow_run
from headwater.core.policy import is_served

app = typer.Typer(help="Jobs of the workspace.", no_args_is_help=True)


@app.command("ls")
def job_ls(
    workspace: WorkspaceOpt = Path("."),
    archived: Annotated[bool, typer.Option(help="Include archived jobs.")] = False,
) -> None:
    """List jobs with their triggers, next run and last status."""
    from headwater.workspace.triggers import humanize

    client = client_for(workspace)
    _manifest_error(call(client.workspace).get("manifest") or {})
    table = Table("job", "type", "triggers", "next run", "last run", box=None)
    for job in call(client.jobs, include_archived=archived):
        latest = job.get("latest_job_run")
        state = " [yellow](paused)[/yellow]" if job["is_paused"] else ""
        state += " [dim](archived)[/dim]" if job["is_archived"] else ""
        state += (
            "" if job.get("is_served", is_served(job["job_type"])) else not_served(job["job_type"])
        )
        trig = ", ".join(humanize(t) for t in job["job_definition"].get("triggers", [])) or "manual"
        trig += _settings_note(job.get("settings") or {}, job.get("debounce"))
        last = f"#{latest['number']} {status_markup(latest['status'])}" if latest else "-"
        if job.get("deadline_missed_at"):
            last += f" [red](missed deadline {when(job['deadline_missed_at'])})[/red]"
        table.add_row(
            job["job_ref"] + state, job["job_type"], trig, when(job["next_scheduled_run_at"]), last
        )
    out.print(table)


def _settings_note(settings: dict[str, Any], debounce: dict[str, Any] | None) -> str:
    """What headwater.toml changes in how the job's triggers behave, in a few words."""
    notes = []
    if settings.get("overlap") in ("replace", "ignore"):
        notes.append(f"overlap {settings['overlap']}")
    if settings.get("locks"):
        notes.append("locks " + ", ".join(settings["locks"]))
    if settings.get("run_interval") is not None:
        note = f"debounced {settings['run_interval']:g}s"
        if debounce and debounce.get("next_fire_at"):
            note += f", next fire {when(debounce['next_fire_at'])}"
        notes.append(note)
    return f" [dim]({'; '.join(notes)})[/dim]" if notes else ""


def _manifest_error(manifest: dict[str, Any]) -> None:
    """Say so when `__deployment__.py` or `headwater.toml` is broken: the jobs listed are the
    last good version's."""
    if manifest.get("config_error"):
        since = when(manifest.get("config_error_at"))
        out.print(
            f"[bold red]headwater.toml error[/bold red] [red]since {since}; the server keeps"
            " its last good configuration:[/red]",
            soft_wrap=True,
        )
        for line in str(manifest["config_error"]).split("; "):
            out.print(f"  [red]{escape(line)}[/red]", soft_wrap=True, highlight=False)
        out.print()
    if not manifest.get("error"):
        return
    kind = f" ({manifest['error_type']})" if manifest.get("error_type") else ""
    kept = manifest.get("version")
    since = when(manifest.get("error_at"))
    out.print(
        f"[bold red]manifest error{escape(kind)}[/bold red] [red]since {since}"
        + (f"; the server keeps version {kept}, listed below" if kept else "; no jobs loaded")
        + ":[/red]",
        soft_wrap=True,
    )
    for line in str(manifest["error"]).splitlines():
        out.print(f"  [red]{escape(line)}[/red]", soft_wrap=True, highlight=False)
    out.print()


@app.command("inspect")
def job_inspect(ref: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Show a job: its definition, expanded triggers and latest run; its intervals
    (watermark, next due, failed), freshness and deadline."""
    client = client_for(workspace)
    job_id = resolve_job(client, ref)["id"]
    job = call(client.job, job_id)
    out.print_json(data=job)
    _intervals(call(client.intervals, job_id))


def _intervals(report: dict[str, Any]) -> None:
    if report.get("problem"):
        out.print(f"[red]{escape(report['problem'])}[/red]")
    if report.get("is_interval_job"):
        out.print(
            f"\n[bold]intervals[/bold] ({report['mode']}, {report['timezone']},"
            f" {escape(report['schedule'])}): window {report['window']['start']} to"
            f" {report['window']['end']}"
        )
        out.print(f"  watermark  {report['watermark']}  ({report['completed']} completed)")
        out.print(f"  open       {report['open']}; next tick {when(report['next_tick'])}")
        for label, rows in (
            ("running", report["running"]),
            ("failed", report["failed"]),
            ("next due", report["next_due"]),
        ):
            for row in rows:
                style = {"failed": "red", "running": "cyan"}.get(label, "")
                line = (
                    f"  [{style}]{label:<10}[/{style}] {row['start']} to {row['end']}"
                    if style
                    else f"  {label:<10} {row['start']} to {row['end']}"
                )
                out.print(line)
    if fresh := report.get("freshness"):
        state = "[green]fresh[/green]" if fresh["fresh"] else "[yellow]not fresh[/yellow]"
        out.print(f"\n[bold]freshness[/bold] {', '.join(fresh['constraints'])}: {state}")
        for reason in fresh["reasons"]:
            out.print(f"  {escape(reason)}")
        if fresh.get("waiting_trigger"):
            out.print(
                f"  waiting: {escape(fresh['waiting_trigger'])} since"
                f" {when(fresh['waiting_since'])} fires when fresh"
            )
    if deadline := report.get("deadline"):
        out.print(f"\n[bold]deadline[/bold] {escape(deadline['text'])}")
        if deadline.get("problem"):
            out.print(f"  [red]{escape(deadline['problem'])}[/red]")
        if deadline.get("last_missed_at"):
            out.print(f"  [red]last missed {when(deadline['last_missed_at'])}[/red]")


@app.command("backfill")
def job_backfill(
    ref: str,
    start: Annotated[str, typer.Option(help="First instant (ISO, e.g. 2026-02-01).")],
    end: Annotated[str, typer.Option(help="End, exclusive (ISO).")],
    workspace: WorkspaceOpt = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would run.")] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Clear completed intervals and reload.")
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Start it and return.")] = False,
) -> None:
    """Run the job's missing intervals between --start and --end, in order. Ctrl-C stops
    watching; the backfill goes on in the server (`headwater backfill show N`)."""
    from headwater.cli.backfills import start_backfill

    start_backfill(ref, start, end, workspace, dry_run, refresh, detach)


@app.command("run")
def job_run(
    ref: str,
    workspace: WorkspaceOpt = Path("."),
    param: Annotated[
        list[str], typer.Option("--param", "-p", help="k=v, a value for the job's arguments.")
    ] = [],  # noqa: B006
    profile: Annotated[str | None, typer.Option(help="Workspace profile to run with.")] = None,
    refresh: Annotated[bool, typer.Option(help="Ask the job's pipelines to refresh.")] = False,
    wait: Annotated[
        bool, typer.Option(help="Follow the logs and exit with the run's outcome.")
    ] = False,
) -> None:
    """Trigger a job now."""
    params: dict[str, str] = {}
    for p in param:
        key, sep, value = p.partition("=")
        if not sep or not key:
            fail(f"--param takes key=value, got {p!r}")
        params[key] = value
    client = client_for(workspace)
    job = resolve_job(client, ref)
    result = call(
        client.trigger,
        job_ids=[job["id"]],
        profile=profile,
        refresh=refresh,
        parameters=params or None,
    )
    for failed in result["failed"]:
        fail(failed["detail"])
    items = result["succeeded"] + result["skipped"]
    if not items:
        fail("nothing was triggered")
    item = items[0]
    run = item.get("job_run")
    if item.get("status", "triggered") != "triggered":
        reasons = "; ".join(item.get("reasons") or [])
        fail(f"{item['job_ref']} not started: {item['status']} ({reasons})", code=2)
    folded = next((r for r in item.get("reasons") or [] if r.startswith("debounced:")), None)
    if folded is not None:
        # a debounced job: the trigger joined a fire in flight or one to come
        out.print(f"{item['job_ref']}: {folded}")
        if run is None or not wait:
            return
    else:
        out.print(
            f"started run #{run['number']} of {item['job_ref']} ({item['trigger']})  id {run['id']}"
        )
    if wait:
        raise typer.Exit(follow_run(client, run["id"]))


@app.command("pause")
def job_pause(ref: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Stop a job's timed triggers (manual triggers still work)."""
    client = client_for(workspace)
    job = call(client.set_paused, resolve_job(client, ref)["id"], True)
    out.print(f"paused {job['job_ref']}")


@app.command("resume")
def job_resume(ref: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Start a paused job's timed triggers again, from now on."""
    client = client_for(workspace)
    job = call(client.set_paused, resolve_job(client, ref)["id"], False)
    out.print(f"resumed {job['job_ref']}")
