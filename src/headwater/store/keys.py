"""API keys (stored as hashes only) and the pages' sessions, which are keys of their own
kind."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from headwater.core.errors import HeadwaterError
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.sql import (
    ACTIVE_KEYS_NAMED,
    FORGET_EXPIRED_SESSIONS,
    GET_KEY,
    INSERT_KEY,
    KEY_BY_HASH,
    LIST_KEYS,
    REVOKE_KEYS,
    REVOKE_SESSION,
    TOUCH_KEY,
    new_id,
    utcnow,
)

KEY_PREFIX = "dlt_sa_"
"""The `dlthub` CLI accepts only `dlt_u_` and `dlt_sa_` keys; Headwater's are service keys."""


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AmbiguousKeyError(HeadwaterError, LookupError):
    """A key name or prefix that several active keys share."""

    code = "api_key_ambiguous"
    status = 409

    def __init__(self, id_or_name: str, candidates: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(candidates)} active API keys match {id_or_name!r}")
        self.candidates = candidates


class Keys(StoreBase):
    def create_key(
        self,
        ws_id: str,
        name: str,
        scope: str,
        *,
        expires_at: datetime | None = None,
        kind: str = "key",
        parent_id: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new key; answers its row and the key itself, which is never stored or shown again."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = dict(
            id=new_id(),
            workspace_id=ws_id,
            kind=kind,
            name=name,
            prefix=secret[: len(KEY_PREFIX) + 6],
            hash=key_hash(secret),
            scope=scope,
            parent_id=parent_id,
            created_at=utcnow(),
            expires_at=expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        with write(self.engine) as conn:
            conn.execute(INSERT_KEY, key)
        return key, secret

    def find_key(self, secret: str) -> dict[str, Any] | None:
        return self._one(KEY_BY_HASH, {"b_hash": key_hash(secret)})

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        return self._one(GET_KEY, {"b_id": key_id})

    def list_keys(self, ws_id: str) -> list[dict[str, Any]]:
        return self._all(LIST_KEYS, {"b_ws_id": ws_id})

    def revoke_key(self, ws_id: str, id_or_name: str) -> list[dict[str, Any]]:
        """Revoke an active key by id, prefix or name; its data-plane tokens die with it.

        An id names one key; a name or prefix that several active keys share revokes
        nothing and raises `AmbiguousKeyError` with them.
        """
        now = utcnow()
        with write(self.engine) as conn:
            rows = conn.execute(
                ACTIVE_KEYS_NAMED,
                {
                    "b_ws_id": ws_id,
                    "b_id": id_or_name,
                    "b_name": id_or_name,
                    "b_prefix": id_or_name,
                },
            ).all()
            by_id = [r for r in rows if r.id == id_or_name]
            rows = by_id or rows
            if len(rows) > 1:
                raise AmbiguousKeyError(id_or_name, [dict(r._mapping) for r in rows])
            ids = [r.id for r in rows]
            if ids:
                conn.execute(REVOKE_KEYS, {"b_ids": ids, "b_parent_ids": ids, "revoked_at": now})
        return [{**dict(r._mapping), "revoked_at": now} for r in rows]

    def revoke_session(self, session_id: str) -> None:
        """End one pages session (its row only); expired sessions are forgotten meanwhile."""
        now = utcnow()
        with write(self.engine) as conn:
            conn.execute(REVOKE_SESSION, {"b_id": session_id, "revoked_at": now})
            conn.execute(FORGET_EXPIRED_SESSIONS, {"b_now": now})

    def touch_key(self, key_id: str, now: datetime) -> None:
        with write(self.engine) as conn:
            conn.execute(TOUCH_KEY, {"b_id": key_id, "last_used_at": now})
