"""`headwater up`: start the server on this machine, and serve its API."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from headwater.cli.console import MaxLogLinesOpt, MaxLogMbOpt, err, fail, not_served, out
from headwater.cli.find import remember_server

log = logging.getLogger("headwater")


def up(
    workspace: Annotated[Path, typer.Argument(help="The workspace folder.")] = Path("."),
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback unless you say so.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8765,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url",
            "--db",
            envvar="HEADWATER_DB_URL",
            help="Database URL (default: SQLite under WORKSPACE/.headwater).",
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            help="local: this machine runs the runs. celery: `headwater worker`s on any host"
            " run them, dispatched through --broker (needs a PostgreSQL --db).",
        ),
    ] = "local",
    broker: Annotated[
        str | None,
        typer.Option(
            envvar="HEADWATER_BROKER", help="With --executor celery: amqp://… or redis://…"
        ),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(
            min=1.0,
            envvar="HEADWATER_LEASE_SECONDS",
            help="With --executor celery: a dispatched run no worker took is sent again"
            " after twice this.",
        ),
    ] = 15.0,
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
    max_log_lines: MaxLogLinesOpt = 1_000_000,
    max_log_mb: MaxLogMbOpt = 256,
    metrics_address: Annotated[
        str | None,
        typer.Option(
            help="Also serve /metrics without a key on HOST:PORT (a private address for"
            " Prometheus); the API's port always serves it to a read key.",
        ),
    ] = None,
    upgrade: Annotated[
        bool,
        typer.Option(
            "--upgrade/--no-upgrade",
            help="Migrate an older database schema at start. With --no-upgrade an older"
            " schema stops the server instead, for `headwater db upgrade` to migrate.",
        ),
    ] = True,
) -> None:
    """Run everything on this machine: API, scheduler, event dispatcher and a worker."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    workspace = workspace.resolve()
    if not workspace.is_dir():
        fail(f"{workspace} is not a folder")
    metrics_at = _address(metrics_address) if metrics_address else None
    if executor not in ("local", "celery"):
        fail(f"--executor {executor}: local or celery")
    if executor == "celery":
        if not broker:
            fail("--executor celery needs --broker (amqp://guest@host// or redis://host)")
        if not (db_url or "").startswith("postgresql"):
            fail(
                "--executor celery needs --db postgresql://…: workers on other hosts"
                " share the server's database"
            )
    elif broker:
        fail("--broker is for --executor celery")
    if separate_worker or api_processes > 1:
        # several processes count API latency and rejections: prometheus-client keeps each
        # one's values in this folder and a scrape sums them (set before it is imported)
        _multiprocess_metrics(workspace / ".headwater" / "prometheus")
    from headwater.app import Runtime
    from headwater.store.db import SchemaError
    from headwater.workspace.triggers import humanize

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
    try:
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
            upgrade_schema=upgrade,
            broker=broker if executor == "celery" else None,
            lease_s=lease_seconds,
        )
    except SchemaError as ex:
        fail(str(ex))
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
    if executor == "celery":
        out.print(f"  runs          on `headwater worker`s, through {escape(_no_password(broker))}")
    if runtime.manifest.error:
        out.print(f"  [red]manifest error[/red]  {escape(runtime.manifest.error)}")
    jobs, _ = runtime.store.list_jobs(runtime.ws_id, is_archived=False, limit=1000)
    for job in jobs:
        trig = ", ".join(humanize(t) for t in job["definition"].get("triggers", [])) or "manual"
        out.print(
            f"  job  {job['job_ref']}  [dim]{job['job_type']}; {trig}[/dim]"
            + not_served(job["job_type"])
        )
    if metrics_at is not None:
        from prometheus_client import start_http_server

        from headwater.api import metrics

        start_http_server(
            metrics_at[1], metrics_at[0], registry=metrics.registry(runtime.store, runtime.ws_id)
        )
        out.print(f"  metrics       http://{metrics_address}/metrics")
    try:
        # commands run outside any workspace use the server started last
        remember_server(workspace, runtime.url, runtime.ws_id, os.getpid())
    except OSError as ex:
        err.print(f"[yellow]could not note this server for the CLI[/yellow]: {escape(str(ex))}")
    sys.stdout.flush()
    _serve(runtime, listener)


def _no_password(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url or "").render_as_string(hide_password=True)
    except Exception:
        return "the broker"


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        fail(f"--metrics-address {value!r}: write it as HOST:PORT, e.g. 127.0.0.1:9108")
    return host or "127.0.0.1", int(port)


def _multiprocess_metrics(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)  # values of a previous server are stale
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(folder))


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
        fail(f"cannot listen on {host}:{port}: {ex.strerror}")
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
