"""Remote deploy against a real `headwater up`: uploads are checked before they cost anything,
packages never carry `.headwater/` or links out, a failed deploy commits nothing, and a server
whose packages went missing still starts (issue 18: security 1, 2, 3, 5)."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import HERE, Server, copy_workspace
from tests.workspace.crafted import Zeros, craft, sha


@dataclass
class Env:
    srv: Server
    source: Path
    key: str

    def deploy(self) -> str:
        proc = self.srv.cli(
            "deploy", "-w", str(self.source), "--to", self.srv.url, "--key", self.key
        )
        return proc.stdout

    def latest(self, plural: str = "deployments") -> Any:
        resp = self.srv.http.get(f"{self.srv.w}/{plural}/latest")
        return resp.json() if resp.status_code == 200 else resp.status_code

    def upload(
        self, data: bytes, token: str | None = None, plural: str = "deployments"
    ) -> httpx.Response:
        issued = self.srv.post(f"{self.srv.w}/{plural}/-issue-upload")
        return httpx.post(
            issued["upload_url"],
            files={"file": ("workspace.tar.gz", data, "application/gzip")},
            headers={"Authorization": f"Bearer {token or issued['upload_token']}"},
            timeout=120,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("deploy_safety")
    served = root / "server"
    served.mkdir()
    srv = Server(served).start(wait_warm=False)  # an empty server, waiting for a deploy
    try:
        source = copy_workspace(HERE / "workspace", root / "src")
        (source / ".dlt").mkdir(exist_ok=True)
        (source / ".dlt" / ".workspace").touch()
        (source / ".dlt" / "config.toml").write_text('greeting = "hi"\n')
        # a workspace a local `headwater up` served, without `.headwater/` in .gitignore
        (source / ".headwater").mkdir()
        (source / ".headwater" / "admin.key").write_text("dlt_sa_local_admin_secret\n")
        (source / ".headwater" / "headwater.db").write_bytes(b"SQLite format 3\x00")
        key = srv.cli("key", "create", "--name", "laptop", "--scope", "admin").stdout.strip()
        env = Env(srv, source, key)
        out = env.deploy()
        assert "uploaded version 1" in out, out
        yield env
    finally:
        srv.stop()


def hwm_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 1 MiB that gunzips to 1.1 GiB: a package whose manifest lists the zeros."""
    expanded = 1100 * 1024 * 1024
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            raw = (
                "engine_version: 1\nfiles:\n- relative_path: zeros.bin\n"
                f"  size_in_bytes: {expanded}\n  sha3_256: {sha(b'not it')}\n"
            ).encode()
            info = tarfile.TarInfo("manifest.yaml")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
            info = tarfile.TarInfo("files/zeros.bin")
            info.size = expanded
            tar.addfile(info, io.BufferedReader(Zeros(expanded), 1024 * 1024))
    data = out.getvalue()
    assert len(data) < 1_200_000
    return data


# -- 2: `.headwater/` never travels -------------------------------------------------------------


def test_deploy_to_leaves_headwater_home_behind(env: Env) -> None:
    code = env.latest()
    files = env.srv.get(f"{env.srv.w}/deployments/{code['id']}/files")["files"]
    paths = [f["relative_path"] for f in files]
    assert "__deployment__.py" in paths
    assert not [p for p in paths if ".headwater" in p], paths
    stored = env.srv.workspace / ".headwater" / "packages"
    assert not list(stored.rglob("*/.headwater")), list(stored.rglob("*/.headwater"))


def test_a_package_holding_headwater_home_is_a_400(env: Env) -> None:
    before = env.latest()
    resp = env.upload(craft({"path": ".headwater/admin.key", "data": b"dlt_sa_x"}))
    assert resp.status_code == 400, resp.text
    assert ".headwater/" in resp.json()["detail"] and "never deployed" in resp.json()["detail"]
    assert env.latest() == before


# -- 1: the token before the body; bounds -------------------------------------------------------


def test_a_bogus_token_is_a_401_before_the_body_is_read(env: Env, gzip_bomb: bytes) -> None:
    pid = env.srv.proc.pid  # type: ignore[union-attr]
    before = hwm_kib(pid)
    resp = env.upload(gzip_bomb, token="hw_upload_bogus")
    print(f"401 in {resp.elapsed.total_seconds():.3f} s")
    assert resp.status_code == 401, resp.text
    assert resp.json()["code"] == "invalid_upload_token"
    grown_mib = (hwm_kib(pid) - before) / 1024
    print(f"peak RSS grew {grown_mib:.1f} MiB for a bogus token with a 1.1 GiB bomb")
    assert grown_mib < 100
    assert env.srv.get("/health")


def test_a_valid_token_with_a_gzip_bomb_is_a_413(env: Env, gzip_bomb: bytes) -> None:
    pid = env.srv.proc.pid  # type: ignore[union-attr]
    before, latest = hwm_kib(pid), env.latest()
    resp = env.upload(gzip_bomb)
    print(f"413 in {resp.elapsed.total_seconds():.3f} s")
    assert resp.status_code == 413, resp.text
    assert "gzip bomb" in resp.json()["detail"]
    grown_mib = (hwm_kib(pid) - before) / 1024
    print(f"peak RSS grew {grown_mib:.1f} MiB for a refused 1.1 GiB bomb")
    assert grown_mib < 100
    assert env.latest() == latest
    # nothing of it stays on disk
    stored = env.srv.workspace / ".headwater" / "packages" / "deployment"
    assert not [p for p in stored.iterdir() if p.name.startswith(".")]


