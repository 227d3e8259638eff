"""`headwater worker`: run runs on this host for a server on another (`--executor celery`);
`headwater worker ls`: the workers a server knows, their pools and slots."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from headwater.cli.console import (
    MaxLogLinesOpt,
    MaxLogMbOpt,
    WorkspaceOpt,
    call,
    client_for,
    fail,
    out,
)

app = typer.Typer(
    help="Run a worker on this host (`headwater worker --db ... --broker ...`), or list workers.",
    invoke_without_command=True,
)


@app.callback()
def worker(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="HEADWATER_DB_URL", help="The server's PostgreSQL URL (postgresql://…)."
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(envvar="HEADWATER_BROKER", help="Celery broker URL (amqp://…, redis://…)."),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            envvar="HEADWATER_URL",
            help="The server's URL: code and variables come from it. Several servers of one"
            " database: their URLs separated by commas, asked in turn while one is down.",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="HEADWATER_API_KEY",
            help="A worker key of the server (`key create --scope worker`).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="This worker's name (default: HOST:PID).")
    ] = None,
    slots: Annotated[int, typer.Option(min=1, max=512, help="Most runs at once.")] = 4,
    pool: Annotated[
        list[str] | None,
        typer.Option("--pool", help="A pool (Celery queue) to serve; repeat for several."),
    ] = None,
    home: Annotated[
        Path,
        typer.Option(help="This worker's folder: code cache, runs' data."),
    ] = Path(".headwater-worker"),
    warm: Annotated[bool, typer.Option(help="Fork runs from a pre-loaded launcher.")] = True,
    lease_seconds: Annotated[
        float,
        typer.Option(
            min=1.0,
            envvar="HEADWATER_LEASE_SECONDS",
            help="A run is lost (failed or retried) when this worker has not renewed its"
            " lease for this long.",
        ),
    ] = 15.0,
    max_log_lines: MaxLogLinesOpt = 1_000_000,
    max_log_mb: MaxLogMbOpt = 256,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run dispatched runs on this host until stopped (Ctrl-C or SIGTERM: the runs still
    going are stopped within their grace periods)."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [
        flag
        for flag, value in (
            ("--db", db),
            ("--broker", broker),
            ("--server", server),
            ("--key", key),
        )
        if not value
    ]
    if missing:
        fail(
            f"{', '.join(missing)} needed (or HEADWATER_DB_URL, HEADWATER_BROKER,"
            " HEADWATER_URL, HEADWATER_API_KEY)"
        )
    assert db and broker and server and key
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from headwater.core.errors import HeadwaterError
    from headwater.integrations import celery_app
    from headwater.store.db import check_schema, make_engine
    from headwater.store.notify import PgWakeBridge
    from headwater.store.store import Store
    from headwater.worker.remote import RemoteWorker
    from headwater.worker.remote_code import RemoteCode

    if not db.startswith("postgresql"):
        fail("--db must be the server's PostgreSQL database: workers on other hosts share it")
    engine = make_engine(db)
    try:
        # a worker never migrates: the server does (`headwater db upgrade`)
        check_schema(engine, upgrade=False)
        code = RemoteCode(server, key, home / "cache")
        store = Store(engine)
        remote = RemoteWorker(
            store,
            home,
            name=name or f"{socket.gethostname()}:{os.getpid()}",
            pools=pool or ["default"],
            slots=slots,
            code_folder=code.run_folder,
            variables=code.environment,
            beacon_dsn=code.beacon_dsn,
            warm=warm,
            lease_s=lease_seconds,
            max_log_lines=max_log_lines,
            max_log_bytes=max_log_mb * 2**20,
        )
    except (HeadwaterError, RuntimeError) as ex:
        fail(str(ex))
    celery = celery_app.make_app(broker)
    celery_app.register_runner(celery, remote.run)
    # cancels made through the server reach this host at once, over LISTEN/NOTIFY
    bridge = PgWakeBridge.for_engine(store.notifier, engine)
    try:
        remote.start()
    except HeadwaterError as ex:
        if bridge is not None:
            bridge.close()
        fail(str(ex))
    out.print(
        f"[bold]Headwater worker[/bold] {escape(remote.name)}: pools {', '.join(remote.pools)},"
        f" {slots} slots, server {escape(server)}"
    )
    # Celery's own handlers stop consuming on SIGTERM/SIGINT and wait for the tasks; the
    # runs they wait on end once the supervisor stops them (within their grace periods)
    stopping = threading.Event()

    def _stop_runs(*_: object, **__: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=remote.stop, name="worker-stop", daemon=True).start()

    from celery.signals import worker_ready, worker_shutting_down

    worker_shutting_down.connect(_stop_runs, weak=False)
    controller = celery.Worker(
        hostname=f"{remote.name}@{socket.gethostname()}",
        pool="threads",
        concurrency=slots,
        queues=remote.pools,
        loglevel=log_level.upper(),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        quiet=True,
    )

    def _wake_often(**_: object) -> None:
        # Celery's SIGTERM handler only sets a flag, which its event loop reads when its
        # poll returns: idle, that was up to 15 s (the next AMQP heartbeat check) after
        # Ctrl-C. A timer every half second makes a stop take effect at once.
        hub = getattr(controller, "hub", None)
        if hub is not None:
            hub.call_repeatedly(0.5, lambda: None)

    worker_ready.connect(_wake_often, weak=False)
    try:
        controller.start()
    finally:
        _stop_runs()
        remote.stop()
        if bridge is not None:
            bridge.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@app.command("ls")
def worker_ls(workspace: WorkspaceOpt = Path(".")) -> None:
    """The workers of the server: live or not, pools, slots in use, last heartbeat."""
    client = client_for(workspace)
    answer = call(client.workers)
    now = datetime.now(UTC)
    table = Table("worker", "host", "pools", "slots", "in use", "heartbeat", box=None)
    for w in answer["items"]:
        beat = datetime.fromisoformat(w["heartbeat_at"])
        ago = f"{(now - beat).total_seconds():.0f}s ago"
        state = (
            ""
            if w["live"]
            else (" [dim](stopped)[/dim]" if w["stopped_at"] else " [red](lost)[/red]")
        )
        table.add_row(
            escape(w["name"]) + state,
            escape(w["host"]),
            ", ".join(w["pools"]),
            str(w["slots"]),
            str(w["in_use"]),
            ago,
        )
    out.print(table)
    pools = Table("pool", "live workers", "slots", "runs", "free", box=None)
    for p in answer["pools"]:
        pools.add_row(
            p["pool"], str(p["live_workers"]), str(p["slots"]), str(p["runs"]), str(p["free"])
        )
    out.print(pools)
