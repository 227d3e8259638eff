"""Workspace variables on both backends: one-transaction batches, the key, the run's profile.

tests/store/test_vault.py covers encryption at rest, scope order and names on SQLite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from headwater.store.models import Variable
from headwater.store.store import Store
from headwater.store.vault import VariableError, VariableStore, VaultError, load_key
from headwater.workspace.launch import dlt_profile


@pytest.fixture
def vars_(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VariableStore:
    monkeypatch.delenv("HEADWATER_SECRET_KEY", raising=False)
    return VariableStore(store.engine, load_key(tmp_path / "home"))


@pytest.fixture
def ws(store: Store) -> str:
    return store.ensure_workspace("/w", "w")["id"]


def stored(vars_: VariableStore) -> dict[tuple[str, str], dict]:
    with vars_.engine.connect() as conn:
        rows = conn.execute(select(Variable.__table__)).mappings().all()
    return {(r["profile"], r["name"]): dict(r) for r in rows}


def test_a_batch_answers_per_name_and_stores_secrets_as_ciphertext(
    vars_: VariableStore, ws: str
) -> None:
    vars_.upsert(ws, "prod", "OLD", "plain", "x", "key-1")
    done = vars_.apply(
        ws,
        "prod",
        [("API_TOKEN", "secret", "tok-123"), ("REGION", "plain", "eu")],
        ["OLD", "MISSING"],
        "key-2",
    )
    assert done == [
        ("API_TOKEN", "upserted"),
        ("REGION", "upserted"),
        ("OLD", "removed"),
        ("MISSING", "not_found"),
    ]
    rows = stored(vars_)
    assert set(rows) == {("prod", "API_TOKEN"), ("prod", "REGION")}
    token = rows["prod", "API_TOKEN"]
    assert token["value"] != "tok-123" and "tok-123" not in token["value"]
    assert token["created_by"] == token["updated_by"] == "key-2"
    assert vars_.resolve(ws, "prod") == {"API_TOKEN": "tok-123", "REGION": "eu"}
    # the same secret twice gives two different ciphertexts (Fernet's random IV)
    vars_.upsert(ws, "", "API_TOKEN", "secret", "tok-123", "key-2")
    assert stored(vars_)["", "API_TOKEN"]["value"] != token["value"]


def test_an_update_keeps_who_created_the_variable(vars_: VariableStore, ws: str) -> None:
    vars_.upsert(ws, "", "X", "plain", "1", "key-1")
    vars_.upsert(ws, "", "X", "secret", "2", "key-2")
    row = stored(vars_)["", "X"]
    assert (row["created_by"], row["updated_by"], row["type"]) == ("key-1", "key-2", "secret")
    assert row["updated_at"] >= row["created_at"]
    assert vars_.resolve(ws, None) == {"X": "2"}


@pytest.mark.parametrize(
    ("name", "type_", "value", "message"),
    [
        ("RUNTIME__AUTH_TOKEN", "plain", "v", "RUNTIME__AUTH_TOKEN"),
        ("runtime__workspace_id", "plain", "v", "runtime__workspace_id"),
        ("GOOD", "json", "v", "plain or secret"),
        ("GOOD", "plain", "a\x00b", "NUL"),
        ("A" * 301, "plain", "v", "300"),
    ],
)
def test_one_bad_upsert_writes_nothing_of_the_batch(
    vars_: VariableStore, ws: str, name: str, type_: str, value: str, message: str
) -> None:
    vars_.upsert(ws, "", "KEEP", "plain", "1", "k")
    with pytest.raises(VariableError, match=message):
        vars_.apply(ws, "", [("NEW", "plain", "1"), (name, type_, value)], ["KEEP"], "k")
    assert set(stored(vars_)) == {("", "KEEP")}


def test_a_profile_name_longer_than_its_column_is_refused(vars_: VariableStore, ws: str) -> None:
    with pytest.raises(VariableError, match="100"):
        vars_.upsert(ws, "p" * 101, "X", "plain", "1", "k")


def test_the_key_file_is_made_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADWATER_SECRET_KEY", raising=False)
    home = tmp_path / "home"
    first = load_key(home)
    assert (home / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_key(home) == first
    Fernet(first)  # a valid key


def test_headwater_secret_key_wins_over_the_file(
    store: Store, ws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv("HEADWATER_SECRET_KEY", key.decode())
    assert load_key(tmp_path / "home") == key
    assert not (tmp_path / "home" / "secret.key").exists()
    VariableStore(store.engine, load_key(tmp_path / "home")).upsert(ws, "", "S", "secret", "v", "k")
    # a restart without the variable falls back to a new key file: the secret is unreadable
    monkeypatch.delenv("HEADWATER_SECRET_KEY")
    other = VariableStore(store.engine, load_key(tmp_path / "home"))
    with pytest.raises(VaultError, match="not the key it was stored with"):
        other.resolve(ws, None)
    # the list never decrypts, so it still answers
    assert other.scopes(ws)[0]["variables"][0]["value"] is None
    assert VariableStore(store.engine, key).resolve(ws, None) == {"S": "v"}


def test_a_malformed_key_is_a_clear_error(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADWATER_SECRET_KEY", "not-a-fernet-key")
    with pytest.raises(VaultError, match="not a valid Fernet key"):
        VariableStore(store.engine, load_key(tmp_path))


def test_a_run_gets_the_variables_of_the_profile_dlt_runs_it_with(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / ".dlt").mkdir(parents=True)
    job = {"require": {"profile": "staging"}}
    assert dlt_profile({"profile": "prod"}, job, code, {}) == "prod"
    assert dlt_profile({"profile": None}, job, code, {}) == "staging"
    # nothing named: what dlt picks itself, the environment, the pin, then `dev`
    assert dlt_profile({}, {}, code, {}) == "dev"
    (code / ".dlt" / "profile-name").write_text("qa\n")
    assert dlt_profile({}, {}, code, {}) == "qa"
    assert dlt_profile({}, {}, code, {"WORKSPACE__PROFILE": "ops"}) == "ops"
