"""Webhook triggers: `webhook:<path>` jobs fire on `POST /api/v1/workspaces/{ws}/webhooks/<path>`.

The caller proves itself with an API key (trigger scope) or, for senders that
cannot hold one, a signature in Stripe's scheme: `X-Headwater-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, accepted while `t`
is within `TOLERANCE_S` of the server's clock (several `v1=` may be sent while a
secret is rotated). GitHub's `X-Hub-Signature-256: sha256=<hex of the body>` is
read too: it signs no time, so it can be replayed once its record is forgotten.

A delivery is answered once: a repeat of its `X-Headwater-Delivery` (or
`X-GitHub-Delivery`) id, or of its exact signature, within 24 h gets the first
answer (the first runs) and starts nothing. The JSON body becomes the runs'
parameters.
"""

from __future__ import annotations

import hmac
import time
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
from headwater.core import signatures
from headwater.core.access import Action, Scope, allows
from headwater.workspace.launch import fire

SIGNATURE_HEADER = "x-headwater-signature"
GITHUB_SIGNATURE_HEADER = "x-hub-signature-256"
DELIVERY_HEADERS = ("x-headwater-delivery", "x-github-delivery")
MAX_BODY = 1024 * 1024
MAX_DELIVERY_ID = 200
TOLERANCE_S = 300
"""How far a signature's `t` may be from the server's clock, either way."""
WEBHOOK_PRINCIPAL = "webhook-signature"


_hmac = signatures.hmac_hex


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `X-Headwater-Signature` value a sender sends with `body` (now, unless `timestamp`)."""
    return signatures.signature(secret, body, int(time.time()) if timestamp is None else timestamp)


def github_signature(secret: str, body: bytes) -> str:
    """GitHub's `X-Hub-Signature-256` value: the body alone, no time."""
    return "sha256=" + _hmac(secret, body)


def check_signature(secret: str, header: str, body: bytes, now: float) -> str:
    """A 401 unless `header` (`t=...,v1=...`) signs `body` at a time within the tolerance;
    answers the matching `v1`, which names this delivery."""
    if header.startswith("sha256="):
        raise ApiError(
            401,
            "X-Headwater-Signature no longer takes the untimed `sha256=<hex>` form (it could be"
            ' replayed): send `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`',
            "invalid_signature",
        )
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value.strip())
    stamp = (fields.get("t") or [""])[0]
    if not stamp.isdigit() or not fields.get("v1"):
        raise ApiError(
            401,
            "malformed X-Headwater-Signature: send `t=<unix seconds>,v1=<hex HMAC-SHA256 of"
            ' "<t>.<body>">`',
            "invalid_signature",
        )
    age = now - int(stamp)
    if abs(age) > TOLERANCE_S:
        when = f"{int(age)} s old" if age > 0 else f"{int(-age)} s in the future"
        raise ApiError(
            401,
            f"webhook signature timestamp is {when}; it must be within {TOLERANCE_S} s of the"
            " server's clock (sign each delivery when sending it, and check the sender's clock)",
            "signature_expired",
        )
    expected = _hmac(secret, f"{stamp}.".encode() + body)
    for sent in fields["v1"]:
        if hmac.compare_digest(sent.lower(), expected):
            return expected
    raise ApiError(401, "webhook signature does not match the body", "invalid_signature")


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
        principal, signed = _authenticate(request, body)
        delivery = _delivery_id(request)
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
            # a delivery is answered once: its id, or its very signature (a replay)
            also=tuple(
                k for k in (delivery and f"delivery:{delivery}", signed and f"sig:{signed}") if k
            ),
        )

    def _delivery_id(request: Request) -> str | None:
        sent = next((request.headers[h] for h in DELIVERY_HEADERS if h in request.headers), None)
        if sent is None:
            return None
        sent = sent.strip()
        if not sent or len(sent) > MAX_DELIVERY_ID:
            raise ApiError(
                400, f"a delivery id must be 1 to {MAX_DELIVERY_ID} characters", "invalid_request"
            )
        return sent

    def _authenticate(request: Request, body: bytes) -> tuple[Principal, str | None]:
        """The caller, and for a signed request the signature that names the delivery."""
        if request.headers.get("authorization"):
            principal = auth.authenticate(request)
            if not allows(principal.scope, Action.TRIGGER):
                raise ApiError(
                    403, f"a {principal.scope.value} key may not trigger", "not_authorized"
                )
            return principal, None
        ours = request.headers.get(SIGNATURE_HEADER)
        github = request.headers.get(GITHUB_SIGNATURE_HEADER)
        if ours is None and github is None:
            raise ApiError(
                401,
                "a webhook needs an API key or an X-Headwater-Signature"
                ' (t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">)',
                "not_authenticated",
            )
        secret = ctx.webhook_secret()
        if not secret:
            raise ApiError(
                401, "this server has no webhook signing secret set", "not_authenticated"
            )
        if ours is not None:
            signed = check_signature(secret, ours.strip(), body, time.time())
        else:
            assert github is not None
            signed = github_signature(secret, body)
            if not hmac.compare_digest(github.strip(), signed):
                raise ApiError(
                    401, "webhook signature does not match the body", "invalid_signature"
                )
        principal = Principal(key_id=WEBHOOK_PRINCIPAL, name="webhook", scope=Scope.TRIGGER)
        return principal, signed

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
