"""Workspace variables, with secret values encrypted at rest.

Values of `secret` variables are stored as Fernet tokens (AES-128-CBC with an
HMAC), under a key that is not in the database: `HEADWATER_SECRET_KEY`, or a
file made once with mode 0600 beside the store (`.headwater/secret.key`).
A database copied without that key holds no readable secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from headwater.core.errors import HeadwaterError
from headwater.store.db import write
from headwater.store.models import Variable
from headwater.store.sql import new_id, utcnow

V = Variable.__table__
WORKSPACE_SCOPE = ""
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = frozenset(
    {
        "RUNTIME__API_BASE_URL",
        "RUNTIME__AUTH_TOKEN",
        "RUNTIME__DATAPLANE_BASE_URL",
        "RUNTIME__WORKSPACE_ID",
        "RUNTIME__ORGANIZATION_ID",
        "RUNTIME__RUN_ID",
        "WORKSPACE__PROFILE",
        "DLT_PROJECT_DIR",
        "DLT_DATA_DIR",
        "PYTHONPATH",
    }
)
"""Names Headwater sets for every run; a variable may not replace them."""


class VaultError(HeadwaterError):
    """A secret cannot be read: the key is not the one it was written with."""

    code = "vault_unreadable"


class VariableError(HeadwaterError, ValueError):
    """A variable name or value the vault does not take."""

    code = "invalid_variable"
    status = 400


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise VariableError(f"{name!r} is not a valid variable name (letters, digits, _)")
    if name.upper() in RESERVED or name.upper().startswith("HEADWATER_"):
        raise VariableError(
            f"{name!r} is set by the runtime for every run and cannot be a variable"
        )


MAX_NAME = 300
MAX_PROFILE = 100
"""Column sizes of `variables.name` and `variables.profile`."""


def check_upsert(name: str, type_: str, value: str) -> None:
    check_name(name)
    if len(name) > MAX_NAME:
        raise VariableError(f"a variable name has at most {MAX_NAME} characters")
    if type_ not in ("plain", "secret"):
        raise VariableError(f"type must be plain or secret, not {type_!r}")
    if "\x00" in value:
        # no environment variable can hold one, and PostgreSQL text cannot either
        raise VariableError(f"the value of {name!r} contains a NUL character")


def check_profile(profile: str) -> None:
    if len(profile) > MAX_PROFILE:
        raise VariableError(f"a profile name has at most {MAX_PROFILE} characters")


def load_key(home: Path) -> bytes:
    """The encryption key: `HEADWATER_SECRET_KEY`, else `home/secret.key` (made once, 0600)."""
    env = os.environ.get("HEADWATER_SECRET_KEY")
    if env:
        return env.encode()
    path = home / "secret.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


class VariableStore:
    def __init__(self, engine: Engine, key: bytes) -> None:
        self.engine = engine
        self.reader = engine.execution_options(readonly=True)
        try:
            self._fernet = Fernet(key)
        except ValueError as ex:
            raise VaultError(f"the secret key is not a valid Fernet key: {ex}") from ex

    def _decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as ex:
            raise VaultError(
                "a secret variable cannot be decrypted: HEADWATER_SECRET_KEY or"
                " .headwater/secret.key is not the key it was stored with"
            ) from ex

    def scopes(self, ws_id: str, profile: str | None = None) -> list[dict[str, Any]]:
        """Variables by scope, the workspace scope first; secret values are None."""
        cond = [V.c.workspace_id == ws_id]
        if profile is not None:
            cond.append(V.c.profile == profile)
        with self.reader.connect() as conn:
            rows = [
                dict(r._mapping) for r in conn.execute(select(V).where(*cond).order_by(V.c.name))
            ]
        by_scope: dict[str, list[dict[str, Any]]] = {}
        if profile is not None:
            by_scope[profile] = []
        for row in rows:
            by_scope.setdefault(row["profile"], []).append(
                {
                    "name": row["name"],
                    "type": row["type"],
                    "value": None if row["type"] == "secret" else row["value"],
                    "created_at": row["created_at"],
                    "created_by": row["created_by"],
                    "updated_at": row["updated_at"],
                    "updated_by": row["updated_by"],
                }
            )
        order = sorted(by_scope, key=lambda p: (p != WORKSPACE_SCOPE, p))
        return [
            {"profile": None if p == WORKSPACE_SCOPE else p, "variables": by_scope[p]}
            for p in order
        ]

    def upsert(self, ws_id: str, profile: str, name: str, type_: str, value: str, by: str) -> None:
        self.apply(ws_id, profile, [(name, type_, value)], [], by)

    def delete(self, ws_id: str, profile: str, name: str) -> bool:
        ((_, status),) = self.apply(ws_id, profile, [], [name], "")
        return status == "removed"

    def apply(
        self,
        ws_id: str,
        profile: str,
        upserts: list[tuple[str, str, str]],
        deletes: list[str],
        by: str,
    ) -> list[tuple[str, str]]:
        """Upserts `(name, type, value)` and deletes names in one scope, in one transaction.

        Answers `(name, upserted|removed|not_found)` per name; nothing is written when an
        upsert is invalid (`VariableError`).
        """
        check_profile(profile)
        for name, type_, value in upserts:
            check_upsert(name, type_, value)
        now = utcnow()
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        results: list[tuple[str, str]] = []
        with write(self.engine) as conn:
            for name, type_, value in upserts:
                stored = (
                    self._fernet.encrypt(value.encode()).decode() if type_ == "secret" else value
                )
                values = dict(type=type_, value=stored, updated_at=now, updated_by=by)
                ins = insert(V).values(
                    id=new_id(),
                    workspace_id=ws_id,
                    profile=profile,
                    name=name,
                    created_at=now,
                    created_by=by,
                    **values,
                )
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=["workspace_id", "profile", "name"], set_=values
                    )
                )
                results.append((name, "upserted"))
            for name in deletes:
                done = conn.execute(
                    delete(V).where(
                        V.c.workspace_id == ws_id, V.c.profile == profile, V.c.name == name
                    )
                )
                results.append((name, "removed" if done.rowcount else "not_found"))
        return results

    def resolve(self, ws_id: str, profile: str | None) -> dict[str, str]:
        """What a run gets: the workspace scope, then its profile's scope over it, decrypted."""
        return self.resolve_for_run(ws_id, profile)[0]

    def resolve_for_run(self, ws_id: str, profile: str | None) -> tuple[dict[str, str], list[str]]:
        """`resolve`, and the values of the secret variables among them: the worker masks
        those in the run's log."""
        scopes = [WORKSPACE_SCOPE] + ([profile] if profile else [])
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(V.c.profile, V.c.name, V.c.type, V.c.value).where(
                    V.c.workspace_id == ws_id, V.c.profile.in_(scopes)
                )
            ).all()
        env: dict[str, str] = {}
        secret: set[str] = set()
        for row in sorted(rows, key=lambda r: r.profile != WORKSPACE_SCOPE):
            env[row.name] = self._decrypt(row.value) if row.type == "secret" else row.value
            if row.type == "secret":
                secret.add(row.name)
            else:
                secret.discard(row.name)
        return env, [env[name] for name in sorted(secret)]


__all__ = ["VariableStore", "VaultError", "VariableError", "check_upsert", "load_key"]
