"""Wiring: the one place that puts the components together for `headwater up`."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from headwater.api.app import ApiContext, create_app
from headwater.core import beacon
from headwater.events.dispatcher import Dispatcher
from headwater.scheduler.scheduler import Scheduler
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.notify import WakeBridge
from headwater.store.packages import PackageStore
from headwater.store.store import DeployedJob, Store
from headwater.store.vault import VariableStore, load_key
from headwater.ui import pages
from headwater.worker.worker import MAX_LOG_BYTES, MAX_LOG_LINES, Worker, recover_lost_runs
from headwater.workspace.launch import dlt_profile, job_specs, served_local_dir
from headwater.workspace.manifest import ManifestError, from_manifest, load_manifest
from headwater.workspace.packages import (
    PackageMissing,
    ReadPackage,
    runtime_dir,
    unpack_package,
)
from headwater.workspace.packages import hash_dir_name as hash_dir

log = logging.getLogger(__name__)

HOME_DIR = ".headwater"
SERVER_FILE = "server.json"
ADMIN_KEY_FILE = "admin.key"
WORKER_NICE = 10
WORKER_STOP_S = 15.0
"""How long the worker process may take to stop its loops before it is killed."""
"""Default scheduling priority of the worker process and its runs, below the API's."""
WATCHED_SUFFIXES = (".py", ".toml", ".json", ".yaml", ".yml", ".sql")


