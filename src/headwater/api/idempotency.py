"""`Idempotency-Key`: a repeat within 24 h answers the first answer and creates nothing."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from headwater.api.auth import Principal
from headwater.api.responses import ApiError, JSONBody
from headwater.store.store import Store

WINDOW = timedelta(hours=24)
WAIT_FOR_FIRST_S = 30.0
MAX_KEY = 255


def idempotent(
    store: Store,
    request: Request,
    principal: Principal,
    body: Any,
    answer: Callable[[], Any],
    status_code: int = 200,
    also: tuple[str, ...] = (),
) -> Any:
    """Run `answer()` once per (key, Idempotency-Key); repeats get the stored answer.

    `also`: more keys that name this request (a webhook's delivery id, its signature):
    a request that repeats any of them gets the first answer too.
    """
    keys = [k for k in (_header(request), *also) if k]
    if not keys:
        return JSONBody(answer(), status_code=status_code)
    claimed: list[str] = []
    for key in keys:
        try:
            replay = _claim(store, request, principal, body, key)
        except Exception:
            _release(store, principal, claimed)
            raise
        if replay is not None:
            _release(store, principal, claimed)
            return replay
        claimed.append(key)
    try:
        result = answer()
    except Exception:
        _release(store, principal, claimed)
        raise
    for key in claimed[1:]:
        _keep(store, principal, key, status_code, result)
    return _keep(store, principal, claimed[0], status_code, result)


def _release(store: Store, principal: Principal, keys: list[str]) -> None:
    for key in keys:
        store.release_idempotency(principal.key_id, key)


async def idempotent_async(
    store: Store,
    request: Request,
    principal: Principal,
    body: Any,
    answer: Callable[[], Awaitable[Any]],
    status_code: int = 200,
) -> Any:
    """`idempotent` on the event loop: the key's bookkeeping runs in a thread."""
    key = _header(request)
    if key is None:
        return JSONBody(await answer(), status_code=status_code)
    replay = await run_in_threadpool(_claim, store, request, principal, body, key)
    if replay is not None:
        return replay
    try:
        result = await answer()
    except Exception:
        await run_in_threadpool(store.release_idempotency, principal.key_id, key)
        raise
    return await run_in_threadpool(_keep, store, principal, key, status_code, result)


def _header(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_KEY} characters", "invalid_request")
    return key


def _claim(
    store: Store, request: Request, principal: Principal, body: Any, key: str
) -> JSONBody | None:
    """Claim the key for this request; the stored answer when it was claimed before."""
    request_hash = hashlib.sha256(
        request.url.path.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    prior = store.claim_idempotency(principal.key_id, key, request_hash, datetime.now(UTC) - WINDOW)
    if prior is None:
        return None
    if prior["request_hash"] != request_hash:
        raise ApiError(
            409,
            "this Idempotency-Key was used for a different request in the last 24 h",
            "idempotency_key_reused",
        )
    deadline = time.monotonic() + WAIT_FOR_FIRST_S
    while prior is not None and prior["status_code"] is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first request is still being answered
        prior = store.get_idempotency(principal.key_id, key)
    if prior is None or prior["status_code"] is None:
        raise ApiError(
            409, "the first request with this Idempotency-Key is still running", "conflict"
        )
    return JSONBody(
        prior["response"],
        status_code=prior["status_code"],
        headers={"Idempotent-Replayed": "true"},
    )


def _keep(store: Store, principal: Principal, key: str, status_code: int, result: Any) -> JSONBody:
    """Store the first answer for repeats, and answer it."""
    stored = orjson.loads(orjson.dumps(result, option=orjson.OPT_UTC_Z))
    store.finish_idempotency(principal.key_id, key, status_code, stored)
    return JSONBody(stored, status_code=status_code)
