"""`headwater`: run a dlt workspace's jobs, and drive the server from the terminal."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.client import Client, ClientError, FoundServer, locate_server, remember_server
from headwater.core.policy import is_served

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
job_app = typer.Typer(help="Jobs of the workspace.", no_args_is_help=True)
run_app = typer.Typer(help="Runs of jobs.", no_args_is_help=True)
key_app = typer.Typer(help="API keys of the server.", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(run_app, name="run")
app.add_typer(key_app, name="key")

out = Console()
err = Console(stderr=True)
log = logging.getLogger("headwater")
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
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "starting": "cyan",
    "pending": "blue",
    "cancelling": "yellow",
}


def _client(workspace: Path) -> Client:
    found = _server(workspace)
    return Client(found.url, found.workspace_id, found.api_key)


def _server(workspace: Path) -> FoundServer:
    """The server for `-w`; without `-w` (the current folder), one found nearby, said so."""
    try:
        found = locate_server(workspace, search=workspace == Path("."))
    except ClientError as ex:
        _fail(ex.detail)
    if found.note:
        err.print(f"[dim]{escape(found.note)}[/dim]", soft_wrap=True)
    return found


def _fail(message: str, code: int = 1) -> Any:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except ClientError as ex:
        extra = ""
        if ex.extra and isinstance(ex.extra, dict) and ex.extra.get("reasons"):
            extra = ": " + "; ".join(ex.extra["reasons"])
        _fail(f"{ex.detail}{extra}")


def _status(s: str | None) -> str:
    if not s:
        return "-"
    return f"[{STATUS_STYLE.get(s, 'white')}]{s}[/]"


def _not_served(job_type: str) -> str:
    """A marker for jobs Headwater lists but does not run (interactive, stream)."""
    return "" if is_served(job_type) else f" [yellow](not served: {job_type})[/yellow]"


def _when(value: str | None) -> str:
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _resolve(client: Client, ref: str) -> dict[str, Any]:
    from headwater.workspace.triggers import JobRefError, resolve_ref

    jobs = _call(client.jobs, include_archived=True)
    try:
        full = resolve_ref(ref, [j["job_ref"] for j in jobs])
    except JobRefError as ex:
        _fail(ex.reason)
    return next(j for j in jobs if j["job_ref"] == full)


# -- up and deploy ------------------------------------------------------------------------------


@app.command()
def up(
    workspace: Annotated[Path, typer.Argument(help="The workspace folder.")] = Path("."),
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback unless you say so.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8765,
    db_url: Annotated[
        str | None, typer.Option(help="Database URL (default: SQLite under WORKSPACE/.headwater).")
    ] = None,
    warm: Annotated[bool, typer.Option(help="Fork runs from a pre-loaded launcher.")] = True,
    max_parallel: Annotated[int, typer.Option(help="Most runs this worker runs at once.")] = 16,
    max_starting: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most runs in their first half second at once (start-up is CPU-heavy), so"
            " a flood of triggers cannot crowd the API off the cores. Default: one per core.",
        ),
    ] = None,
    watch: Annotated[bool, typer.Option(help="Reload the manifest when files change.")] = True,
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "info",
    separate_worker: Annotated[
        bool,
        typer.Option(
            "--separate-worker/--single-process",
            help="Supervise runs in a second process beside the API: answers faster under"
            " load, takes about 50 MB more memory.",
        ),
    ] = False,
    worker_nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="With --separate-worker: niceness of the worker process and its runs, so the"
            " API answers first when runs use every core.",
        ),
    ] = 10,
    api_processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Processes answering the API on one port (more than 1 implies"
            " --separate-worker): for trigger floods on several cores; each takes memory.",
        ),
    ] = 1,
    max_log_lines: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="HEADWATER_MAX_LOG_LINES",
            help="Most lines of output one run stores; past it, a truncation line and the"
            " rest is dropped (the run goes on).",
        ),
    ] = 1_000_000,
    max_log_mb: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="HEADWATER_MAX_LOG_MB",
            help="Most megabytes of output one run stores (as --max-log-lines).",
        ),
    ] = 256,
) -> None:
    """Run everything on this machine: API, scheduler, event dispatcher and a worker."""
    from headwater.app import Runtime
    from headwater.workspace.triggers import humanize

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    workspace = workspace.resolve()
    if not workspace.is_dir():
        _fail(f"{workspace} is not a folder")
    if not (workspace / "__deployment__.py").exists():
        err.print(
            f"[yellow]no __deployment__.py in {escape(str(workspace))}[/yellow]: serving an empty"
            " workspace until a remote deploy (`dlthub deploy`, `headwater deploy --to URL`)"
        )
    gitignore = workspace / ".gitignore"
    if (workspace / "__deployment__.py").exists() and ".headwater" not in (
        gitignore.read_text() if gitignore.exists() else ""
    ):
        # dlt's deploy packages what the workspace's .gitignore does not exclude
        err.print(
            "[yellow]add `.headwater/` to .gitignore[/yellow]: a `dlthub deploy` from this folder"
            " would otherwise upload Headwater's database and keys"
        )
    # bound first: a second `up` on a taken port stops before it touches the store (it would
    # end the first server's active runs as lost) or forks anything
    several = api_processes > 1
    listener = _listen(host, port, several)
    runtime = Runtime(
        workspace,
        db_url=db_url,
        host=host,
        port=port,
        warm=warm,
        max_parallel=max_parallel,
        max_starting=max_starting,
        watch=watch,
        separate_worker=separate_worker,
        worker_nice=worker_nice,
        api_processes=api_processes,
        max_log_lines=max_log_lines,
        max_log_bytes=max_log_mb * 2**20,
    )
    if runtime.start():
        # a forked API process: no banner, and a socket of its own on the same port, so the
        # kernel spreads connections evenly (on one shared socket the busiest process takes
        # most of them)
        own = _listen(host, port, several, probe=False)
        listener.close()
        _serve(runtime, own)
        return
    out.print(f"[bold]Headwater[/bold] serving workspace [cyan]{workspace}[/cyan]")
    out.print(f"  workspace id  {runtime.ws_id}")
    out.print(f"  API           {runtime.url}")
    if runtime.manifest.error:
        out.print(f"  [red]manifest error[/red]  {escape(runtime.manifest.error)}")
    jobs, _ = runtime.store.list_jobs(runtime.ws_id, is_archived=False, limit=1000)
    for job in jobs:
        trig = ", ".join(humanize(t) for t in job["definition"].get("triggers", [])) or "manual"
        out.print(
            f"  job  {job['job_ref']}  [dim]{job['job_type']}; {trig}[/dim]"
            + _not_served(job["job_type"])
        )
    try:
        # commands run outside any workspace use the server started last
        remember_server(workspace, runtime.url, runtime.ws_id, os.getpid())
    except OSError as ex:
        err.print(f"[yellow]could not note this server for the CLI[/yellow]: {escape(str(ex))}")
    sys.stdout.flush()
    _serve(runtime, listener)


def _listen(host: str, port: int, reuse_port: bool = False, probe: bool = True) -> socket.socket:
    """The API's listening socket, as uvicorn would open it; with `reuse_port` one of
    several that share the port (SO_REUSEPORT). `probe`: first make sure nothing holds
    the port, not even another server's SO_REUSEPORT group (which would share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if reuse_port and probe:
        _listen(host, port).close()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as ex:
        _fail(f"cannot listen on {host}:{port}: {ex.strerror}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(runtime: Any, listener: socket.socket) -> None:
    import uvicorn

    app = runtime.api()
    # what start-up loaded (dlt, SQLAlchemy, the app) lives as long as the server: out of
    # the collector's sight, a full collection walks only what requests made since, instead
    # of pausing every request for 150-250 ms (measured on 2 cores under a trigger flood)
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=runtime.host,
            port=runtime.port,
            log_level="warning",
            access_log=False,
            backlog=2048,
        )
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; with these
    # handlers that re-raise is a no-op and the runtime below still stops cleanly
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[listener])
    finally:
        main = not runtime.is_api_copy
        if main:
            log.info("stopping")
        runtime.stop()
        if main:
            log.info("stopped")


