"""Idempotency keys of API requests: reserved, answered, released, forgotten."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.sql import (
    FINISH_IDEMPOTENCY,
    FORGET_IDEMPOTENCY_BEFORE,
    GET_IDEMPOTENCY,
    INSERT_IDEMPOTENCY,
    RELEASE_IDEMPOTENCY,
    utcnow,
)


class Idempotency(StoreBase):
    def claim_idempotency(
        self, principal_id: str, key: str, request_hash: str, since: datetime
    ) -> dict[str, Any] | None:
        """Reserve `key` for this request; answers the earlier record when there is one.

        Records older than `since` are forgotten first, so a key may be used again
        after its window.
        """
        with write(self.engine) as conn:
            conn.execute(FORGET_IDEMPOTENCY_BEFORE, {"b_since": since})
            prior = conn.execute(
                GET_IDEMPOTENCY, {"b_principal_id": principal_id, "b_key": key}
            ).first()
            if prior is not None:
                return dict(prior._mapping)
            conn.execute(
                INSERT_IDEMPOTENCY,
                dict(
                    principal_id=principal_id,
                    key=key,
                    request_hash=request_hash,
                    status_code=None,
                    response=None,
                    created_at=utcnow(),
                ),
            )
        return None

    def get_idempotency(self, principal_id: str, key: str) -> dict[str, Any] | None:
        return self._one(GET_IDEMPOTENCY, {"b_principal_id": principal_id, "b_key": key})

    def finish_idempotency(
        self, principal_id: str, key: str, status_code: int, response: Any
    ) -> None:
        with write(self.engine) as conn:
            conn.execute(
                FINISH_IDEMPOTENCY,
                {
                    "b_principal_id": principal_id,
                    "b_key": key,
                    "status_code": status_code,
                    "response": response,
                },
            )

    def release_idempotency(self, principal_id: str, key: str) -> None:
        """Forget a reservation whose request failed, so it may be sent again."""
        with write(self.engine) as conn:
            conn.execute(RELEASE_IDEMPOTENCY, {"b_principal_id": principal_id, "b_key": key})
