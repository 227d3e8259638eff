"""Server-side failures over a real HTTP connection: a store that cannot write answers
503 with `Retry-After`, and no error (503 or 500) closes the client's keep-alive
connection. The API app runs in this process under uvicorn, on a store made here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy import event

from headwater.api.app import create_app
from headwater.api.context import ApiContext
from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.packages import PackageStore
from headwater.store.store import Store
from headwater.store.vault import VariableStore
from tests.integration.harness import free_port


class Api:
    def __init__(self, tmp: Path) -> None:
        self.engine = make_engine(sqlite_url(tmp / "headwater.db"))
        upgrade(self.engine)
        self.store = Store(self.engine)
        self.ws_id = self.store.ensure_workspace(str(tmp), "errors")["id"]
        _row, self.key = self.store.create_key(self.ws_id, "admin", "admin")
        ctx = ApiContext(
            store=self.store,
            ws_id=self.ws_id,
            base_url=lambda: self.url,
            reload_manifest=lambda: {},
            manifest_status=lambda: {},
            packages=PackageStore(self.engine),
            accept_package=lambda *_: None,
            deploy=lambda *_: {},
            variables=VariableStore(self.engine, Fernet.generate_key()),
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Api:
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.02)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def read_only(self) -> None:
        """From now on every new connection of the store refuses writes, as SQLite does
        on a read-only file."""

        @event.listens_for(self.engine, "connect")
        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA query_only=ON")

        self.engine.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with Api(tmp_path) as api:
        yield api


def stream_of(resp: httpx.Response) -> Any:
    return resp.extensions["network_stream"]


def test_a_store_that_cannot_write_answers_503_with_retry_after_and_reads_go_on(
    api: Api,
) -> None:
    api.read_only()
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}) as http:
        keys = f"/api/v1/workspaces/{api.ws_id}/api-keys"
        assert http.get(keys).status_code == 200  # the key's first use cannot be recorded
        refused = http.post(keys, json={"name": "new", "scope": "read"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"].isdigit()
        body = refused.json()
        assert body["code"] == "store_unavailable" and "readonly" in body["detail"]
        listed = http.get(keys)
        assert listed.status_code == 200, listed.text
        assert stream_of(listed) is stream_of(refused)  # the same connection


def test_a_500_keeps_the_connection_for_the_next_request(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.store, "list_keys", broken)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}) as http:
        failed = http.get(f"/api/v1/workspaces/{api.ws_id}/api-keys")
        assert failed.status_code == 500
        assert failed.json()["code"] == "internal_error"
        assert "a bug" not in failed.text
        assert failed.headers.get("connection") != "close"
        after = http.get("/health")
        assert after.status_code == 200
        assert stream_of(after) is stream_of(failed)  # the same connection
