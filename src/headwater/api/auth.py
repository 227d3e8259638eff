"""API-key authentication: `Authorization: Bearer dlt_sa_...` on every route but `/health`.

Keys are looked up by their SHA-256; a short cache keeps the lookup off the
hot path (a revoke through this server clears it at once, in each of its API
processes: the KEYS wake-up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from headwater.api.responses import ApiError
from headwater.core.access import Action, Scope, allows
from headwater.store import notify
from headwater.store.store import Store

log = logging.getLogger(__name__)

CACHE_S = 5.0
TOUCH_EVERY = timedelta(minutes=1)
DATAPLANE_TOKEN_TTL = timedelta(hours=1)
SESSION_TTL = timedelta(hours=12)
"""How long a sign-in to the pages lasts (a session row: hashed, tied to its key)."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    """The key that authenticated, or for a data-plane token the key that minted it."""
    name: str
    scope: Scope

    def owns(self, run: dict[str, Any]) -> bool:
        return run.get("triggered_by") == self.key_id


class Authenticator:
    def __init__(self, store: Store, ws_id: str) -> None:
        self.store = store
        self.ws_id = ws_id
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._keys_seen = store.notifier.version(notify.KEYS)

    def clear(self) -> None:
        """Forget every cached key here and in this server's other processes."""
        self.store.notifier.notify(notify.KEYS)

    def _cached(self, secret: str) -> tuple[bool, dict[str, Any] | None]:
        """(hit, row): a key looked up less than CACHE_S ago needs no database."""
        now = time.monotonic()
        with self._lock:
            keys = self.store.notifier.version(notify.KEYS)
            if keys != self._keys_seen:
                self._cache.clear()
                self._keys_seen = keys
            hit = self._cache.get(secret)
        if hit is not None and now - hit[0] < CACHE_S:
            return True, hit[1]
        return False, None

    def _lookup(self, secret: str) -> dict[str, Any] | None:
        hit, row = self._cached(secret)
        if hit:
            return row
        now = time.monotonic()
        row = self.store.find_key(secret)
        if row is not None and row["parent_id"]:
            parent = self.store.get_key(row["parent_id"])
            if parent is None or parent["revoked_at"] is not None:
                row = {**row, "revoked_at": row["revoked_at"] or datetime.now(UTC)}
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = (now, row)
        return row

    def authenticate(self, request: Request) -> Principal:
        return self.check_secret(self._secret_of(request))

    @staticmethod
    def _secret_of(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if not header:
            raise ApiError(
                401,
                "an API key is required: send `Authorization: Bearer <key>`",
                "not_authenticated",
            )
        if scheme.lower() not in ("bearer", "token") or not secret.strip():
            raise ApiError(
                401, "malformed Authorization header: use `Bearer <key>`", "not_authenticated"
            )
        return secret.strip()

    def check_secret(self, secret: str) -> Principal:
        """The principal of a key or token, or a 401 saying why it is refused."""
        principal, touch = self._judge(self._lookup(secret))
        if touch is not None:
            self._touch(*touch)
        return principal

    async def check_secret_async(self, secret: str) -> Principal:
        """`check_secret` that stays on the event loop unless the database is needed."""
        hit, row = self._cached(secret)
        if not hit:
            row = await run_in_threadpool(self._lookup, secret)
        principal, touch = self._judge(row)
        if touch is not None:
            await run_in_threadpool(self._touch, *touch)
        return principal

    def _touch(self, key_id: str, now: datetime) -> None:
        """Record when a key was last used; a store that cannot write now fails no request
        for it (reads go on, and a write answers its own 503)."""
        try:
            self.store.touch_key(key_id, now)
        except DBAPIError as ex:
            log.warning("could not record the use of key %s: %s", key_id, ex.orig)

    def check_session(self, session: str) -> Principal:
        """The principal of a pages session id (the cookie `start_session` set), or a 401."""
        principal, _touch = self._judge(self._lookup(session), session=True)
        return principal

    def start_session(self, principal: Principal) -> str:
        """A new pages session for the key behind `principal`: a random id, stored only as
        its hash, that expires, and that a revoke of the key ends."""
        _row, session = self.store.create_key(
            self.ws_id,
            f"session:{principal.name}",
            principal.scope.value,
            expires_at=datetime.now(UTC) + SESSION_TTL,
            kind="session",
            parent_id=principal.key_id,
        )
        return session

    def end_session(self, session: str) -> None:
        row = self._lookup(session)
        if row is not None and row["kind"] == "session":
            self.store.revoke_session(row["id"])
            self.clear()

    def _judge(
        self, row: dict[str, Any] | None, session: bool = False
    ) -> tuple[Principal, tuple[str, datetime] | None]:
        """The principal, and the key to mark used (at most once a minute), or a 401.
        A pages session id is good only as the cookie (`session`), never as a key."""
        if (
            row is None
            or row["workspace_id"] != self.ws_id
            or (row["kind"] == "session") != session
        ):
            what = "session" if session else "API key"
            raise ApiError(401, f"unknown {what}", "invalid_api_key")
        now = datetime.now(UTC)
        if row["revoked_at"] is not None:
            raise ApiError(401, f"API key {row['name']!r} was revoked", "api_key_revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            what = "data-plane token" if row["kind"] == "dataplane" else f"API key {row['name']!r}"
            raise ApiError(
                401, f"{what} expired at {row['expires_at'].isoformat()}", "api_key_expired"
            )
        last = row["last_used_at"]
        touch = None
        if row["kind"] == "key" and (last is None or now - last > TOUCH_EVERY):
            row["last_used_at"] = now
            touch = (row["id"], now)
        principal = Principal(
            key_id=row["parent_id"] or row["id"], name=row["name"], scope=Scope(row["scope"])
        )
        return principal, touch

    def require(self, action: Action) -> Callable[[Request], Principal]:
        """A FastAPI dependency: the caller's principal, if its scope allows `action`."""

        # async: a sync dependency would cost a hop to the thread pool on every request
        async def dependency(request: Request) -> Principal:
            principal = await self.check_secret_async(self._secret_of(request))
            # a trigger key reads only the runs it created: the route checks each run
            partial = action is Action.READ_RUNS and principal.scope is Scope.TRIGGER
            if not partial and not allows(principal.scope, action):
                verb = action.value.replace("_", " ")
                raise ApiError(
                    403, f"a {principal.scope.value} key may not {verb}", "not_authorized"
                )
            return principal

        return dependency

    @staticmethod
    def can_read_run(principal: Principal, run: dict[str, Any]) -> bool:
        """Whether `principal` may read `run`: the one rule for a run answered on its own
        and for a run embedded in another answer (a job's `latest_job_run`)."""
        return allows(principal.scope, Action.READ_RUNS, owns=principal.owns(run))

    def check_run(self, principal: Principal, run: dict[str, Any]) -> None:
        if not self.can_read_run(principal, run):
            raise ApiError(403, "this key may only read the runs it triggered", "not_authorized")

    def mint_dataplane_token(self, principal: Principal) -> tuple[str, datetime]:
        expires = datetime.now(UTC) + DATAPLANE_TOKEN_TTL
        _row, token = self.store.create_key(
            self.ws_id,
            f"dataplane:{principal.name}",
            principal.scope.value,
            expires_at=expires,
            kind="dataplane",
            parent_id=principal.key_id,
        )
        return token, expires
