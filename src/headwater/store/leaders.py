"""Leader leases: one holder per name at a time, taken over only once it ran out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select

from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.models import LeaderLease
from headwater.store.sql import dialect_insert, utcnow

L = LeaderLease.__table__


class Leaders(StoreBase):
    def hold_lease(
        self, name: str, holder: str, lease_s: float, now: datetime | None = None
    ) -> bool:
        """Take or renew the lease `name` for `holder`: True when it holds it until
        `now + lease_s`; False while another holder's lease runs."""
        now = now or utcnow()
        until = now + timedelta(seconds=lease_s)
        with write(self.engine) as conn:
            stmt = dialect_insert(conn, L).values(
                name=name, holder=holder, expires_at=until, acquired_at=now
            )
            mine = L.c.holder == stmt.excluded.holder
            row = conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[L.c.name],
                    set_={
                        "holder": stmt.excluded.holder,
                        "expires_at": stmt.excluded.expires_at,
                        # a renewal keeps when it was first taken
                        "acquired_at": case((mine, L.c.acquired_at), else_=now),
                    },
                    where=mine | (L.c.expires_at < now),
                ).returning(L.c.holder)
            ).first()
        return row is not None and row.holder == holder

    def release_lease(self, name: str, holder: str) -> None:
        with write(self.engine) as conn:
            conn.execute(delete(L).where(L.c.name == name, L.c.holder == holder))

    def lease_holder(self, name: str) -> dict[str, Any] | None:
        return self._one(select(L).where(L.c.name == name), {})
