"""Webhook triggers on a real server: key or HMAC signature, the JSON body as parameters."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from headwater.api.routes.webhooks import signature
from tests.integration.harness import Server

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789"
WORKSPACE = """
import dlt
import dlt.hub.run as run


@run.job(trigger=[run.trigger.webhook("orders")], execute={"concurrency": None})
def on_order(order_id: str = dlt.config.value, amount: int = dlt.config.value):
    print(f"order {order_id} amount {amount}")


@run.job(trigger=[run.trigger.webhook("orders")], execute={"concurrency": None})
def audit(order_id: str = dlt.config.value):
    print(f"audit {order_id}")


@run.job(trigger=[run.trigger.webhook()])
def ping():
    print("pinged")


__all__ = ["on_order", "audit", "ping"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ws = tmp_path_factory.mktemp("hooks") / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(WORKSPACE)
    os.environ["HEADWATER_WEBHOOK_SECRET"] = SECRET
    try:
        srv = Server(ws).start()
    finally:
        del os.environ["HEADWATER_WEBHOOK_SECRET"]
    yield srv
    srv.stop()


def test_webhook_with_a_key_fires_every_job_with_the_path_and_passes_the_body(
    server: Server,
) -> None:
    key = server.cli("key", "create", "--name", "shop", "--scope", "trigger").stdout.strip()
    resp = httpx.post(
        f"{server.url}{server.w}/webhooks/orders",
        json={"order_id": "A-17", "amount": 42},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert resp.status_code == 200, resp.text
    fired = {x["job_ref"]: x for x in resp.json()["succeeded"]}
    assert set(fired) == {"jobs.__deployment__.on_order", "jobs.__deployment__.audit"}
    order = server.wait_run(fired["jobs.__deployment__.on_order"]["job_run_id"])
    assert order["status"] == "completed", server.logs(order["id"])
    assert order["trigger"] == "webhook:orders"
    assert order["parameters"] == {"order_id": "A-17", "amount": 42}
    assert "order A-17 amount 42" in server.user_output(order["id"])


def test_webhook_with_a_valid_signature_fires_without_a_key(server: Server) -> None:
    body = b'{"order_id": "B-2", "amount": 7}'
    resp = httpx.post(
        f"{server.url}{server.w}/webhooks/orders",
        content=body,
        headers={
            "X-Headwater-Signature": signature(SECRET, body),
            "Content-Type": "application/json",
        },
    )
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["succeeded"][0]["job_run_id"]
    assert server.wait_run(run_id)["status"] == "completed"


def test_webhook_rejects_a_bad_signature_a_missing_key_and_bad_json(server: Server) -> None:
    url = f"{server.url}{server.w}/webhooks/orders"
    body = b'{"order_id": "C"}'
    forged = httpx.post(
        url, content=body, headers={"X-Hub-Signature-256": signature("wrong", body)}
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_signature"
    assert httpx.post(url, content=body).status_code == 401
    not_json = server.http.post(f"{server.w}/webhooks/orders", content=b"<xml/>")
    assert not_json.status_code == 400
    unknown = server.http.post(f"{server.w}/webhooks/nothing-here", json={})
    assert unknown.status_code == 404


def test_bare_webhook_trigger_and_read_keys_cannot_fire(server: Server) -> None:
    resp = server.http.post(f"{server.w}/webhooks", json={})
    assert resp.status_code == 200
    assert resp.json()["succeeded"][0]["job_ref"] == "jobs.__deployment__.ping"
    reader = server.cli("key", "create", "--name", "ro", "--scope", "read").stdout.strip()
    denied = httpx.post(
        f"{server.url}{server.w}/webhooks/orders",
        json={"order_id": "x", "amount": 1},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert denied.status_code == 403
