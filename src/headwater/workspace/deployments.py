"""The served workspace's deployments: which manifest is live, and where runs take their code.

A manifest reaches the server two ways: the workspace folder's `__deployment__.py`
(loaded at start and whenever its files change) and a remote deploy (`-deploy`, after
the code and configuration packages were uploaded). `Deployments` owns what follows from
either: the last good manifest and the last error (`ManifestState`), the jobs reconciled
in the store, and the code folder runs start from (the workspace folder, or the run
folder of the newest deployed packages). A bad manifest never replaces a good one.

With remote workers (`headwater worker` on other hosts, which share no files with the
server), every good reload of the folder also packages it as `dlthub deploy` would
(`package_local`), so that the runs it creates name a code and a configuration package a
worker can download by id, like the packages of a remote deploy.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from headwater.workspace.config import CONFIG_MODULE, ConfigError, WorkspaceConfig, load_config
from headwater.workspace.launch import dlt_profile, job_specs, served_local_dir
from headwater.workspace.manifest import ManifestError, from_manifest, load_manifest
from headwater.workspace.packages import (
    PackageError,
    PackageMissing,
    ReadPackage,
    build_packages,
    runtime_dir,
    unpack_package,
    write_package,
)
from headwater.workspace.packages import hash_dir_name as hash_dir

if TYPE_CHECKING:
    from headwater.store.packages import PackageStore
    from headwater.store.store import DeployedJob, Store
    from headwater.store.vault import VariableStore

log = logging.getLogger(__name__)

LOCAL_PACKAGER = str(uuid.uuid5(uuid.NAMESPACE_URL, "headwater:workspace-folder"))
"""`created_by` of the packages the server made of its own workspace folder (`package_local`):
a manifest version naming them came from the folder, not from a remote deploy."""


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
    config_hash: str | None = None
    """The `headwater.toml` in use (its validated content's hash; None: no file)."""
    config_error: str | None = None
    """Why the newest `headwater.toml` was refused (the last good one keeps serving)."""
    config_error_at: datetime | None = None

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
            "config_hash": self.config_hash,
            "config_error": self.config_error,
            "config_error_at": self.config_error_at,
        }


@dataclass(frozen=True)
class DeployResult:
    """What a remote deploy reconciled: the API answers it as a job receipt."""

    outcomes: list[DeployedJob]
    warnings: list[str]
    deployment_module: str | None