def test_trigger_keys_see_no_package_ids(env: Env) -> None:
    srv, code = env.srv, env.latest()
    for scope, allowed in (("trigger", False), ("read", True)):
        key = srv.cli("key", "create", "--name", f"pk-{scope}", "--scope", scope).stdout.strip()
        auth = {"Authorization": f"Bearer {key}"}
        for path in (
            "/deployments",
            "/deployments/latest",
            f"/deployments/{code['id']}",
            "/configurations",
        ):
            resp = srv.http.get(srv.w + path, headers=auth)
            assert resp.status_code == (200 if allowed else 403), (scope, path, resp.text)


# -- 5: links out of the package ----------------------------------------------------------------


def test_links_out_of_a_package_are_a_400(env: Env, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    before = env.latest()
    for entries, match in (
        (
            ({"path": "lnk", "link": str(outside)}, {"path": "lnk/file", "data": b"pwned"}),
            "absolute",
        ),
        (({"path": "a/lnk", "link": "../../.headwater"},), "outside the package"),
        (
            (
                {"path": "lnk", "link": "x"},
                {"path": "lnk/server.json", "data": b"{}"},
                {"path": "x", "data": b""},
            ),
            "through a link",
        ),
        (({"path": "lnk", "link": "somewhere", "linkname": False},), "not a regular file"),
    ):
        resp = env.upload(craft({"path": "__deployment__.py", "data": b""}, *entries))
        assert resp.status_code == 400, resp.text
        assert match in resp.json()["detail"], resp.json()
    assert list(outside.iterdir()) == []
    assert env.latest() == before
    server_json = env.srv.workspace / ".headwater" / "server.json"
    assert server_json.is_file() and not server_json.is_symlink()


# -- 3: nothing half committed; a server with missing packages starts -------------------------


def test_a_name_too_long_is_a_400_and_latest_is_unchanged(env: Env) -> None:
    before = env.latest()
    resp = env.upload(
        craft(
            {"path": "__deployment__.py", "data": b""}, {"path": "a" * 5000 + ".py", "data": b"x"}
        )
    )
    assert resp.status_code == 400, resp.text
    assert "longer than 255 bytes" in resp.json()["detail"]
    assert env.latest() == before
    # the server goes on deploying
    assert "unchanged (version 1)" in env.deploy()


def test_missing_packages_neither_half_deploy_nor_stop_the_server(env: Env) -> None:
    srv = env.srv
    ok = srv.workspace / ".headwater"
    main = env.source / "__deployment__.py"
    main.write_text(main.read_text().replace('print("ok ran")', 'print("ok ran v2")'))
    assert "deployments     uploaded version 2" in env.deploy()
    run = srv.wait_run(srv.start_run("ok")["id"])
    assert "ok ran v2" in srv.user_output(run["id"])
    v2 = env.latest()
    version = srv.get(srv.w)["manifest"]["version"]

    # the newest code package goes missing: -deploy answers 409 and commits nothing
    srv.stop()
    packages = ok / "packages"
    v2_dirs = [p for p in packages.glob("*/*") if p.name.startswith(_hash_dir(v2["content_hash"]))]
    assert v2_dirs
    for p in v2_dirs:
        shutil.rmtree(p)
    srv.start(wait_warm=False)
    status = srv.get(srv.w)["manifest"]
    assert status["error_type"] == "PackageMissing", status
    assert "version 2 is missing" in status["error"], status
    # runs go on with the last code on disk
    run = srv.wait_run(srv.start_run("ok")["id"])
    assert run["status"] == "completed", run
    assert "ok ran" in srv.user_output(run["id"])
    assert "ok ran v2" not in srv.user_output(run["id"])
    body = {
        "job_definition_engine_version": 2,
        "job_definition_hash": "x",
        "jobs": [],
        "deployment_module": "__deployment__",
    }
    resp = srv.http.post(f"{srv.w}/-deploy", json=body)
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "package_missing"
    assert srv.get(srv.w)["manifest"]["version"] == version
    # `latest` sends the client to upload again, which restores it
    assert env.latest() == 404
    assert "deployments     uploaded version 3" in env.deploy()
    run = srv.wait_run(srv.start_run("ok")["id"])
    assert "ok ran v2" in srv.user_output(run["id"])

    # every package gone: the server still starts, serves and says so
    srv.stop()
    shutil.rmtree(packages)
    srv.start(wait_warm=False)
    status = srv.get(srv.w)["manifest"]
    assert "no deployed code is left on disk" in status["error"], status
    assert "ok" in srv.jobs()


def _hash_dir(content_hash: str) -> str:
    from headwater.workspace.packages import hash_dir_name

    return hash_dir_name(content_hash)
