"""Workspace variables: secret values encrypted at rest, scopes, reserved names."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from headwater.store.db import make_engine, sqlite_url, upgrade
from headwater.store.store import Store
from headwater.store.vault import VariableError, VariableStore, VaultError, load_key


@pytest.fixture
def setup(tmp_path: Path) -> tuple[VariableStore, str, Path]:
    engine = make_engine(sqlite_url(tmp_path / "hw.db"))
    upgrade(engine)
    ws = Store(engine).ensure_workspace("/w", "w")["id"]
    return VariableStore(engine, load_key(tmp_path)), ws, tmp_path


def test_secret_values_are_encrypted_at_rest_and_never_listed(setup) -> None:
    vars_, ws, home = setup
    vars_.upsert(ws, "", "API_TOKEN", "secret", "s3cr3t-value-123", "k")
    vars_.upsert(ws, "", "REGION", "plain", "eu-west-1", "k")
    raw = b"".join(p.read_bytes() for p in home.glob("hw.db*"))
    assert b"s3cr3t-value-123" not in raw
    assert b"eu-west-1" in raw
    (scope,) = vars_.scopes(ws)
    values = {v["name"]: v["value"] for v in scope["variables"]}
    assert values == {"API_TOKEN": None, "REGION": "eu-west-1"}
    assert vars_.resolve(ws, None) == {"API_TOKEN": "s3cr3t-value-123", "REGION": "eu-west-1"}
    assert (home / "secret.key").stat().st_mode & 0o777 == 0o600


def test_profile_scope_overrides_the_workspace_scope(setup) -> None:
    vars_, ws, _ = setup
    vars_.upsert(ws, "", "TARGET", "plain", "dev-db", "k")
    vars_.upsert(ws, "prod", "TARGET", "plain", "prod-db", "k")
    vars_.upsert(ws, "prod", "ONLY_PROD", "secret", "x", "k")
    assert vars_.resolve(ws, None) == {"TARGET": "dev-db"}
    assert vars_.resolve(ws, "prod") == {"TARGET": "prod-db", "ONLY_PROD": "x"}
    scopes = vars_.scopes(ws)
    assert [s["profile"] for s in scopes] == [None, "prod"]
    assert vars_.scopes(ws, "staging") == [{"profile": "staging", "variables": []}]
    assert vars_.delete(ws, "prod", "TARGET") and not vars_.delete(ws, "prod", "TARGET")


def test_a_different_key_gives_a_clear_error_not_garbage(setup, tmp_path: Path) -> None:
    vars_, ws, _ = setup
    vars_.upsert(ws, "", "API_TOKEN", "secret", "v", "k")
    other = VariableStore(vars_.engine, Fernet.generate_key())
    with pytest.raises(VaultError, match="not the key it was stored with"):
        other.resolve(ws, None)


@pytest.mark.parametrize(
    "name", ["RUNTIME__RUN_ID", "WORKSPACE__PROFILE", "HEADWATER_X", "1BAD", "a-b"]
)
def test_reserved_and_malformed_names_are_refused(setup, name: str) -> None:
    vars_, ws, _ = setup
    with pytest.raises(VariableError):
        vars_.upsert(ws, "", name, "plain", "v", "k")
