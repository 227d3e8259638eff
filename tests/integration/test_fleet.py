"""Many hosts: `headwater up --executor celery` on PostgreSQL and RabbitMQ, and
`headwater worker`s as separate processes, each in a folder of its own (no shared files
but the markers the test counts)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.integration.harness import (
    AMQP_URL,
    HERE,
    TERMINAL,
    RemoteWorkerProcess,
    Server,
    celery_args,
    copy_workspace,
    delete_queue,
    new_pg_database,
    require_rabbitmq,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
LEASE_S = 3


@pytest.fixture
def database() -> Iterator[str]:
    with new_pg_database("hw_fleet") as name:
        yield name


class Fleet:
    def __init__(self, tmp: Path, database: str, toml: str = "", broker: str = AMQP_URL) -> None:
        if broker == AMQP_URL:
            require_rabbitmq()
        self.broker = broker
        self.tmp = tmp
        self.database = database
        self.pool = f"fleet_{uuid.uuid4().hex[:8]}"  # a queue of this test's own
        self.markers = tmp / "markers"
        self.markers.mkdir()
        ws = copy_workspace(HERE / "fleet_workspace", tmp / "server")
        (ws / "headwater.toml").write_text(f'[jobs."*"]\npool = "{self.pool}"\n{toml}')
        self.srv = Server(ws, *celery_args(database, broker, LEASE_S))
        self.workers: list[RemoteWorkerProcess] = []

    def start(self, n: int, slots: int = 4) -> Fleet:
        self.start_server()
        for i in range(n):
            self.add_worker(f"w{i}", slots)
        self.wait_live(n)
        return self

    def start_server(self) -> None:
        self.srv.start(wait_warm=False)
        # workers take a key of their own, which may fetch code and run environments only
        body = {"name": "fleet workers", "scope": "worker"}
        self.worker_key = str(self.srv.post(f"{self.srv.w}/api-keys", json=body)["key"])

    def add_worker(
        self, name: str, slots: int = 4, servers: str | None = None
    ) -> RemoteWorkerProcess:
        w = RemoteWorkerProcess(
            self.tmp / name,
            self.srv,
            self.database,
            self.worker_key,
            name,
            "--pool",
            self.pool,
            "--slots",
            str(slots),
            "--lease-seconds",
            str(LEASE_S),
            broker=self.broker,
            servers=servers,
        )
        w.env = {"FLEET_MARKERS": str(self.markers), "FLEET_WORKER": name}
        self.workers.append(w.start())
        return w

    def workers_view(self) -> dict[str, Any]:
        return dict(self.srv.get(f"{self.srv.w}/workers"))

    def wait_live(self, n: int) -> None:
        self.srv.wait_for(
            lambda: sum(w["live"] for w in self.workers_view()["items"]) >= n,
            60,
            f"{n} live workers\n" + "\n".join(w.log()[-2000:] for w in self.workers),
        )

    def trigger(self, n: int, seconds: float) -> list[str]:
        """`n` runs of `marked`, triggered from 8 threads at once (a burst)."""
        job_id = self.srv.job_id("marked")
        body = {"job_ids": [job_id], "parameters": {"seconds": str(seconds)}}

        def one(_: int) -> str:
            answer = self.srv.post(f"{self.srv.w}/jobs/-trigger", json=body)
            return str(answer["succeeded"][0]["job_run"]["id"])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.srv.stop()
        if self.broker == AMQP_URL:
            delete_queue(self.pool)


def db_rows(database: str, sql: str) -> list[tuple[Any, ...]]:
    dsn = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def test_a_run_goes_to_a_worker_and_back_with_its_log(tmp_path: Path, database: str) -> None:
    fleet = Fleet(tmp_path, database).start(1)
    try:
        run_id = fleet.trigger(1, 0.1)[0]
        run = fleet.srv.wait_run(run_id, 60)
        assert run["status"] == "completed", fleet.workers[0].log()[-3000:]
        output = fleet.srv.user_output(run_id)
        assert "marked started on w0" in output
        # from the package the worker fetched into its own folder, not the server's
        (code_line,) = [line for line in output if line.startswith("code from ")]
        assert code_line.startswith(f"code from {fleet.tmp / 'w0' / 'cache' / 'run'}")
        assert (fleet.markers / f"{run_id}.done").read_text().startswith("w0 ")
        view = fleet.workers_view()
        assert [w["name"] for w in view["items"]] == ["w0"]
        assert view["pools"][0]["pool"] == fleet.pool
        listed = fleet.srv.cli("worker", "ls").stdout
        assert "w0" in listed and fleet.pool in listed
    finally:
        fleet.stop()


def test_redis_carries_runs_as_well(tmp_path: Path, database: str) -> None:
    redis_url = os.environ.get("HEADWATER_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
    fleet = Fleet(tmp_path, database, broker=redis_url).start(1)
    try:
        run_id = fleet.trigger(1, 0.1)[0]
        assert fleet.srv.wait_run(run_id, 60)["status"] == "completed"
    finally:
        fleet.stop()


def test_runs_wait_for_a_worker_of_their_pool_and_say_so(tmp_path: Path, database: str) -> None:
    fleet = Fleet(tmp_path, database)
    fleet.start_server()
    try:
        run_id = fleet.trigger(1, 0.1)[0]
        waiting = fleet.srv.wait_for(
            lambda: (
                (r := fleet.srv.run(run_id)) and "no live worker" in (r.get("reason") or "") and r
            ),
            20,
            "the run's reason",
        )
        assert waiting["status"] == "pending"
        assert fleet.pool in waiting["reason"]
        fleet.add_worker("late")
        assert fleet.srv.wait_run(run_id, 60)["status"] == "completed"
    finally:
        fleet.stop()


def test_a_burst_ends_exactly_once_through_a_killed_and_a_frozen_worker(
    tmp_path: Path, database: str
) -> None:
    fleet = Fleet(tmp_path, database).start(3, slots=4)
    try:
        started = time.monotonic()
        ids = fleet.trigger(300, 1.0)
        # mid-burst: one worker dies, one is frozen for longer than two leases
        fleet.srv.wait_for(
            lambda: len(list(fleet.markers.glob("*.done"))) >= 60, 120, "60 runs done"
        )
        killed, frozen = fleet.workers[0], fleet.workers[1]
        killed.signal(signal.SIGKILL)
        frozen.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        done_at_kill = len(list(fleet.markers.glob("*.done")))
        fleet.srv.wait_for(
            lambda: any("worker lost" in (r.get("reason") or "") for r in fleet.srv.runs("marked")),
            4 * LEASE_S,
            "runs of the lost workers ended as lost",
        )
        lost_after = time.monotonic() - frozen_at
        # throughput recovers on the worker left
        fleet.srv.wait_for(
            lambda: len(list(fleet.markers.glob("*.done"))) >= done_at_kill + 40,
            120,
            "the burst going on without them",
        )
        frozen.signal(signal.SIGCONT)

        def all_ended() -> list[dict[str, Any]] | None:
            runs = fleet.srv.runs("marked")
            return runs if all(r["status"] in TERMINAL for r in runs) else None

        runs = fleet.srv.wait_for(all_ended, 240, "every run of the burst ended")
        elapsed = time.monotonic() - started
        assert {r["id"] for r in runs} == set(ids)
        by_status: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            by_status.setdefault(r["status"], []).append(r)
        lost = by_status.get("failed", [])
        assert all(r["reason"].startswith("worker lost") for r in lost), lost[:3]
        assert 0 < len(lost) <= 8  # at most the two lost workers' slots
        assert len(by_status["completed"]) == 300 - len(lost)
        # each run ended once: one terminal event per run
        twice = db_rows(
            database,
            "SELECT run_id FROM events WHERE kind IN"
            " ('run.completed', 'run.failed', 'run.cancelled')"
            " GROUP BY run_id HAVING count(*) > 1",
        )
        assert twice == []
        # and none ran twice at once, nor more than once
        assert list(fleet.markers.glob("*.double")) == []
        for r in by_status["completed"]:
            lines = (fleet.markers / f"{r['id']}.done").read_text().splitlines()
            assert len(lines) == 1, (r["id"], lines)
        for r in lost:
            done = fleet.markers / f"{r['id']}.done"
            assert not done.exists() or len(done.read_text().splitlines()) == 1
        print(
            f"300 runs on 3 workers, 2 lost mid-burst: {elapsed:.1f}s; lost seen {lost_after:.1f}s"
        )
        assert lost_after <= 4 * LEASE_S
    finally:
        fleet.stop()


def test_a_worker_does_not_start_under_a_live_workers_name_or_with_a_wrong_key(
    tmp_path: Path, database: str
) -> None:
    """A copy-pasted `--name`: starting would end the live worker's runs as lost. A key the
    server refuses: every run it took would fail."""
    fleet = Fleet(tmp_path, database).start(1)

    def refused(name: str, key: str) -> str:
        other = RemoteWorkerProcess(
            tmp_path / "other" / name,  # a folder of its own: another host's copy of the command
            fleet.srv,
            database,
            key,
            name,
            "--pool",
            fleet.pool,
            broker=fleet.broker,
        ).start()
        assert other.proc is not None and other.proc.wait(60) != 0, other.log()[-2000:]
        return " ".join(other.log().split())

    try:
        run_id = fleet.trigger(1, 15)[0]
        fleet.srv.wait_run(run_id, 60, {"running"})
        said = refused("w0", fleet.worker_key)
        assert "worker 'w0' is running on" in said, said[-2000:]
        assert fleet.srv.run(run_id)["status"] == "running"  # untouched
        assert fleet.workers[0].proc.poll() is None  # type: ignore[union-attr]
        body = {"name": "a reader", "scope": "read"}
        read_key = str(fleet.srv.post(f"{fleet.srv.w}/api-keys", json=body)["key"])
        for key, why in [(read_key, "403"), ("dlt_sa_notakey", "401 unknown API key")]:
            said = refused("w9", key)
            assert why in said and "--scope worker" in said, said[-2000:]
        assert fleet.srv.wait_run(run_id, 60)["status"] == "completed"  # on its worker
    finally:
        fleet.stop()


def test_a_worker_back_under_its_name_kills_what_it_left(tmp_path: Path, database: str) -> None:
    fleet = Fleet(tmp_path, database).start(1)
    try:
        run_id = fleet.trigger(1, 120)[0]
        fleet.srv.wait_run(run_id, 60, {"running"})
        fleet.srv.wait_for(
            lambda: "marked started" in " ".join(fleet.srv.user_output(run_id)), 30, "started"
        )
        pid = fleet.srv.run(run_id)
        row = db_rows(database, f"SELECT pid FROM runs WHERE id = '{run_id}'")[0]
        left = psutil.Process(int(row[0]))
        w = fleet.workers[0]
        w.signal(signal.SIGKILL)
        w.proc.wait()  # type: ignore[union-attr]
        assert left.is_running()  # the run's process outlived its worker
        ended = fleet.srv.wait_run(run_id, 4 * LEASE_S)
        assert ended["status"] == "failed" and ended["reason"].startswith("worker lost"), pid
        w.start()
        left.wait(30)  # killed by the worker's new start
        fleet.wait_live(1)
    finally:
        fleet.stop()


def test_two_servers_both_answer_and_the_standby_takes_the_engine_over(
    tmp_path: Path, database: str
) -> None:
    fleet = Fleet(tmp_path, database)
    fleet.start_server()
    a = fleet.srv
    # a second server on the same database, from its own copy of the workspace
    b_ws = copy_workspace(a.workspace, tmp_path / "server-b")
    b = Server(b_ws, *a.extra).start(wait_warm=False)
    try:
        assert b.ws_id == a.ws_id
        holder = lambda: db_rows(database, "SELECT holder FROM leader_leases")  # noqa: E731
        assert holder() and holder()[0][0].endswith(f":{a.proc.pid}")  # type: ignore[union-attr]
        # the worker knows both servers, A first; the API is asked of B
        fleet.add_worker("w0", servers=f"{a.url},{b.url}")
        fleet.srv = b
        fleet.wait_live(1)
        first = fleet.trigger(1, 0.1)[0]  # asked of B; A's engine dispatches it
        assert b.wait_run(first, 60)["status"] == "completed"
        a.kill()  # the next run's environment comes from B
        taken = time.monotonic()
        b.wait_for(
            lambda: holder()[0][0].endswith(f":{b.proc.pid}"),  # type: ignore[union-attr]
            4 * LEASE_S,
            "the standby holding the engine lease",
        )
        took = time.monotonic() - taken
        second = fleet.trigger(1, 0.1)[0]
        assert b.wait_run(second, 60)["status"] == "completed"
        assert "runs the engine" in b.log()
        print(f"the standby ran the engine {took:.1f}s after the leader was killed")
    finally:
        fleet.stop()
        b.stop()