class Deployments:
    """The live manifest of one workspace and the code folder its runs start from.

    `refresh_launcher(keep_previous)` is called when runs must start from new code (a good
    reload, a deploy that moved the code); `changed()` after every change of the state, so
    the other processes of the server can follow it (`shared_state`/`apply_shared_state`).
    """

    def __init__(
        self,
        store: Store,
        packages: PackageStore,
        ws_id: str,
        workspace: Path,
        home: Path,
        *,
        base_env: Mapping[str, str],
        data_dir: Path,
        refresh_launcher: Callable[[bool], None] = lambda _keep_previous: None,
        changed: Callable[[], None] = lambda: None,
        variables: VariableStore | None = None,
        remote_workers: bool = False,
    ) -> None:
        self.store = store
        self.packages = packages
        self.ws_id = ws_id
        self.workspace = workspace
        self.home = home
        self.base_env = base_env
        self.data_dir = data_dir
        self.refresh_launcher = refresh_launcher
        self.changed = changed
        self.variables = variables
        self.remote_workers = remote_workers
        """Runs execute on other hosts: every good reload packages the workspace folder."""
        self.manifest = ManifestState()
        self.code_dir = workspace
        """The folder runs start from: the workspace, or a deployed package's run folder."""
        self.remote = False
        """True while the code is a remote deploy's packages."""
        self.config = WorkspaceConfig()
        """The last good `headwater.toml` (the jobs' rows hold what it set for each)."""
        self._lock = threading.Lock()
        self._restore()

    def _restore(self) -> None:
        """At start: the newest manifest version in the store, and its code."""
        code_id: str | None = None
        config_id: str | None = None
        latest = self.store.latest_manifest(self.ws_id)
        if latest is not None:
            self.manifest.version, self.manifest.hash = latest["version"], latest["hash"]
            self.manifest.warnings = latest["warnings"]
            self.manifest.loaded_at = latest["created_at"]
            if latest["code_package_id"] and not self._packaged_here(latest["code_package_id"]):
                # the newest version came from a remote deploy: its package is the code
                self.remote = True
                self.code_dir, code_id, config_id = self._deployed_code_dir(latest["version"])
        self._describe_code(
            self.packages.get(code_id) if code_id else None,
            self.packages.get(config_id) if config_id else None,
        )

    def _packaged_here(self, package_id: str) -> bool:
        """Whether the package is one `package_local` made of the workspace folder."""
        row = self.packages.get(package_id)
        return row is not None and row["created_by"] == LOCAL_PACKAGER

    def status(self) -> dict[str, Any]:
        """The manifest status the API shows (`ManifestState` as a dict)."""
        return self.manifest.as_dict()

    def default_profile(self) -> str:
        """The profile dlt runs a run with when neither the run nor its job names one."""
        return dlt_profile({}, {}, self.code_dir, self.base_env)

    def log_code_source(self) -> None:
        """At start, after a remote deploy: say where runs take their code and data from."""
        log.info(
            "code source: deployment package v%s (configuration v%s) in %s; data in %s,"
            " pipeline state in %s",
            self.manifest.code_package_version,
            self.manifest.config_package_version,
            self.code_dir,
            self.manifest.local_dir,
            self.manifest.data_dir,
        )

    # -- sharing with the server's other processes -------------------------------------------------

    def shared_state(self) -> dict[str, Any]:
        """The state as JSON-able values, for `apply_shared_state` in another process."""
        manifest = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in self.manifest.as_dict().items()
        }
        return {"manifest": manifest, "code_dir": str(self.code_dir), "remote": self.remote}

    def apply_shared_state(self, args: dict[str, Any]) -> None:
        """Take over what another process of the server learnt (`shared_state`)."""
        with self._lock:
            for name, value in args["manifest"].items():
                if name in ("loaded_at", "error_at", "config_error_at") and value is not None:
                    value = datetime.fromisoformat(value)
                setattr(self.manifest, name, value)
            self.code_dir, self.remote = Path(args["code_dir"]), bool(args["remote"])

    # -- the workspace folder ----------------------------------------------------------------------

    def reload(self, refresh_launcher: bool = True) -> dict[str, Any]:
        """Read `__deployment__.py` again; a bad manifest keeps the last good one.

        Only a good manifest replaces the warm launcher: the running one holds the
        last good code in memory, so runs forked from it keep working while the
        files on disk are broken.
        """
        with self._lock:
            now = datetime.now(UTC)
            try:
                loaded = load_manifest(self.workspace)
                config = load_config(self.workspace)
                specs = job_specs(loaded, config)
                code_id, config_id = self._package_for_workers()
            except ConfigError as ex:
                self._config_refused(ex, now)
                return {
                    "ok": False,
                    "error": ex.detail,
                    "error_type": "ConfigError",
                    **self._summary(),
                }
            except ManifestError as ex:
                if self.manifest.error != ex.detail:
                    self.store.add_event(
                        self.ws_id,
                        "manifest.failed",
                        payload={"error": ex.detail, "error_type": ex.error_type},
                    )
                self.manifest.error, self.manifest.error_type, self.manifest.error_at = (
                    ex.detail,
                    ex.error_type or None,
                    now,
                )
                log.error(
                    "manifest not loaded, keeping version %s: %s", self.manifest.version, ex.detail
                )
                self.changed()
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
                specs,
                loaded.manifest.get("deployment_module"),
                code_package_id=code_id,
                config_package_id=config_id,
                also_reconcile=(CONFIG_MODULE,),
            )
            self._config_accepted(config)
            self.manifest.error = self.manifest.error_type = self.manifest.error_at = None
            self.manifest.warnings = loaded.warnings
            # local files were edited: they are the code again, even after a remote deploy
            moved = self.code_dir != self.workspace
            if moved:
                log.warning(
                    "code source: the workspace folder %s again (its files changed), instead of"
                    " deployment package v%s; data stays in %s, pipeline state in %s",
                    self.workspace,
                    self.manifest.code_package_version,
                    self.manifest.local_dir,
                    self.manifest.data_dir,
                )
            self.code_dir, self.remote = self.workspace, False
            self._describe_code(None, None)
            if refresh_launcher:
                self.refresh_launcher(not moved)
            if version is not None:
                self.manifest.version, self.manifest.hash, self.manifest.loaded_at = (
                    version,
                    loaded.hash,
                    now,
                )
            log.info(describe_reload(version, self.manifest.version, outcomes))
            self.changed()
            return {
                "ok": True,
                "changed": version is not None,
                "jobs": [{"job_ref": o.job["job_ref"], "outcome": o.outcome} for o in outcomes],
                **self._summary(),
            }

    def _package_for_workers(self) -> tuple[str | None, str | None]:
        """With remote workers, the folder's code and configuration package ids (`package_local`);
        a folder that cannot be packaged is refused like a bad manifest. Without: no ids."""
        if not self.remote_workers:
            return None, None
        try:
            return self.package_local()
        except (PackageError, OSError) as ex:
            raise ManifestError(
                f"the workspace folder cannot be packaged for remote workers: {ex}",
                "PackageError",
            ) from ex

    def package_local(self) -> tuple[str, str]:
        """Package the workspace folder as `dlthub deploy` would (never `.headwater/`) and store
        both packages as an upload is stored, once per content hash: answers `(code package
        id, configuration package id)`. Raises `PackageError` when the folder cannot be."""
        code, code_hash, config, config_hash = build_packages(self.workspace)
        return (
            self._store_local("deployment", code, code_hash)["id"],
            self._store_local("configuration", config, config_hash)["id"],
        )

    def _store_local(self, kind: str, data: bytes, content_hash: str) -> dict[str, Any]:
        """The numbered package row of a package built here: the one stored before with this
        hash (its files unpacked again if they went missing), else a new version."""
        row = self.packages.with_hash(self.ws_id, kind, content_hash, LOCAL_PACKAGER)
        if row is not None and self.package_stored(row):
            return row
        read = self.accept_package(kind, io.BytesIO(data))
        if read.content_hash != content_hash:
            # dlt hashed what it packed; we hashed what we unpacked: they must agree
            raise PackageError(
                f"the {kind} package of the workspace folder hashes to {read.content_hash}"
                f" once unpacked, not {content_hash}"
            )
        if row is not None:
            return row
        issued, token = self.packages.issue(self.ws_id, kind, LOCAL_PACKAGER)
        done = self.packages.complete(
            issued["id"],
            token,
            content_hash=read.content_hash,
            files=read.files,
            size_bytes=read.size_bytes,
            profiles=read.profiles if kind == "configuration" else [],
        )
        assert done is not None  # the token was issued a moment ago, here
        return done

    def run_environment(self, run: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The workspace's variables for a run (its profile's over the workspace scope), and
        the values of the secret ones, which the run's log masks."""
        if self.variables is None:
            return {}, []
        version = self.store.get_job_version(run["job_version_id"])
        job_def = version["definition"] if version else {}
        profile = dlt_profile(run, job_def, self.code_dir, self.base_env)
        return self.variables.resolve_for_run(self.ws_id, profile)

    def _config_refused(self, ex: ConfigError, now: datetime) -> None:
        """A bad `headwater.toml`: the last good configuration (in the jobs' rows) stays."""
        if self.manifest.config_error != ex.detail:
            self.store.add_event(self.ws_id, "config.failed", payload={"error": ex.detail})
        self.manifest.config_error, self.manifest.config_error_at = ex.detail, now
        log.error("%s; keeping the last good configuration", ex.detail)
        self.changed()

    def _config_accepted(self, config: WorkspaceConfig) -> None:
        self.config = config
        self.manifest.config_hash = config.hash if config != WorkspaceConfig() else None
        self.manifest.config_error = self.manifest.config_error_at = None
        # every process of the server (automations, monitors) reads it from the store
        self.store.save_config(self.ws_id, config.model_dump(mode="json"), config.hash)

    def _summary(self) -> dict[str, Any]:
        return {
            "version": self.manifest.version,
            "hash": self.manifest.hash,
            "warnings": self.manifest.warnings,
        }

    # -- remote deploy -----------------------------------------------------------------------------

    def accept_package(self, kind: str, upload: BinaryIO) -> ReadPackage:
        """Check an uploaded package and unpack it once per content hash under
        `.headwater/packages`; raises `PackageError` with nothing stored."""
        package, _folder = unpack_package(upload, self.home / "packages" / kind)
        return package

    def package_stored(self, row: dict[str, Any]) -> bool:
        """Whether a numbered package's files are on this server's disk."""
        folder = self.home / "packages" / row["kind"] / hash_dir(row["content_hash"])
        return folder.is_dir()

    def package_archive(self, row: dict[str, Any]) -> Path:
        """A numbered package as a `.tar.gz` a worker unpacks with `unpack_package`: packed
        again from its files on the first ask and kept beside them. `PackageMissing` when its
        files are not on this server's disk."""
        folder = self.home / "packages" / row["kind"] / hash_dir(row["content_hash"])
        archive = folder.with_name(folder.name + ".tar.gz")
        if archive.is_file():
            return archive
        if not folder.is_dir():
            raise PackageMissing(f"{row['kind']} version {row['version']} is missing: no {folder}")
        fd, tmp = tempfile.mkstemp(dir=folder.parent, prefix=".archive-")
        try:
            with os.fdopen(fd, "wb") as out:
                write_package(folder, row["files"], out)
            os.replace(tmp, archive)  # atomic: a concurrent ask packs the same bytes
        except BaseException:
            os.unlink(tmp)
            raise
        return archive

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
            if self._packaged_here(code_id):
                continue  # the workspace folder's, made for remote workers: not a deploy
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
        m.code_dir = str(self.code_dir)
        env = self.base_env
        m.data_dir = env.get("DLT_DATA_DIR") or str(self.data_dir)
        m.local_dir = str(served_local_dir(self.workspace, self.default_profile(), env))

    def deploy(self, body: dict[str, Any], dry_run: bool) -> DeployResult:
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
        if code is not None:
            # the run folder exists before the manifest is committed: a deploy that cannot
            # build it (PackageMissing, a 409) changes nothing
            new_dir = self._package_dir(code["id"], config["id"] if config else None)
        # headwater.toml travels in the code package; a bad one refuses the deploy (400)
        settings = load_config(new_dir if new_dir is not None else self.workspace)
        specs = job_specs(loaded, settings)
        with self._lock:
            was_local = not self.remote
            version, outcomes = self.store.deploy(
                self.ws_id,
                manifest,
                body.get("job_definition_hash") or loaded.hash,
                loaded.warnings,
                specs,
                manifest["deployment_module"],
                dry_run=dry_run,
                code_package_id=code["id"] if code else None,
                config_package_id=config["id"] if config else None,
                also_reconcile=(CONFIG_MODULE,),
            )
            if not dry_run:
                self._config_accepted(settings)
                if version is not None:
                    self.manifest.version, self.manifest.hash = (
                        version,
                        body.get("job_definition_hash") or loaded.hash,
                    )
                    self.manifest.loaded_at = datetime.now(UTC)
                self.manifest.warnings = loaded.warnings
                self.manifest.error = self.manifest.error_type = self.manifest.error_at = None
                if new_dir is not None:
                    if new_dir != self.code_dir:
                        assert code is not None
                        self.code_dir, self.remote = new_dir, True
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
                        self.refresh_launcher(False)
                self.changed()
        return DeployResult(outcomes, loaded.warnings, manifest["deployment_module"])


def describe_reload(version: int | None, current: int | None, outcomes: list[DeployedJob]) -> str:
    """One line for the server log: `manifest v3 loaded: 4 jobs (1 added, 1 changed)`."""
    words = {"created": "added", "updated": "changed", "archived": "removed"}
    counts = {word: sum(1 for o in outcomes if o.outcome == kind) for kind, word in words.items()}
    jobs = len(outcomes) - counts["removed"]
    changes = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
    if version is None:
        return f"manifest v{current} unchanged: {jobs} jobs"
    return f"manifest v{version} loaded: {jobs} jobs" + (f" ({changes})" if changes else "")
