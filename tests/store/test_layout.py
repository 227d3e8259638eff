"""Who may import the store: `workspace/` and `core/` reach it only through the specs in
`core/specs.py`, and the store's statements live in `store/sql.py`."""

from __future__ import annotations

import re
from pathlib import Path

import headwater

SRC = Path(headwater.__file__).parent
STATEMENT = re.compile(r"(?<![\w.])(select|insert|update|delete|text)\(")


def _imports_of(folder: str) -> dict[str, list[str]]:
    return {
        str(path.relative_to(SRC)): re.findall(r"^\s*(?:from|import) (headwater\.\S+)", text, re.M)
        for path in (SRC / folder).rglob("*.py")
        if (text := path.read_text())
    }


def test_workspace_and_core_never_import_the_store() -> None:
    offenders = {
        path: [m for m in modules if m.startswith("headwater.store")]
        for folder in ("workspace", "core")
        for path, modules in _imports_of(folder).items()
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_store_parts_build_no_statement_of_their_own() -> None:
    parts = ("base", "workspaces", "jobs", "runs", "combiner", "logs", "events", "keys")
    parts += ("idempotency", "store")
    built = {part: STATEMENT.findall((SRC / "store" / f"{part}.py").read_text()) for part in parts}
    assert {part: found for part, found in built.items() if found} == {}