@app.command()
def deploy(
    workspace: WorkspaceOpt = Path("."),
    to: Annotated[
        str | None,
        typer.Option(help="Deploy to a remote Headwater at this URL (code, configuration, jobs)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="Admin key of the remote server (or HEADWATER_API_KEY).")
    ] = None,
    workspace_id: Annotated[
        str | None, typer.Option(help="Workspace id of the remote server (default: asked).")
    ] = None,
) -> None:
    """Load `__deployment__.py` again and reconcile jobs; with --to, deploy to a remote server."""
    if to:
        raise typer.Exit(_deploy_remote(workspace, to, key, workspace_id))
    client = _client(workspace)
    result = _call(client.reload)
    if not result["ok"]:
        _fail(
            f"manifest not loaded (the server keeps version {result['version']}):\n"
            + result["error"]
        )
    for job in result["jobs"]:
        out.print(f"  {job['outcome']:<10} {job['job_ref']}")
    for warning in result["warnings"]:
        out.print(f"  [yellow]warning[/yellow] {escape(warning)}")
    out.print(
        f"manifest version {result['version']}" + ("" if result["changed"] else " (unchanged)")
    )


def _deploy_remote(workspace: Path, url: str, key: str | None, ws_id: str | None) -> int:
    """Upload the workspace's code and configuration (when changed), then reconcile its jobs."""
    import os

    from headwater.workspace.manifest import ManifestError, load_manifest
    from headwater.workspace.packages import build_packages

    key = key or os.environ.get("HEADWATER_API_KEY")
    if not key:
        _fail("--key (or HEADWATER_API_KEY) is needed: an admin key of the remote server")
    assert key is not None
    ws_id = ws_id or Client(url, "", key).health()["workspace_id"]
    client = Client(url, ws_id, key)
    try:
        loaded = load_manifest(workspace)
    except ManifestError as ex:
        _fail(f"manifest not loaded: {ex.detail}")
    code, code_hash, config, config_hash = build_packages(workspace.resolve())
    for plural, data, content_hash, req in (
        ("deployments", code, code_hash, b"{}"),
        ("configurations", config, config_hash, None),
    ):
        latest = _call(client.latest_package, plural)
        if latest is not None and latest["content_hash"] == content_hash:
            out.print(f"  {plural:<15} unchanged (version {latest['version']})")
            continue
        stored = _call(client.upload_package, plural, data, req)
        out.print(
            f"  {plural:<15} uploaded version {stored['version']} ({stored['file_count']} files)"
        )
    answer = _call(
        client.deploy,
        {
            "job_definition_engine_version": loaded.manifest["engine_version"],
            "job_definition_hash": loaded.hash,
            "jobs": loaded.jobs,
            "deployment_module": loaded.manifest.get("deployment_module"),
            "description": loaded.manifest.get("description"),
            "dry_run": False,
        },
    )
    receipt = answer["job_receipt"]
    for item in receipt["succeeded"] + receipt["skipped"]:
        out.print(f"  {item['outcome']:<10} {item['job']['job_ref']}")
    out.print(f"deployed to {url} (workspace {ws_id})")
    return 0


# -- jobs -----------------------------------------------------------------------------------------


@job_app.command("ls")
def job_ls(
    workspace: WorkspaceOpt = Path("."),
    archived: Annotated[bool, typer.Option(help="Include archived jobs.")] = False,
) -> None:
    """List jobs with their triggers, next run and last status."""
    from headwater.workspace.triggers import humanize

    client = _client(workspace)
    _manifest_error(_call(client.workspace).get("manifest") or {})
    table = Table("job", "type", "triggers", "next run", "last run", box=None)
    for job in _call(client.jobs, include_archived=archived):
        latest = job.get("latest_job_run")
        state = " [yellow](paused)[/yellow]" if job["is_paused"] else ""
        state += " [dim](archived)[/dim]" if job["is_archived"] else ""
        state += (
            "" if job.get("is_served", is_served(job["job_type"])) else _not_served(job["job_type"])
        )
        trig = ", ".join(humanize(t) for t in job["job_definition"].get("triggers", [])) or "manual"
        last = f"#{latest['number']} {_status(latest['status'])}" if latest else "-"
        table.add_row(
            job["job_ref"] + state, job["job_type"], trig, _when(job["next_scheduled_run_at"]), last
        )
    out.print(table)


def _manifest_error(manifest: dict[str, Any]) -> None:
    """Say so when `__deployment__.py` is broken: the jobs listed are the last good version's."""
    if not manifest.get("error"):
        return
    kind = f" ({manifest['error_type']})" if manifest.get("error_type") else ""
    kept = manifest.get("version")
    since = _when(manifest.get("error_at"))
    out.print(
        f"[bold red]manifest error{escape(kind)}[/bold red] [red]since {since}"
        + (f"; the server keeps version {kept}, listed below" if kept else "; no jobs loaded")
        + ":[/red]",
        soft_wrap=True,
    )
    for line in str(manifest["error"]).splitlines():
        out.print(f"  [red]{escape(line)}[/red]", soft_wrap=True, highlight=False)
    out.print()


@job_app.command("inspect")
def job_inspect(ref: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Show a job: its definition, expanded triggers and latest run."""
    client = _client(workspace)
    job = _call(client.job, _resolve(client, ref)["id"])
    out.print_json(data=job)


@job_app.command("run")
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
            _fail(f"--param takes key=value, got {p!r}")
        params[key] = value
    client = _client(workspace)
    job = _resolve(client, ref)
    result = _call(
        client.trigger,
        job_ids=[job["id"]],
        profile=profile,
        refresh=refresh,
        parameters=params or None,
    )
    for failed in result["failed"]:
        _fail(failed["detail"])
    items = result["succeeded"] + result["skipped"]
    if not items:
        _fail("nothing was triggered")
    item = items[0]
    run = item.get("job_run")
    if item.get("status", "triggered") != "triggered":
        reasons = "; ".join(item.get("reasons") or [])
        _fail(f"{item['job_ref']} not started: {item['status']} ({reasons})", code=2)
    out.print(
        f"started run #{run['number']} of {item['job_ref']} ({item['trigger']})  id {run['id']}"
    )
    if wait:
        raise typer.Exit(_follow(client, run["id"]))


def _follow(client: Client, run_id: str) -> int:
    for line in _call(lambda: list(_iter_follow(client, run_id))):
        del line
    run = _call(client.run, run_id)
    out.print(
        f"run #{run['number']} {_status(run['status'])}"
        + (f": {run['reason']}" if run.get("reason") else "")
    )
    return 0 if run["status"] == "completed" else 1


def _iter_follow(client: Client, run_id: str) -> Any:
    for line in client.follow_logs(run_id):
        _print_line(line)
        yield line


def _print_line(line: dict[str, Any]) -> None:
    from rich.text import Text

    num = f"{line['line_num'] + 1:>4} "
    if line["source"] != "user":
        out.print(Text(num + line["content"], style="dim"), highlight=False)
    else:
        bar = Text("| ", style="red" if line["io_stream"] == "stderr" else "")
        out.print(Text(num) + bar + Text(line["content"]), highlight=False)


@job_app.command("pause")
def job_pause(ref: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Stop a job's timed triggers (manual triggers still work)."""
    client = _client(workspace)
    job = _call(client.set_paused, _resolve(client, ref)["id"], True)
    out.print(f"paused {job['job_ref']}")


@job_app.command("resume")
def job_resume(ref: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Start a paused job's timed triggers again, from now on."""
    client = _client(workspace)
    job = _call(client.set_paused, _resolve(client, ref)["id"], False)
    out.print(f"resumed {job['job_ref']}")


# -- runs ----------------------------------------------------------------------------------------


@run_app.command("ls")
def run_ls(
    workspace: WorkspaceOpt = Path("."),
    job: Annotated[str | None, typer.Option(help="Only runs of this job.")] = None,
    status: Annotated[list[str], typer.Option(help="Only runs in this status (repeatable).")] = [],  # noqa: B006
    limit: int = 50,
) -> None:
    """List runs, newest first."""
    client = _client(workspace)
    job_id = _resolve(client, job)["id"] if job else None
    page = _call(client.runs, job_id=job_id, statuses=status, limit=limit)
    table = Table("id", "job", "#", "status", "trigger", "started", "duration", "reason", box=None)
    for r in page["items"]:
        dur = f"{r['duration_seconds']:.2f}s" if r["duration_seconds"] is not None else "-"
        table.add_row(
            r["id"],
            r["job"]["job_ref"],
            str(r["number"]),
            _status(r["status"]),
            r["trigger"],
            _when(r["started_at"]),
            dur,
            r.get("reason") or "",
        )
    out.print(table)
    out.print(f"[dim]{len(page['items'])} of {page['total']} runs[/dim]")


@run_app.command("show")
def run_show(run_id: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Show one run: its fields, the job's previous run and the rows its pipelines loaded."""
    client = _client(workspace)
    run = _call(client.run, run_id)
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
        "launch_mode",
        "interval_start",
        "interval_end",
        "logs_url",
    )
    out.print(f"[bold]{run['job']['job_ref']}[/bold] run #{run['number']}")
    for key in keys:
        value = run.get(key)
        out.print(f"  {key:<20} {_status(value) if key == 'status' else value}", highlight=False)
    previous = None
    if run["number"] > 1:
        page = _call(client.runs, job_id=run["job"]["id"], number=run["number"] - 1, limit=1)
        previous = page["items"][0] if page["items"] else None
    out.print(
        f"  {'previous run':<20} "
        + (
            f"#{previous['number']} {previous['id']} {_status(previous['status'])}"
            if previous
            else "-"
        ),
        highlight=False,
    )
    if run.get("previous_job_run_id"):
        # a chained run: the upstream run whose outcome fired it
        upstream = _call(client.run, run["previous_job_run_id"])
        out.print(
            f"  {'upstream run':<20} {upstream['job']['job_ref']} #{upstream['number']}"
            f" {upstream['id']} {_status(upstream['status'])}",
            highlight=False,
        )
    _rows_loaded(client, run.get("pipeline_run_summaries") or [])


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
            + (f" ({_status(status)})" if status else ""),
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


@run_app.command("logs")
def run_logs(
    run_id: str,
    workspace: WorkspaceOpt = Path("."),
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow until the run ends.")
    ] = False,
) -> None:
    """Print a run's log."""
    client = _client(workspace)
    if follow:
        raise typer.Exit(_follow(client, run_id))

    def show() -> None:
        for line in client.logs(run_id):
            _print_line(line)

    _call(show)


@run_app.command("cancel")
def run_cancel(run_id: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Cancel a run: SIGTERM, then SIGKILL after the job's grace period."""
    client = _client(workspace)
    run = _call(client.cancel, run_id)
    out.print(f"run #{run['number']} {_status(run['status'])}")


# -- keys ----------------------------------------------------------------------------------------


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[str, typer.Option(help="trigger, read or admin.")] = "trigger",
    expires_in_days: Annotated[int | None, typer.Option(help="Days until it expires.")] = None,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Create an API key; it is printed once and never again."""
    client = _client(workspace)
    key = _call(client.create_key, name, scope, expires_in_days)
    err.print(f"created {key['scope']} key {key['name']!r} ({key['prefix']}...); store it now:")
    print(key["key"])


@key_app.command("ls")
def key_ls(workspace: WorkspaceOpt = Path(".")) -> None:
    """List API keys (never the keys themselves)."""
    client = _client(workspace)
    table = Table(
        "name", "id", "prefix", "scope", "created", "expires", "last used", "state", box=None
    )
    for k in _call(client.keys):
        state = "[red]revoked[/red]" if k["revoked_at"] else "active"
        table.add_row(
            k["name"],
            k["id"],
            k["prefix"] + "...",
            k["scope"],
            _when(k["created_at"]),
            _when(k["expires_at"]),
            _when(k["last_used_at"]),
            state,
        )
    out.print(table)


@key_app.command("revoke")
def key_revoke(id_or_name: str, workspace: WorkspaceOpt = Path(".")) -> None:
    """Revoke a key by name, id or prefix; it stops working at once."""
    client = _client(workspace)
    for k in _call(client.revoke_key, id_or_name):
        out.print(f"revoked {k['name']} ({k['prefix']}...)")


CONNECT_KEYS_FILE = "connect-keys.json"
"""Keys `connect` made, by scope and name, so that it reuses them (mode 0600, as admin.key)."""


@app.command()
def connect(
    workspace: WorkspaceOpt = Path("."),
    name: Annotated[str, typer.Option(help="Name of the key to use or create.")] = "dlthub-cli",
    scope: Annotated[str, typer.Option(help="trigger, read or admin.")] = "admin",
) -> None:
    """Print the settings that point the `dlthub` CLI and SDK at this server.

    The key is created once and reused while it is active (kept in
    WORKSPACE/.headwater/connect-keys.json, readable by its owner only)."""
    found = _server(workspace)
    client = Client(found.url, found.workspace_id, found.api_key)
    key = _connect_key(client, found.workspace, name, scope)
    print(f"export RUNTIME__API_BASE_URL={client.url}")
    print(f"export RUNTIME__API_KEY={key}")
    print(f"export RUNTIME__WORKSPACE_ID={client.ws}")


def _connect_key(client: Client, workspace: Path | None, name: str, scope: str) -> str:
    """The active key `connect` made before for this name and scope, else a new one."""
    home = workspace / ".headwater" if workspace is not None else None
    path = home / CONNECT_KEYS_FILE if home is not None and home.is_dir() else None
    stored: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    slot = f"{client.ws}/{scope}/{name}"
    mine = stored.get(slot)
    if mine:
        now = datetime.now(UTC)
        for k in _call(client.keys):
            if (
                k["id"] == mine.get("id")
                and k["revoked_at"] is None
                and (k["expires_at"] is None or _aware(k["expires_at"]) > now)
            ):
                err.print(f"[dim]using the {scope} key {name!r} ({k['prefix']}...)[/dim]")
                return str(mine["key"])
    if path is None:
        # nowhere to keep it: a name of its own, so `key revoke` can tell it from others
        name = f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    created = _call(client.create_key, name, scope, None)
    err.print(f"[dim]created the {scope} key {name!r} ({created['prefix']}...)[/dim]")
    if path is not None:
        stored[slot] = {"id": created["id"], "key": created["key"]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f, indent=1)
        os.chmod(path, 0o600)
    return str(created["key"])


def _aware(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@app.command("snowflake-sql")
def snowflake_sql_cmd(
    url: Annotated[
        str, typer.Option(help="This server's public base URL, as Snowflake will reach it.")
    ],
    procedure: Annotated[
        str | None,
        typer.Option(
            help="Procedure (function for postgres) to create; default"
            " headwater.public.p_trigger_headwater_job"
            " (postgres: headwater.p_trigger_headwater_job)."
        ),
    ] = None,
    workspace_id: Annotated[
        str | None, typer.Option(help="Workspace id (default: asked from the running server).")
    ] = None,
    target: Annotated[str, typer.Option(help="snowflake, or postgres (pg_net).")] = "snowflake",
    network_rule: Annotated[
        str | None, typer.Option(help="Network rule name (default: nr_headwater beside it).")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Secret name (default: se_headwater_api_key beside it).")
    ] = None,
    integration: Annotated[
        str, typer.Option(help="External access integration name.")
    ] = "i_headwater",
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Print SQL that lets Snowflake (or PostgreSQL with pg_net) trigger this server's jobs."""
    from headwater.integrations import snowflake as sf

    if target not in ("snowflake", "postgres"):
        _fail(f"--target is snowflake or postgres, got {target!r}")
    example = "load"
    if workspace_id is None:
        client = _client(workspace)
        workspace_id = client.ws
        try:
            jobs = [j for j in client.jobs() if j.get("job_type") == "batch"]
            # the example names a job people start by hand: one without triggers, if any
            jobs.sort(key=lambda j: bool(j["job_definition"].get("triggers")))
            names = [j["job_ref"].rsplit(".", 1)[-1] for j in jobs]
            example = next((n for n in names if n == "load"), names[0] if names else example)
        except (ClientError, KeyError):
            pass  # only the example in the comments needs the job list
    try:
        if target == "postgres":
            sql = sf.postgres_sql(
                url, workspace_id, procedure or sf.DEFAULT_PG_FUNCTION, example_job=example
            )
        else:
            sql = sf.snowflake_sql(
                url,
                workspace_id,
                procedure or sf.DEFAULT_PROCEDURE,
                network_rule=network_rule,
                secret=secret,
                integration=integration,
                example_job=example,
            )
    except sf.IntegrationError as ex:
        _fail(str(ex))
    print(sql, end="")


if __name__ == "__main__":
    app()
