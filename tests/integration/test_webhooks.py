"""Webhook triggers on a real server: key or HMAC signature, the JSON body as parameters."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from headwater.api.routes.webhooks import TOLERANCE_S, github_signature, signature
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
    for forged_headers in (
        {"X-Hub-Signature-256": github_signature("wrong", body)},
        {"X-Headwater-Signature": signature("wrong", body)},
        {"X-Headwater-Signature": signature(SECRET, body + b" ")},
    ):
        forged = httpx.post(url, content=body, headers=forged_headers)
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


def post_signed(server: Server, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{server.w}/webhooks/orders",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def run_ids(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return sorted(x["job_run_id"] for x in resp.json()["succeeded"])


def order_runs(server: Server) -> int:
    return len(server.runs("on_order"))


def test_a_replayed_signed_delivery_starts_no_second_run(server: Server) -> None:
    body = b'{"order_id": "R-1", "amount": 1}'
    before = order_runs(server)
    headers = {"X-Headwater-Signature": signature(SECRET, body)}
    first = post_signed(server, body, **headers)
    again = post_signed(server, body, **headers)
    assert run_ids(again) == run_ids(first)
    assert again.headers.get("idempotent-replayed") == "true"
    # a sender's retry signs anew but keeps its delivery id: the first answer again
    delivery = {"X-Headwater-Delivery": str(uuid.uuid4())}
    sent = {"X-Headwater-Signature": signature(SECRET, body, int(time.time()) - 2)}
    once = post_signed(server, body, **sent, **delivery)
    resigned = signature(SECRET, body, int(time.time()) - 1)
    retry = post_signed(server, body, **{"X-Headwater-Signature": resigned}, **delivery)
    assert run_ids(retry) == run_ids(once) != run_ids(first)
    # GitHub's untimed form: an exact replay is answered once too
    gh = {"X-Hub-Signature-256": github_signature(SECRET, body)}
    hub = post_signed(server, body, **gh, **{"X-GitHub-Delivery": str(uuid.uuid4())})
    hub_replay = post_signed(server, body, **gh, **{"X-GitHub-Delivery": str(uuid.uuid4())})
    assert run_ids(hub_replay) == run_ids(hub)
    assert order_runs(server) == before + 3


def test_a_signature_outside_the_tolerance_or_without_a_time_is_refused(server: Server) -> None:
    body = b'{"order_id": "T-1", "amount": 1}'
    before = order_runs(server)
    for skew in (-(TOLERANCE_S + 60), TOLERANCE_S + 60):
        stale = signature(SECRET, body, int(time.time()) + skew)
        resp = post_signed(server, body, **{"X-Headwater-Signature": stale})
        assert resp.status_code == 401 and resp.json()["code"] == "signature_expired", resp.text
    untimed = post_signed(server, body, **{"X-Headwater-Signature": github_signature(SECRET, body)})
    assert untimed.status_code == 401 and "t=<unix seconds>" in untimed.json()["detail"]
    for malformed in ("t=abc,v1=00", "v1=00", "t=1", ""):
        resp = post_signed(server, body, **{"X-Headwater-Signature": malformed})
        assert resp.status_code == 401, (malformed, resp.text)
    assert order_runs(server) == before
