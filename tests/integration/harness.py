"""Starts `headwater up` as a real process on a copy of a workspace, and drives it."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.store.conftest import new_pg_database

TERMINAL = {"completed", "failed", "cancelled", "skipped"}
HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DLTHUB = str(Path(sys.executable).parent / "dlthub")


def run_dlthub(
    srv: Server, key: str, cwd: Path, home: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The official `dlthub` CLI pointed at `srv`, as a user would after `headwater connect`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RUNTIME__", "WORKSPACE__", "HEADWATER_"))
    }
    env.pop("DLT_RUNTIME_INSECURE", None)
    env.update(
        RUNTIME__API_BASE_URL=srv.url,
        RUNTIME__API_KEY=key,
        RUNTIME__WORKSPACE_ID=srv.ws_id,
        RUNTIME__DLTHUB_TELEMETRY="false",
        # keeps ~/.dlt out of the real home; as root dlt uses /var/dlt regardless
        HOME=str(home),
    )
    return subprocess.run(
        [DLTHUB, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(
        src, dst, ignore=shutil.ignore_patterns(".headwater", "__pycache__", "*.duckdb*")
    )
    return dst


class Server:
    """One `headwater up` process; `start()` again after `kill()` is a restart."""

    def __init__(self, workspace: Path, *extra: str) -> None:
        self.workspace = workspace
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workspace.parent / f"server-{self.port}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_id = ""
        self.key = ""
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def new_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self, wait_warm: bool = True) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "headwater.cli.main",
                    "up",
                    str(self.workspace),
                    "--port",
                    str(self.port),
                    "--log-level",
                    "info",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        # a test that fails before its own cleanup must not leave a server behind
        atexit.register(self._kill_quietly, self.proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"headwater up exited: {self.log()}")
            try:
                self.ws_id = self.http.get("/health").json()["workspace_id"]
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise TimeoutError(f"headwater up did not answer: {self.log()}")
        # the local admin key `up` writes for the headwater CLI
        self.key = (self.workspace / ".headwater" / "admin.key").read_text().strip()
        self.http.headers["Authorization"] = f"Bearer {self.key}"
        if wait_warm:
            self.wait_for(lambda: "warm launcher ready" in self.log(), 60, "warm launcher")
        return self

    @staticmethod
    def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    # -- API helpers ----------------------------------------------------------------------------

    @property
    def w(self) -> str:
        return f"/api/v1/workspaces/{self.ws_id}"

    def get(self, path: str, **kw: Any) -> Any:
        resp = self.http.get(path, **kw)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def post(self, path: str, **kw: Any) -> Any:
        resp = self.http.post(path, **kw)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def jobs(self) -> dict[str, dict[str, Any]]:
        items = self.get(f"{self.w}/jobs", params={"limit": 1000})["items"]
        return {j["job_ref"].rsplit(".", 1)[-1]: j for j in items}

    def job_id(self, name: str) -> str:
        return self.jobs()[name]["id"]

    def trigger(self, name: str, **body: Any) -> dict[str, Any]:
        return self.post(f"{self.w}/jobs/-trigger", json={"job_ids": [self.job_id(name)], **body})

    def start_run(self, name: str, **body: Any) -> dict[str, Any]:
        result = self.trigger(name, **body)
        assert result["succeeded"], result
        return result["succeeded"][0]["job_run"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"{self.w}/job-runs/{run_id}")

    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 1000}
        if name:
            params["job_id"] = self.job_id(name)
        return self.get(f"{self.w}/job-runs", params=params)["items"]

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        resp = self.http.get(f"/logs/v1/workspaces/{self.ws_id}/job-runs/{run_id}/logs")
        assert resp.status_code == 200, resp.text
        return [json.loads(x) for x in resp.text.splitlines() if x.strip()]

    def user_output(self, run_id: str) -> list[str]:
        return [x["content"] for x in self.logs(run_id) if x["source"] == "user"]

    def wait_run(
        self, run_id: str, timeout: float = 30, states: set[str] = TERMINAL
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in states:
                return run
            time.sleep(0.05)
        raise TimeoutError(f"run {run_id} still {run['status']} after {timeout}s")

    def wait_for(self, check: Any, timeout: float = 30, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{what} not reached in {timeout}s\n{self.log()[-3000:]}")

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HEADWATER_URL": self.url, "HEADWATER_WORKSPACE_ID": self.ws_id}
        env.pop("HEADWATER_API_KEY", None)  # the CLI finds the local admin key itself
        proc = subprocess.run(
            [sys.executable, "-m", "headwater.cli.main", *args],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_VHOST = f"headwater-test-{_XDIST_WORKER}" if _XDIST_WORKER else ""
"""Tests run in parallel (pytest-xdist) each get a RabbitMQ vhost of their own, as two
deployments should: their servers all send runs to a queue named `default`."""
AMQP_URL = os.environ.get(
    "HEADWATER_TEST_AMQP_URL", f"amqp://guest:guest@127.0.0.1:5672/{_VHOST or '/'}"
)


class RemoteWorkerProcess:
    """One `headwater worker` process in a folder of its own (its "host")."""

    def __init__(
        self,
        home: Path,
        srv: Server,
        database: str,
        key: str,
        name: str,
        *extra: str,
        broker: str = AMQP_URL,
        servers: str | None = None,
    ) -> None:
        self.broker = broker
        self.servers = servers or srv.url
        """`--server`: the server's URL, or several separated by commas."""
        self.home = home
        self.srv = srv
        self.database = database
        self.key = key
        self.name = name
        self.extra = extra
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"worker-{name}.log"

    def start(self) -> RemoteWorkerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "headwater.cli.main",
                    "worker",
                    "--db",
                    self.database,
                    "--broker",
                    self.broker,
                    "--server",
                    self.servers,
                    "--key",
                    self.key,
                    "--name",
                    self.name,
                    "--home",
                    str(self.home),
                    *self.extra,
                ],
                cwd=self.home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        atexit.register(Server._kill_quietly, self.proc)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def require_rabbitmq() -> None:
    """Skip on a laptop without RabbitMQ; fail in CI, where it must be tested."""
    import pytest
    from kombu import Connection

    try:
        _ensure_vhost()
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as ex:
        msg = (
            f"RabbitMQ at {AMQP_URL} is unreachable ({ex}); start it or set HEADWATER_TEST_AMQP_URL"
        )
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{msg}. CI is set, so broker tests must not be skipped.", pytrace=False)
        pytest.skip(msg)


