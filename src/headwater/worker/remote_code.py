"""A run's code and environment on a worker that shares no files with the server.

A `headwater worker` on another host gets a run (its row: `id`, `workspace_id`,
`code_package_id`, `config_package_id`). `RemoteCode.run_folder` downloads each package
the run names, once per content hash (`GET .../deployments|configurations/{id}/archive`
with a worker key; the hash the server accepted the package under comes in the
`X-Headwater-Content-Hash` header), unpacks it with `unpack_package` into a staging
folder (which checks every file against the package's manifest and computes dlt's
content hash) and moves it into the cache only when that hash is the one the server
named: a package that does not match leaves nothing in the cache. The run folder is then
composed with `runtime_dir`, as the server composes its own.

The cache is shared by the threads and processes of one host: one lock file per package
id (`filelock`) makes one of them download it, and every folder appears by an atomic
rename. Its layout under `cache_dir`:

    deployment/<hash>/, configuration/<hash>/   unpacked packages
    ids/<package id>                            a package's content hash (it never changes)
    run/<hash>-<hash>/                          run folders (code, configuration over `.dlt/`)
    locks/                                      the lock files
"""

from __future__ import annotations

import binascii
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from filelock import FileLock

from headwater.core import beacon
from headwater.core.errors import HeadwaterError
from headwater.workspace.packages import (
    CHUNK,
    CONTENT_HASH_HEADER,
    PackageError,
    hash_dir_name,
    runtime_dir,
    unpack_package,
)

PLURALS = {"deployment": "deployments", "configuration": "configurations"}
_PACKAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

log = logging.getLogger(__name__)
T = TypeVar("T")


class RemoteCodeError(HeadwaterError):
    """A run's code or environment cannot be had from its server; the message names the
    server and the package or run."""

    code = "remote_code_error"


class PackageMismatch(RemoteCodeError):
    """A downloaded package that is not the one its content hash names (changed on the
    server's disk or on the way, truncated): refused, nothing cached."""

    code = "package_mismatch"


class ServerUnreachable(RemoteCodeError):
    """A server did not answer (refused, timed out, or a proxy's 502/503/504): the next
    server of the worker's list is asked."""


PATIENCE_S = 120.0
"""How long a worker asks again while no server answers before it gives a run up."""


class KeyRefused(RemoteCodeError):
    """The server refused the worker's key (401 unknown or revoked, 403 not a worker key):
    every run would fail the same way, so a worker does not start with it."""

    code = "worker_key_refused"


UNAVAILABLE = {502, 503, 504}
"""Answers of a proxy or load balancer whose server is down: as good as no answer."""


