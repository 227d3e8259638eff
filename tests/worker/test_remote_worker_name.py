"""A worker's name at start: refused while another live worker holds it, free once that
one stopped or went silent for a lease (on another host, its process cannot be looked at)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import Store
from headwater.worker.remote import RemoteWorker, WorkerNameTaken


@pytest.fixture
def worker(tmp_path: Path) -> RemoteWorker:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    store = Store(engine)
    store.ensure_workspace("/w", "w")
    return RemoteWorker(
        store, tmp_path / "home", name="eu-1", code_folder=lambda run: tmp_path, warm=False,
        lease_s=15,
    )  # fmt: skip


def test_another_hosts_live_worker_keeps_its_name_until_silent_for_a_lease(
    worker: RemoteWorker,
) -> None:
    now = datetime.now(UTC)
    worker.store.register_worker(
        "eu-1", host="elsewhere", pid=7, pools=["default"], slots=4, now=now
    )
    with pytest.raises(WorkerNameTaken, match=r"worker 'eu-1' is running on elsewhere \(pid 7"):
        worker._check_name_free()
    worker.store.register_worker(
        "eu-1", host="elsewhere", pid=7, pools=["default"], slots=4, now=now - timedelta(seconds=16)
    )
    worker._check_name_free()  # lost: its runs are ended or retried by the server
    worker.store.register_worker(
        "eu-1", host="elsewhere", pid=7, pools=["default"], slots=4, now=now
    )
    worker.store.worker_stopped("eu-1")
    worker._check_name_free()  # stopped
