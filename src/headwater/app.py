"""Wiring: the one place that puts the components together for `headwater up`.

What each piece does lives with it: the manifest and the code runs start from in
`workspace.deployments`, file watching in `workspace.watch`, which process runs what in
`topology`, the admin key the CLI uses in `cli.find`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from headwater.api import serialize as ser
from headwater.api.app import ApiContext, create_app
from headwater.automations.delivery import Deliverer
from headwater.automations.rules import RuleEngine
from headwater.cli.find import SERVER_FILE, ensure_admin_key
from headwater.core import beacon, leases
from headwater.events.debouncer import Debouncer
from headwater.events.dispatcher import Dispatcher
from headwater.integrations import celery_app
from headwater.leadership import Leadership
from headwater.monitors.dbt_cloud import DbtCloudMonitor
from headwater.scheduler.intervals import IntervalPlanner
from headwater.scheduler.scheduler import Scheduler
from headwater.store.db import check_schema, make_engine, sqlite_url
from headwater.store.packages import PackageStore
from headwater.store.store import Store
from headwater.store.vault import VariableStore, load_key
from headwater.topology import WORKER_NICE, Topology
from headwater.ui import pages
from headwater.worker.remote_dispatch import RemoteDispatcher
from headwater.worker.worker import MAX_LOG_BYTES, MAX_LOG_LINES, Worker, recover_lost_runs
from headwater.workspace.deployments import Deployments, ManifestState
from headwater.workspace.packages import HOME_DIR
from headwater.workspace.watch import start_watching

log = logging.getLogger(__name__)


class Runtime:
    """API, scheduler, event dispatcher and a worker over one store.

    With `separate_worker` the worker, scheduler and dispatcher run in a child
    process forked at start; with `api_processes` > 1 that many processes answer
    the API, and `start` answers True in the forked ones (see `topology`).
    Otherwise everything runs in one process. With a `broker` runs execute on
    `headwater worker` processes on other hosts (`worker/remote_dispatch.py`), which take
    the code as packages: every good reload of the workspace folder packages it
    (`Deployments.package_local`).
    """

    def __init__(
        self,
        workspace: Path,
        *,
        db_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8765,
        warm: bool = True,
        max_parallel: int = 16,
        max_starting: int | None = None,
        watch: bool = True,
        separate_worker: bool = False,
        worker_nice: int = WORKER_NICE,
        api_processes: int = 1,
        max_log_lines: int = MAX_LOG_LINES,
        max_log_bytes: int = MAX_LOG_BYTES,
        broker: str | None = None,
        lease_s: float = leases.LEASE_S,
        upgrade_schema: bool = True,
        remote_workers: bool = False,
    ) -> None:
        """Raises `SchemaError` (store.db) when the database's schema is one this code does
        not know, or an older one and `upgrade_schema` is false."""
        self.workspace = workspace.resolve()
        self.broker = broker
        """With a broker URL runs go to remote workers through Celery (`--executor celery`);
        without, this machine's worker runs them."""
        self.home = self.workspace / HOME_DIR
        self.home.mkdir(exist_ok=True)
        self.host, self.port = host, port
        engine = make_engine(db_url or sqlite_url(self.home / "headwater.db"))
        check_schema(engine, upgrade=upgrade_schema, isolated=True)
        self.store = Store(engine)
        self.packages = PackageStore(engine)
        secret_key = load_key(self.home)
        self.variables = VariableStore(engine, secret_key)
        self.beacon_key = beacon.derive_key(secret_key)
        ws = self.store.ensure_workspace(str(self.workspace), self.workspace.name)
        self.ws_id: str = ws["id"]
        self._watch = watch
        self._stop = threading.Event()
        self.scheduler = Scheduler(self.store, self.ws_id)
        self.planner = IntervalPlanner(self.store, self.ws_id)
        self.dispatcher = Dispatcher(self.store, self.ws_id)
        self.debouncer = Debouncer(self.store, self.ws_id)
        # dbt Cloud tokens may be workspace secrets (`secret:NAME` in headwater.toml)
        self.monitor = DbtCloudMonitor(
            self.store, self.ws_id, variables=lambda: self.variables.resolve(self.ws_id, None)
        )
        self.automations = RuleEngine(self.store, self.ws_id, base_url=lambda: self.url)
        self.deliverer = Deliverer(
            self.store,
            self.ws_id,
            code_dir=lambda: self.deployments.code_dir,
            variables=lambda: self.variables.resolve(self.ws_id, None),
        )
        self.worker = Worker(
            self.store,
            self.workspace,
            self.ws_id,
            max_parallel=max_parallel,
            max_starting=max_starting,
            warm=warm,
            code_dir=lambda: self.deployments.code_dir,
            extra_env=self._run_variables,
            beacon_dsn=lambda run: beacon.dsn(self.url, self.ws_id, run["id"], self.beacon_key),
            max_log_lines=max_log_lines,
            max_log_bytes=max_log_bytes,
        )
        self.remote: RemoteDispatcher | None = None
        if broker is not None:
            celery = celery_app.make_app(broker)
            self.remote = RemoteDispatcher(
                self.store,
                lambda run_id, attempt, pool: celery_app.send_run(celery, run_id, attempt, pool),
                lease_s=lease_s,
            )
        # several servers may share a PostgreSQL database: one runs the engine at a time
        self._engine_running = False
        self.leadership: Leadership | None = None
        if engine.dialect.name == "postgresql":
            self.leadership = Leadership(
                self.store, on_acquired=self._start_components, lease_s=lease_s
            )
        self.topology = Topology(
            engine,
            self.store.notifier,
            self.home,
            start_engine=self._start_engine,
            stop_engine=self._stop_engine,
            separate_worker=separate_worker,
            worker_nice=worker_nice,
            api_processes=api_processes,
        )
        self.deployments = Deployments(
            self.store,
            self.packages,
            self.ws_id,
            self.workspace,
            self.home,
            base_env=self.worker.base_env,
            data_dir=self.worker.data_dir,
            refresh_launcher=self._refresh_launcher,
            changed=self._share_state,
            variables=self.variables,
            # packages of the folder for workers elsewhere (a broker implies them)
            remote_workers=remote_workers or broker is not None,
        )

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def manifest(self) -> ManifestState:
        return self.deployments.manifest

    @property
    def is_api_copy(self) -> bool:
        """True in an API process forked by `start` (not the one that started the server)."""
        return self.topology.is_api_copy

    def api(self) -> Any:
        ctx = self._api_context()
        app = create_app(ctx)
        # the pages sit on the API's context and keys
        app.include_router(pages.router(ctx, app.state.auth))
        app.mount("/ui/static", pages.static_files(), name="ui-static")
        return app

    def _api_context(self) -> ApiContext:
        d = self.deployments
        return ApiContext(
            store=self.store,
            ws_id=self.ws_id,
            base_url=lambda: self.url,
            reload_manifest=self.reload_manifest,
            manifest_status=d.status,
            packages=self.packages,
            accept_package=d.accept_package,
            package_stored=d.package_stored,
            deploy=self.deploy_remote,
            variables=self.variables,
            webhook_secret=lambda: os.environ.get("HEADWATER_WEBHOOK_SECRET"),
            default_profile=d.default_profile,
            beacon_key=self.beacon_key,
            package_archive=d.package_archive,
            run_environment=d.run_environment,
        )

    def default_profile(self) -> str:
        """The profile dlt runs a run with when neither the run nor its job names one."""
        return self.deployments.default_profile()

    def reload_manifest(self, refresh_launcher: bool = True) -> dict[str, Any]:
        """Read `__deployment__.py` again; a bad manifest keeps the last good one."""
        return self.deployments.reload(refresh_launcher=refresh_launcher)

    def deploy_remote(self, body: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        """`-deploy`, answered as the API's job receipt."""
        result = self.deployments.deploy(body, dry_run)
        return ser.deploy_answer(result, self.url, self.default_profile())

    def start(self) -> bool:
        """Start the server's processes and threads; True in a forked API process."""
        if self.leadership is None:
            self._recover()
        if not self.deployments.remote:
            self.reload_manifest(refresh_launcher=False)
        else:
            self.deployments.log_code_source()
        if self.topology.start(
            api_commands={"api_state": self.deployments.apply_shared_state},
            worker_commands={"refresh_launcher": self._on_refresh_launcher},
        ):
            return True
        if self._watch:
            start_watching(self.workspace, self.reload_manifest, self._stop)
        ensure_admin_key(self.store, self.ws_id, self.home)
        (self.home / SERVER_FILE).write_text(
            json.dumps({"url": self.url, "workspace_id": self.ws_id, "pid": os.getpid()})
        )
        return False

    def stop(self) -> None:
        self._stop.set()
        self.topology.stop()
        if self.is_api_copy:
            return
        try:
            (self.home / SERVER_FILE).unlink()
        except FileNotFoundError:
            pass

    def _start_engine(self) -> None:
        if self.leadership is not None:
            # on a shared database: the engine starts once this server holds the lease
            self.leadership.start()
            return
        self._start_components()

    def _start_components(self) -> None:
        self._engine_running = True
        if self.leadership is not None:
            self._recover()
        if self.remote is not None:
            self.remote.start()
        else:
            self.worker.start()
        self.dispatcher.start()
        self.debouncer.start()
        self.monitor.start()
        self.automations.start()
        self.deliverer.start()
        self.scheduler.start()
        self.planner.start()

    def _stop_engine(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()
        if not self._engine_running:
            return  # a standby: the engine never started here
        self._engine_running = False
        self._stop_components()
        if self.leadership is not None:
            self.leadership.release()

    def _stop_components(self) -> None:
        self.scheduler.stop()
        self.planner.stop()
        self.dispatcher.stop()
        self.debouncer.stop()
        self.monitor.stop()
        self.automations.stop()
        self.deliverer.stop()
        if self.remote is not None:
            self.remote.stop()
        else:
            self.worker.stop()

    def _recover(self) -> None:
        """End the runs the engine's last holder left active (its own processes)."""
        lost = recover_lost_runs(self.store)
        if lost:
            log.warning("%d run(s) were active when Headwater stopped; marked failed", len(lost))

    def _share_state(self) -> None:
        """Tell the other API processes what this one learnt of the manifest."""
        if self.topology.bridge is not None:
            self.topology.command("api_state", **self.deployments.shared_state())

    def _refresh_launcher(self, keep_previous: bool) -> None:
        """Runs start from new code: the worker warms a launcher of it, wherever it runs."""
        sent = self.topology.command(
            "refresh_launcher",
            code_dir=str(self.deployments.code_dir),
            keep_previous=keep_previous,
        )
        if not sent and not self.topology.separate_worker:
            self.worker.refresh_launcher(keep_previous=keep_previous)

    def _on_refresh_launcher(self, args: dict[str, Any]) -> None:
        self.deployments.code_dir = Path(args["code_dir"])
        self.worker.refresh_launcher(keep_previous=bool(args["keep_previous"]))

    def _run_variables(self, run: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The workspace's variables for a run, with its profile's over the workspace scope,
        and the values of the secret ones (masked in the run's log)."""
        return self.deployments.run_environment(run)