@dataclass
class ManifestState:
    """What the server knows of the workspace's manifest: the last good one and the last error."""

    version: int | None = None
    hash: str | None = None
    warnings: list[str] = field(default_factory=list)
    loaded_at: datetime | None = None
    error: str | None = None
    error_type: str | None = None
    error_at: datetime | None = None
    code_source: str = "local"
    """Where runs take their code: `local` (the served folder) or `package` (a remote deploy)."""
    code_package_version: int | None = None
    config_package_version: int | None = None
    code_dir: str | None = None
    data_dir: str | None = None
    """dlt's pipeline state of every run, whatever the code source."""
    local_dir: str | None = None
    """dlt's local dir (relative destination paths) of a run under the default profile,
    whatever the code source."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "hash": self.hash,
            "warnings": self.warnings,
            "loaded_at": self.loaded_at,
            "error": self.error,
            "error_type": self.error_type,
            "error_at": self.error_at,
            "code_source": self.code_source,
            "code_package_version": self.code_package_version,
            "config_package_version": self.config_package_version,
            "code_dir": self.code_dir,
            "data_dir": self.data_dir,
            "local_dir": self.local_dir,
        }


class Runtime:
    """API, scheduler, event dispatcher and a worker over one store.

    With `separate_worker` the worker, scheduler and dispatcher run in a child
    process forked at start, so the API and the runs' supervision each
    have a core (and an interpreter lock) of their own; the processes wake
    each other over a `WakeBridge`. Otherwise everything runs in one process.
    With `api_processes` > 1 (which implies `separate_worker`) that many processes
    answer the API on one listening socket; `start` answers True in the forked ones,
    which serve the API only and learn of manifest changes over the bridge.
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
    ) -> None:
        self.workspace = workspace.resolve()
        self.api_processes = max(1, api_processes)
        self.separate_worker = separate_worker or self.api_processes > 1
        self.is_api_copy = False
        """True in an API process forked by `start` (not the one that started the server)."""
        self._api_pids: list[int] = []
        self.worker_nice = worker_nice
        self._worker_pid: int | None = None
        self._worker_watch: threading.Thread | None = None
        self._bridge: WakeBridge | None = None
        self.home = self.workspace / HOME_DIR
        self.home.mkdir(exist_ok=True)
        self.host, self.port = host, port
        engine = make_engine(db_url or sqlite_url(self.home / "headwater.db"))
        upgrade(engine, isolated=True)
        self.store = Store(engine)
        self.packages = PackageStore(engine)
        secret_key = load_key(self.home)
        self.variables = VariableStore(engine, secret_key)
        self.beacon_key = beacon.derive_key(secret_key)
        ws = self.store.ensure_workspace(str(self.workspace), self.workspace.name)
        self.ws_id: str = ws["id"]
        self.manifest = ManifestState()
        self._reload_lock = threading.Lock()
        self._watch = watch
        self._stop = threading.Event()
        self.scheduler = Scheduler(self.store, self.ws_id)
        self.dispatcher = Dispatcher(self.store, self.ws_id)
        self._code_dir = self.workspace
        self.worker = Worker(
            self.store,
            self.workspace,
            self.ws_id,
            max_parallel=max_parallel,
            max_starting=max_starting,
            warm=warm,
            code_dir=lambda: self._code_dir,
            extra_env=self._run_variables,
            beacon_dsn=lambda run: beacon.dsn(self.url, self.ws_id, run["id"], self.beacon_key),
            max_log_lines=max_log_lines,
            max_log_bytes=max_log_bytes,
        )
        self._remote = False
        code_id: str | None = None
        config_id: str | None = None
        latest = self.store.latest_manifest(self.ws_id)
        if latest is not None:
            self.manifest.version, self.manifest.hash = latest["version"], latest["hash"]
            self.manifest.warnings = latest["warnings"]
            self.manifest.loaded_at = latest["created_at"]
            if latest["code_package_id"]:
                # the newest version came from a remote deploy: its package is the code
                self._remote = True
                self._code_dir, code_id, config_id = self._deployed_code_dir(latest["version"])
        self._describe_code(
            self.packages.get(code_id) if code_id else None,
            self.packages.get(config_id) if config_id else None,
        )

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def api(self) -> Any:
        ctx = self._api_context()
        app = create_app(ctx)
        # the pages sit on the API's context and keys
        app.include_router(pages.router(ctx, app.state.auth))
        return app

    def _api_context(self) -> ApiContext:
        return ApiContext(
            store=self.store,
            ws_id=self.ws_id,
            base_url=lambda: self.url,
            reload_manifest=self.reload_manifest,
            manifest_status=self.manifest.as_dict,
            packages=self.packages,
            accept_package=self.accept_package,
            package_stored=self._package_stored,
            deploy=self.deploy_remote,
            variables=self.variables,
            webhook_secret=lambda: os.environ.get("HEADWATER_WEBHOOK_SECRET"),
            default_profile=self.default_profile,
            beacon_key=self.beacon_key,
        )

    def default_profile(self) -> str:
        """The profile dlt runs a run with when neither the run nor its job names one."""
        return dlt_profile({}, {}, self._code_dir, self.worker.base_env)

    def start(self) -> bool:
        """Start the server's processes and threads; True in a forked API process."""
        lost = recover_lost_runs(self.store)
        if lost:
            log.warning("%d run(s) were active when Headwater stopped; marked failed", len(lost))
        if not self._remote:
            self.reload_manifest(refresh_launcher=False)
        else:
            log.info(
                "code source: deployment package v%s (configuration v%s) in %s; data in %s,"
                " pipeline state in %s",
                self.manifest.code_package_version,
                self.manifest.config_package_version,
                self._code_dir,
                self.manifest.local_dir,
                self.manifest.data_dir,
            )
        if self.separate_worker:
            # forks come before any thread starts: a thread's lock would stay held in the child
            for _ in range(self.api_processes - 1):
                if self._fork_api_process():
                    return True
            self._fork_worker_process()
            self._bridge = self._api_bridge()
        else:
            self._start_engine()
        if self._watch:
            threading.Thread(target=self._watch_loop, name="watcher", daemon=True).start()
        self.ensure_admin_key()
        (self.home / SERVER_FILE).write_text(
            json.dumps({"url": self.url, "workspace_id": self.ws_id, "pid": os.getpid()})
        )
        return False

    def _fork_api_process(self) -> bool:
        """Fork one more API process; True in the child."""
        pid = os.fork()
        if pid:
            self._api_pids.append(pid)
            return False
        self.is_api_copy = True
        self._api_pids = []
        _die_with_parent()
        self.store.engine.dispose(close=False)  # the parent's connections stay the parent's
        self._bridge = self._api_bridge()
        return True

    def _api_bridge(self) -> WakeBridge:
        """An API process's bridge: it follows what another API process learns of the
        manifest (a remote deploy or a reload answered there)."""
        bridge = WakeBridge(self.store.notifier, self.home / "peers")
        bridge.on("api_state", self._on_api_state)
        return bridge

    def _share_state(self) -> None:
        if self._bridge is None:
            return
        state = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in self.manifest.as_dict().items()
        }
        self._bridge.command(
            "api_state", manifest=state, code_dir=str(self._code_dir), remote=self._remote
        )

    def _on_api_state(self, args: dict[str, Any]) -> None:
        with self._reload_lock:
            for name, value in args["manifest"].items():
                if name in ("loaded_at", "error_at") and value is not None:
                    value = datetime.fromisoformat(value)
                setattr(self.manifest, name, value)
            self._code_dir, self._remote = Path(args["code_dir"]), bool(args["remote"])

    def _start_engine(self) -> None:
        self.worker.start()
        self.dispatcher.start()
        self.scheduler.start()

    def _fork_worker_process(self) -> None:
        """Fork the worker process; called before this process starts any thread."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self._worker_process_main(parent)
            except BaseException:
                log.exception("worker process failed")
                code = 1
            finally:
                os._exit(code)
        self._worker_pid = pid
        self._worker_watch = threading.Thread(
            target=self._watch_worker_process, name="worker-watch", daemon=True
        )
        self._worker_watch.start()

    def _worker_process_main(self, parent: int) -> None:
        stop = threading.Event()
        # Ctrl-C reaches the whole process group: the parent decides when this one stops
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        _die_with_parent()
        # the runs this process starts inherit this: under a burst of triggers the API
        # keeps answering and runs queue, instead of the API waiting on the runs' CPU
        os.nice(self.worker_nice)
        # connections are the parent's: this process opens its own
        self.store.engine.dispose(close=False)
        bridge = WakeBridge(self.store.notifier, self.home / "peers")
        bridge.on("refresh_launcher", self._on_refresh_launcher)
        self._start_engine()
        # as the API process does (cli `_serve`): full collections stay short, so this
        # process never holds the write lock through a long pause. Done here, not before the
        # fork: shared pages would then be copied one refcount at a time, under load
        gc.collect()
        gc.freeze()
        while not stop.wait(1.0):
            if os.getppid() != parent:
                break
        self.scheduler.stop()
        self.dispatcher.stop()
        self.worker.stop()
        bridge.close()

    def _on_refresh_launcher(self, args: dict[str, Any]) -> None:
        self._code_dir = Path(args["code_dir"])
        self.worker.refresh_launcher(keep_previous=bool(args["keep_previous"]))

    def _refresh_launcher(self, keep_previous: bool) -> None:
        if self._bridge is not None:
            self._bridge.command(
                "refresh_launcher", code_dir=str(self._code_dir), keep_previous=keep_previous
            )
        elif not self.separate_worker:
            self.worker.refresh_launcher(keep_previous=keep_previous)

    def _watch_worker_process(self) -> None:
        assert self._worker_pid is not None
        _pid, status = os.waitpid(self._worker_pid, 0)
        if self._stop.is_set():
            return
        log.error(
            "the worker process ended unexpectedly (%s); stopping the server",
            os.waitstatus_to_exitcode(status),
        )
        os.kill(os.getpid(), signal.SIGTERM)

    def ensure_admin_key(self) -> Path:
        """The local admin key the `headwater` CLI uses, in a file only its owner can read."""
        path = self.home / ADMIN_KEY_FILE
        if path.exists():
            row = self.store.find_key(path.read_text().strip())
            now = datetime.now(UTC)
            if (
                row is not None
                and row["workspace_id"] == self.ws_id
                and row["scope"] == "admin"
                and row["revoked_at"] is None
                and (row["expires_at"] is None or row["expires_at"] > now)
            ):
                os.chmod(path, 0o600)
                return path
        _row, secret = self.store.create_key(self.ws_id, "local-admin", "admin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        return path

    def stop(self) -> None:
        self._stop.set()
        if self.is_api_copy:
            if self._bridge is not None:
                self._bridge.close()
            return
        _stop_children(self._api_pids, WORKER_STOP_S)
        if self._worker_pid is not None and self._worker_watch is not None:
            # SIGTERM, then SIGKILL if it has not ended in time; the watcher reaps it
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self._worker_watch.is_alive():
                    with contextlib.suppress(ProcessLookupError):  # reaped meanwhile
                        os.kill(self._worker_pid, sig)
                    self._worker_watch.join(WORKER_STOP_S)
        elif not self.separate_worker:
            self.scheduler.stop()
            self.dispatcher.stop()
            self.worker.stop()
        if self._bridge is not None:
            self._bridge.close()
        try:
            (self.home / SERVER_FILE).unlink()
        except FileNotFoundError:
            pass

    def reload_manifest(self, refresh_launcher: bool = True) -> dict[str, Any]:
        """Read `__deployment__.py` again; a bad manifest keeps the last good one.

        Only a good manifest replaces the warm launcher: the running one holds the
        last good code in memory, so runs forked from it keep working while the
        files on disk are broken.
        """
        with self._reload_lock:
            now = datetime.now(UTC)
            try:
                loaded = load_manifest(self.workspace)
            except ManifestError as ex:
                self.manifest.error, self.manifest.error_type, self.manifest.error_at = (
                    ex.detail,
                    ex.error_type or None,
                    now,
                )
                log.error(
                    "manifest not loaded, keeping version %s: %s", self.manifest.version, ex.detail
                )
                self._share_state()
                return {
                    "ok": False,
                    "error": ex.detail,
                    "error_type": ex.error_type,
                    **self._summary(),
                }
            version, outcomes = self.store.deploy(
                self.ws_id,
                loaded.manifest,
                loaded.hash,
                loaded.warnings,
                job_specs(loaded),
                loaded.manifest.get("deployment_module"),
            )
            self.manifest.error = self.manifest.error_type = self.manifest.error_at = None
            self.manifest.warnings = loaded.warnings
            # local files were edited: they are the code again, even after a remote deploy
            moved = self._code_dir != self.workspace
            if moved:
                log.warning(
                    "code source: the workspace folder %s again (its files changed), instead of"
                    " deployment package v%s; data stays in %s, pipeline state in %s",
                    self.workspace,
                    self.manifest.code_package_version,
                    self.manifest.local_dir,
                    self.manifest.data_dir,
                )
            self._code_dir, self._remote = self.workspace, False
            self._describe_code(None, None)
            if refresh_launcher:
                self._refresh_launcher(keep_previous=not moved)
            if version is not None:
                self.manifest.version, self.manifest.hash, self.manifest.loaded_at = (
                    version,
                    loaded.hash,
                    now,
                )
            log.info(describe_reload(version, self.manifest.version, outcomes))
            self._share_state()
            return {
                "ok": True,
                "changed": version is not None,
                "jobs": [{"job_ref": o.job["job_ref"], "outcome": o.outcome} for o in outcomes],
                **self._summary(),
            }

    def _run_variables(self, run: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The workspace's variables for a run, with its profile's over the workspace scope,
        and the values of the secret ones (masked in the run's log)."""
        version = self.store.get_job_version(run["job_version_id"])
        job_def = version["definition"] if version else {}
        profile = dlt_profile(run, job_def, self._code_dir, self.worker.base_env)
        return self.variables.resolve_for_run(self.ws_id, profile)

    # -- remote deploy ----------------------------------------------------------------------------

    def accept_package(self, kind: str, upload: BinaryIO) -> ReadPackage:
        """Check an uploaded package and unpack it once per content hash under
        `.headwater/packages`; raises `PackageError` with nothing stored."""
        package, _folder = unpack_package(upload, self.home / "packages" / kind)
        return package

    def _package_stored(self, row: dict[str, Any]) -> bool:
        folder = self.home / "packages" / row["kind"] / hash_dir(row["content_hash"])
        return folder.is_dir()

    def _package_dir(self, code_id: str, config_id: str | None) -> Path:
        """The run folder of a code and a configuration package; `PackageMissing` when
        either is not on disk (or the folder cannot be built)."""
        root = self.home / "packages"
        dirs: list[Path] = []
        for kind, package_id in (("deployment", code_id), ("configuration", config_id)):
            if package_id is None:
                continue
            row = self.packages.get(package_id)
            if row is None or not row["content_hash"]:
                raise PackageMissing(f"{kind} package {package_id} was never stored")
            folder = root / kind / hash_dir(row["content_hash"])
            if not folder.is_dir():
                raise PackageMissing(f"{kind} version {row['version']} is missing: no {folder}")
            dirs.append(folder)
        try:
            return runtime_dir(root / "run", dirs[0], dirs[1] if len(dirs) > 1 else None)
        except OSError as ex:
            raise PackageMissing(f"the run folder cannot be built: {ex}") from ex

    def _deployed_code_dir(self, newest: int) -> tuple[Path, str | None, str | None]:
        """At start: the run folder of the newest remote deploy whose packages are on disk,
        with its code and configuration package ids. When the newest one's are missing, runs
        use an older deploy's (or, with none left, the workspace folder: no ids) and the
        manifest status says so; the server starts either way."""
        missing: list[str] = []
        found: tuple[int, Path, str, str | None] | None = None
        for version, code_id, config_id in self.packages.deployed(self.ws_id):
            try:
                found = version, self._package_dir(code_id, config_id), code_id, config_id
                break
            except PackageMissing as ex:
                missing.append(f"manifest version {version}: {ex}")
        if not missing and found is not None:
            return found[1], found[2], found[3]
        using = (
            f"runs use the code of manifest version {found[0]} ({found[1]})"
            if found is not None
            else f"no deployed code is left on disk; runs use the workspace folder {self.workspace}"
        )
        self.manifest.error = (
            f"the code of manifest version {newest} is not on disk ({'; '.join(missing[:3])});"
            f" {using}. Deploy again to restore it"
        )
        self.manifest.error_type, self.manifest.error_at = "PackageMissing", datetime.now(UTC)
        log.error("%s", self.manifest.error)
        if found is None:
            return self.workspace, None, None
        return found[1], found[2], found[3]

    def _describe_code(self, code: dict[str, Any] | None, config: dict[str, Any] | None) -> None:
        """Record where runs take their code from (`code`: the package row, None = the
        folder) and where their data lives, which is the same for every code source."""
        m = self.manifest
        m.code_source = "package" if code is not None else "local"
        m.code_package_version = code["version"] if code is not None else None
        m.config_package_version = config["version"] if config is not None else None
        m.code_dir = str(self._code_dir)
        env = self.worker.base_env
        m.data_dir = env.get("DLT_DATA_DIR") or str(self.worker.data_dir)
        m.local_dir = str(served_local_dir(self.workspace, self.default_profile(), env))

    def deploy_remote(self, body: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        """`-deploy`: validate the posted jobs with dlt and reconcile; runs move to the newest
        uploaded packages (runs already going keep theirs)."""
        manifest: dict[str, Any] = {
            "engine_version": body["job_definition_engine_version"],
            "created_at": datetime.now(UTC).isoformat(),
            "deployment_module": body.get("deployment_module"),
            "jobs": body["jobs"],
        }
        if body.get("description"):
            manifest["description"] = body["description"]
        loaded = from_manifest(manifest)
        code = self.packages.latest(self.ws_id, "deployment")
        config = self.packages.latest(self.ws_id, "configuration")
        new_dir: Path | None = None
        if code is not None and not dry_run:
            # the run folder exists before the manifest is committed: a deploy that cannot
            # build it (PackageMissing, a 409) changes nothing
            new_dir = self._package_dir(code["id"], config["id"] if config else None)
        with self._reload_lock:
            was_local = not self._remote
            version, outcomes = self.store.deploy(
                self.ws_id,
                manifest,
                body.get("job_definition_hash") or loaded.hash,
                loaded.warnings,
                job_specs(loaded),
                manifest["deployment_module"],
                dry_run=dry_run,
                code_package_id=code["id"] if code else None,
                config_package_id=config["id"] if config else None,
            )
            if not dry_run:
                if version is not None:
                    self.manifest.version, self.manifest.hash = (
                        version,
                        body.get("job_definition_hash") or loaded.hash,
                    )
                    self.manifest.loaded_at = datetime.now(UTC)
                self.manifest.warnings = loaded.warnings
                self.manifest.error = self.manifest.error_type = self.manifest.error_at = None
                if new_dir is not None:
                    if new_dir != self._code_dir:
                        self._code_dir, self._remote = new_dir, True
                        self._describe_code(code, config)
                        log.warning(
                            "code source: deployment package v%s (configuration v%s) in %s,"
                            " instead of %s; data stays in %s, pipeline state in %s",
                            code["version"],
                            config["version"] if config else None,
                            new_dir,
                            "the workspace folder" if was_local else "the previous package",
                            self.manifest.local_dir,
                            self.manifest.data_dir,
                        )
                        self._refresh_launcher(keep_previous=False)
                self._share_state()
        return self._deploy_answer(outcomes, loaded.warnings, manifest["deployment_module"])

    def _deploy_answer(
        self, outcomes: list[DeployedJob], warnings: list[str], module: str | None
    ) -> dict[str, Any]:
        from headwater.api import serialize as ser

        base, profile = self.url, self.default_profile()
        succeeded, skipped = [], []
        for o in outcomes:
            job = {**o.job, "next_run_at": o.job.get("next_run_at")}
            previous = (
                ser.job_version(o.previous_version, job, None, profile)
                if o.previous_version
                else None
            )
            item = {
                "job": ser.job(job, base, profile),
                "outcome": o.outcome,
                "previous_version": previous,
            }
            (skipped if o.outcome == "unchanged" else succeeded).append(item)
        return {
            "job_receipt": {"succeeded": succeeded, "skipped": skipped, "failed": []},
            "warnings": warnings,
            "deployment_module": module,
        }

    def _summary(self) -> dict[str, Any]:
        return {
            "version": self.manifest.version,
            "hash": self.manifest.hash,
            "warnings": self.manifest.warnings,
        }

    def _watch_loop(self) -> None:
        from watchfiles import watch

        def relevant(_change: Any, path: str) -> bool:
            return is_watched(self.workspace, path)

        try:
            for _changes in watch(
                self.workspace,
                watch_filter=relevant,
                stop_event=self._stop,
                debounce=300,
                rust_timeout=1000,
            ):
                # job code may have changed even when the manifest did not: a good
                # reload always warms a new launcher; it logs what it loaded, or the error
                self.reload_manifest()
        except Exception:
            log.exception("file watch stopped")


def is_watched(workspace: Path, path: str) -> bool:
    """Whether a change of `path` may be a change of the workspace's code or configuration.

    What runs write is not: Headwater's own folder, dlt's local files (`.dlt/data`, where runs
    of any code source keep relative destination paths) and caches; a run's file there must
    not switch runs from a deployed package back to the folder's code.
    """
    parts = os.path.relpath(path, workspace).split(os.sep)
    if parts[0] in (HOME_DIR, "_storage", "__pycache__") or "__pycache__" in parts:
        return False
    if parts[:2] == [".dlt", "data"]:
        return False
    return path.endswith(WATCHED_SUFFIXES)


def describe_reload(version: int | None, current: int | None, outcomes: list[DeployedJob]) -> str:
    """One line for the server log: `manifest v3 loaded: 4 jobs (1 added, 1 changed)`."""
    words = {"created": "added", "updated": "changed", "archived": "removed"}
    counts = {word: sum(1 for o in outcomes if o.outcome == kind) for kind, word in words.items()}
    jobs = len(outcomes) - counts["removed"]
    changes = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
    if version is None:
        return f"manifest v{current} unchanged: {jobs} jobs"
    return f"manifest v{version} loaded: {jobs} jobs" + (f" ({changes})" if changes else "")


def _stop_children(pids: list[int], grace_s: float) -> None:
    """SIGTERM the processes, reap them, and SIGKILL those still there after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = set(pids)
    while left:
        for pid in list(left):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left and time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        if left:
            time.sleep(0.05)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a kill -9 of `up`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check in the worker process's loop remains