@functools.cache
def _ensure_vhost() -> None:
    """Make this test process's vhost (with `rabbitmqctl`, on the broker's machine)."""
    if not _VHOST or "HEADWATER_TEST_AMQP_URL" in os.environ:
        return
    for args in (
        ["add_vhost", _VHOST],
        ["set_permissions", "-p", _VHOST, "guest", ".*", ".*", ".*"],
    ):
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
        if done.returncode and "already exists" not in done.stdout + done.stderr:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")


def delete_queue(name: str) -> None:
    from kombu import Connection, Queue

    with Connection(AMQP_URL, connect_timeout=3) as conn:
        Queue(name, channel=conn.channel()).delete()


def celery_args(database: str, broker: str, lease_s: float) -> tuple[str, ...]:
    """`headwater up`'s arguments for remote workers: PostgreSQL, Celery, a short lease."""
    return (
        "--db",
        database,
        "--executor",
        "celery",
        "--broker",
        broker,
        "--lease-seconds",
        f"{lease_s:g}",
    )


class RemoteServer(Server):
    """`headwater up` on PostgreSQL with `--executor celery`, and `headwater worker`s each in
    a folder of its own (no shared files): the same helpers as `Server`, every run on a
    remote worker. Workers serve the `default` pool, emptied of earlier tests' messages
    first. A `kill()` or `stop()` then `start()` restarts the server; the workers go on."""

    def __init__(
        self,
        workspace: Path,
        *extra: str,
        database: str,
        workers: int = 1,
        slots: int = 4,
        broker: str = AMQP_URL,
        lease_s: float = 3.0,
        worker_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(workspace, *celery_args(database, broker, lease_s), *extra)
        self.database, self.broker, self.lease_s = database, broker, lease_s
        self.n_workers, self.slots, self.worker_args = workers, slots, worker_args
        self.workers: list[RemoteWorkerProcess] = []

    def start(self, wait_warm: bool = True) -> RemoteServer:
        if not self.workers and self.broker == AMQP_URL:
            require_rabbitmq()
            delete_queue("default")
        super().start(wait_warm=False)
        if not self.workers:
            body = {"name": "test workers", "scope": "worker"}
            key = str(self.post(f"{self.w}/api-keys", json=body)["key"])
            for i in range(self.n_workers):
                w = RemoteWorkerProcess(
                    self.workspace.parent / f"worker-{self.port}-{i}",
                    self,
                    self.database,
                    key,
                    f"w{i}",
                    "--slots",
                    str(self.slots),
                    "--lease-seconds",
                    f"{self.lease_s:g}",
                    *self.worker_args,
                    broker=self.broker,
                )
                self.workers.append(w.start())
            self.wait_for(
                lambda: (
                    sum(w["live"] for w in self.get(f"{self.w}/workers")["items"]) >= self.n_workers
                ),
                60,
                "live workers",
            )
        if wait_warm:
            self.wait_for(
                lambda: all("warm launcher ready" in w.log() for w in self.workers),
                60,
                "the workers' warm launchers",
            )
        return self

    def log(self) -> str:
        return "\n".join(
            [super().log(), *(f"--- worker {w.name}:\n{w.log()[-3000:]}" for w in self.workers)]
        )

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []


@contextmanager
def remote_server(workspace: Path, *extra: str, **kw: Any) -> Iterator[RemoteServer]:
    """A `RemoteServer` on a database of its own, all of it stopped and dropped after
    (its start is the caller's)."""
    with new_pg_database() as database:
        srv = RemoteServer(workspace, *extra, database=database, **kw)
        try:
            yield srv
        finally:
            srv.stop_workers()
            srv.stop()


WHERE = ["local", "remote"]
"""Where a module's runs go, for fixtures that test both: `headwater up`'s own worker
(SQLite), or remote workers (`RemoteServer`: PostgreSQL and RabbitMQ)."""


@contextmanager
def served(
    workspace: Path, where: str = "local", *extra: str, wait_warm: bool = True, **kw: Any
) -> Iterator[Server]:
    """A started `Server` (`where="local"`) or `RemoteServer` (`"remote"`), stopped after."""
    if where == "remote":
        with remote_server(workspace, *extra, **kw) as remote:
            yield remote.start(wait_warm)
        return
    srv = Server(workspace, *extra).start(wait_warm)
    try:
        yield srv
    finally:
        srv.stop()
