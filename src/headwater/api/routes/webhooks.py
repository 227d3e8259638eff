"""Webhook triggers: `webhook:<path>` jobs fire on `POST /api/v1/workspaces/{ws}/webhooks/<path>`.

The caller proves itself with an API key (trigger scope) or, for senders that
cannot hold one, an HMAC-SHA256 of the raw body in `X-Headwater-Signature:
sha256=<hex>` (GitHub's `X-Hub-Signature-256` is read too). The JSON body
becomes the runs' parameters.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from headwater.api.auth import Authenticator, Principal
from headwater.api.context import ApiContext
from headwater.api.idempotency import idempotent
from headwater.api.json_route import parse_json
from headwater.api.limits import check_parameters
from headwater.api.responses import ApiError
from headwater.core.access import Action, Scope, allows
from headwater.workspace.launch import fire

SIGNATURE_HEADERS = ("x-headwater-signature", "x-hub-signature-256")
MAX_BODY = 1024 * 1024
WEBHOOK_PRINCIPAL = "webhook-signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def router(ctx: ApiContext, auth: Authenticator) -> APIRouter:
    r = APIRouter(tags=["webhooks"])

    async def receive(ws: str, path: str, request: Request) -> Any:
        ctx.check_ws(ws)
        body = await request.body()
        if len(body) > MAX_BODY:
            raise ApiError(413, f"webhook body larger than {MAX_BODY} bytes", "payload_too_large")
        # the store is synchronous: keep it off the event loop
        return await run_in_threadpool(process, ws, path, request, body)

    def process(ws: str, path: str, request: Request, body: bytes) -> Any:
        principal = _authenticate(request, body)
        payload = parse_json(body, "webhook body") if body.strip() else {}
        parameters = payload if isinstance(payload, dict) else {"payload": payload}
        check_parameters(parameters)
        trigger = f"webhook:{path}"
        jobs, _ = ctx.store.list_jobs(ws, is_archived=False, limit=100_000)
        targets = [j for j in jobs if trigger in j["definition"].get("triggers", [])]
        if not targets:
            raise ApiError(404, f"no job has the trigger {trigger!r}", "webhook_not_found")
        return idempotent(
            ctx.store,
            request,
            principal,
            {"path": path, "body": payload},
            lambda: _fire(targets, trigger, parameters, principal),
        )

    def _authenticate(request: Request, body: bytes) -> Principal:
        if request.headers.get("authorization"):
            principal = auth.authenticate(request)
            if not allows(principal.scope, Action.TRIGGER):
                raise ApiError(
                    403, f"a {principal.scope.value} key may not trigger", "not_authorized"
                )
            return principal
        sent = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), None)
        if sent is None:
            raise ApiError(
                401,
                "a webhook needs an API key or an X-Headwater-Signature (HMAC-SHA256 of the body)",
                "not_authenticated",
            )
        secret = ctx.webhook_secret()
        if not secret:
            raise ApiError(
                401, "this server has no webhook signing secret set", "not_authenticated"
            )
        if not hmac.compare_digest(sent.strip(), signature(secret, body)):
            raise ApiError(401, "webhook signature does not match the body", "invalid_signature")
        return Principal(key_id=WEBHOOK_PRINCIPAL, name="webhook", scope=Scope.TRIGGER)

    def _fire(
        targets: list[dict[str, Any]], trigger: str, parameters: dict[str, Any], p: Principal
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        succeeded, skipped = [], []
        for job in targets:
            result = fire(
                ctx.store,
                job,
                trigger,
                now=now,
                parameters=parameters,
                triggered_by=None if p.key_id == WEBHOOK_PRINCIPAL else p.key_id,
            )
            item = {
                "job_id": job["id"],
                "job_ref": job["job_ref"],
                "matched_triggers": [trigger],
                "trigger": trigger,
                "status": result.decision.status.value,
                "reasons": result.decision.reasons or None,
                "job_run_id": result.run["id"] if result.run else None,
                "job_run": ctx.run_view(result.run, job) if result.run else None,
            }
            (succeeded if result.decision.creates_run else skipped).append(item)
        return {"succeeded": succeeded, "skipped": skipped, "failed": []}

    @r.post("/api/v1/workspaces/{ws}/webhooks")
    async def webhook_root(ws: str, request: Request) -> Any:
        """Jobs with the bare `webhook:` trigger."""
        return await receive(ws, "", request)

    @r.post("/api/v1/workspaces/{ws}/webhooks/{path:path}")
    async def webhook(ws: str, path: str, request: Request) -> Any:
        return await receive(ws, path, request)

    return r