class RemoteCode:
    """Runs' code folders and environments, fetched with a worker key from `server_url`:
    one URL, or several separated by commas (the servers of one database), asked in turn
    while one does not answer; the last that answered is asked first.

    Safe to share between threads; `close()` (or `with`) ends its connections.
    """

    def __init__(
        self,
        server_url: str,
        api_key: str,
        cache_dir: Path,
        *,
        timeout: float = 300.0,
        patience: float = PATIENCE_S,
    ) -> None:
        urls = [u.strip().rstrip("/") for u in server_url.split(",") if u.strip()]
        if not urls:
            raise RemoteCodeError("no server URL given")
        # absolute: the warm launcher and the runs start in its folders from elsewhere
        self.cache_dir = cache_dir.resolve()
        self._servers = [
            (
                url,
                httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
                ),
            )
            for url in urls
        ]
        self.patience = patience
        self._current = 0
        self._beacons: dict[str, str] = {}
        """Run id -> its beacon secret, from its environment until its DSN is made."""
        self._lock = threading.Lock()

    @property
    def server_url(self) -> str:
        """The server asked first: the last that answered."""
        return self._servers[self._current][0]

    @property
    def http(self) -> httpx.Client:
        return self._servers[self._current][1]

    def _ask(self, fn: Callable[[str, httpx.Client], T]) -> T:
        """`fn(url, client)` on each server in turn, from the last that answered, until
        one answers. While none does, asks them all again for up to `patience` seconds (a
        server restarting, say for an upgrade, must not fail the runs it dispatched; they
        keep their leases meanwhile); then raises, naming each server and what it said."""
        deadline = time.monotonic() + self.patience
        wait, warned = 0.25, False
        while True:
            first = self._current
            tried = []
            for i in [first, *(j for j in range(len(self._servers)) if j != first)]:
                url, client = self._servers[i]
                try:
                    result = fn(url, client)
                except ServerUnreachable as ex:
                    tried.append(str(ex))
                    continue
                self._current = i
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not warned:
                log.warning("no server answers (%s); asking again for %.0f s", tried[0], left)
                warned = True
            time.sleep(min(wait, left))
            wait = min(wait * 2, 5.0)
        if len(tried) == 1:
            raise RemoteCodeError(tried[0])
        raise RemoteCodeError("no server answered: " + "; ".join(tried))

    def close(self) -> None:
        for _url, client in self._servers:
            client.close()

    def __enter__(self) -> RemoteCode:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- code ----------------------------------------------------------------------------------

    def run_folder(self, run: dict[str, Any]) -> Path:
        """The folder `run` starts in: its code package with its configuration package laid
        over `.dlt/`, each downloaded once per content hash. Raises `RemoteCodeError`
        (`PackageMismatch` for a package that does not match its hash)."""
        code_id = run.get("code_package_id")
        if not code_id:
            raise RemoteCodeError(
                f"run {run['id']} of {self.server_url} names no code package: the server runs"
                " a workspace folder and was not started for remote workers"
            )
        ws = run["workspace_id"]
        code = self._package(ws, "deployment", code_id)
        config_id = run.get("config_package_id")
        config = self._package(ws, "configuration", config_id) if config_id else None
        try:
            return runtime_dir(self.cache_dir / "run", code, config)
        except OSError as ex:
            raise RemoteCodeError(
                f"the folder of run {run['id']} of {self.server_url} cannot be built in"
                f" {self.cache_dir}: {ex}"
            ) from ex

    def _package(self, ws: str, kind: str, package_id: str) -> Path:
        """The cached folder of a package, downloaded first when it is not there yet."""
        if not isinstance(package_id, str) or not _PACKAGE_ID.fullmatch(package_id):
            raise RemoteCodeError(f"{kind} package id {package_id!r} is not a package id")
        found = self._cached(kind, package_id)
        if found is not None:
            return found
        locks = self.cache_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        # one download per package on this host: the others wait, then find it cached
        with FileLock(locks / f"{package_id}.lock"):
            found = self._cached(kind, package_id)
            if found is not None:
                return found
            return self._download(ws, kind, package_id)

    def _cached(self, kind: str, package_id: str) -> Path | None:
        try:
            content_hash = (self.cache_dir / "ids" / package_id).read_text().strip()
        except FileNotFoundError:
            return None
        folder = self.cache_dir / kind / hash_dir_name(content_hash)
        return folder if folder.is_dir() else None

    def _download(self, ws: str, kind: str, package_id: str) -> Path:
        return self._ask(
            lambda server, client: self._download_from(server, client, ws, kind, package_id)
        )

    def _download_from(
        self, server: str, client: httpx.Client, ws: str, kind: str, package_id: str
    ) -> Path:
        what = f"{kind} package {package_id} from {server}"
        url = f"/api/v1/workspaces/{ws}/{PLURALS[kind]}/{package_id}/archive"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".download-"))
        try:
            archive = staging / "package.tar.gz"
            with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise _error_class(resp)(f"cannot download {what}: {_refusal(resp)}")
                expected = resp.headers.get(CONTENT_HASH_HEADER, "")
                target = self._folder_of(kind, expected, what)
                if target.is_dir():
                    # the same files under another package id: not downloaded again
                    self._remember(package_id, expected)
                    return target
                with open(archive, "wb") as out:
                    for chunk in resp.iter_bytes(CHUNK):
                        out.write(chunk)
            with open(archive, "rb") as upload:
                try:
                    read, unpacked = unpack_package(upload, staging / "unpacked")
                except PackageError as ex:
                    raise PackageMismatch(
                        f"{what} does not match its content hash {expected}: {ex}; nothing"
                        " was cached"
                    ) from ex
            if read.content_hash != expected:
                raise PackageMismatch(
                    f"{what} hashes to {read.content_hash}, not to {expected} as the server"
                    " says; nothing was cached"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                unpacked.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
            self._remember(package_id, expected)
            return target
        except httpx.TransportError as ex:
            raise ServerUnreachable(f"cannot download {what}: {ex}") from ex
        except httpx.HTTPError as ex:
            raise RemoteCodeError(f"cannot download {what}: {ex}") from ex
        except OSError as ex:
            raise RemoteCodeError(f"cannot store {what} in {self.cache_dir}: {ex}") from ex
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _folder_of(self, kind: str, content_hash: str, what: str) -> Path:
        try:
            name = hash_dir_name(content_hash)
        except (binascii.Error, ValueError) as ex:
            raise RemoteCodeError(
                f"{what} came without a valid {CONTENT_HASH_HEADER} header ({content_hash[:100]!r})"
            ) from ex
        if len(name) != 32:
            raise RemoteCodeError(f"{what}: {content_hash!r} is not a package content hash")
        return self.cache_dir / kind / name

    def _remember(self, package_id: str, content_hash: str) -> None:
        """Note the package's hash, so its next run needs no request (atomic: a reader sees
        the whole hash or no file)."""
        ids = self.cache_dir / "ids"
        ids.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=ids, prefix=".")
        with os.fdopen(fd, "w") as out:
            out.write(content_hash)
        os.replace(tmp, ids / package_id)

    # -- environment ---------------------------------------------------------------------------

    def environment(self, run: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The environment variables `run` starts with (the workspace's variables, secrets
        decrypted by the server) and the secret values its log must mask."""
        url = f"/api/v1/workspaces/{run['workspace_id']}/job-runs/{run['id']}/environment"

        def read(server: str, client: httpx.Client) -> tuple[str, httpx.Response]:
            what = f"the environment of run {run['id']} from {server}"
            try:
                resp = client.get(url)
            except httpx.TransportError as ex:
                raise ServerUnreachable(f"cannot read {what}: {ex}") from ex
            except httpx.HTTPError as ex:
                raise RemoteCodeError(f"cannot read {what}: {ex}") from ex
            if resp.status_code != 200:
                raise _error_class(resp)(f"cannot read {what}: {_refusal(resp)}")
            return what, resp

        what, resp = self._ask(read)
        try:
            body = resp.json()
            env, secret_values = body["env"], body["secret_values"]
        except (ValueError, KeyError, TypeError) as ex:
            raise RemoteCodeError(f"unreadable answer for {what}: {ex}") from ex
        if not (
            isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            and isinstance(secret_values, list)
            and all(isinstance(v, str) for v in secret_values)
        ):
            raise RemoteCodeError(f"unreadable answer for {what}: not names and text values")
        secret = body.get("beacon_secret")
        if isinstance(secret, str) and secret:
            with self._lock:
                self._beacons[run["id"]] = secret
        return env, secret_values

    def beacon_dsn(self, run: dict[str, Any]) -> str | None:
        """Where the run's dlt reports its traces and job result: the server, as this worker
        reaches it, with the run's own secret (handed out with its environment)."""
        with self._lock:
            secret = self._beacons.pop(run["id"], None)
        if secret is None:
            return None
        return beacon.dsn_with_secret(self.server_url, run["workspace_id"], run["id"], secret)


def _error_class(resp: httpx.Response) -> type[RemoteCodeError]:
    """What an answer other than 200 means: no answer (a proxy's 502/503/504), a refused
    key, or a refusal of this one request."""
    if resp.status_code in UNAVAILABLE:
        return ServerUnreachable
    if resp.status_code in (401, 403):
        return KeyRefused
    return RemoteCodeError


def _refusal(resp: httpx.Response) -> str:
    """`403 a read key may not download packages (not_authorized)`: the server's own words."""
    try:
        body = resp.json()
        return f"{resp.status_code} {body['detail']} ({body['code']})"
    except (ValueError, KeyError, TypeError):
        return f"{resp.status_code} {resp.text[:200]}"
