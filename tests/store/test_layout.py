"""Who may import the store: `workspace/` and `core/` reach it at run time only through
the specs in `core/specs.py`, and the store's statements live in `store/sql.py`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import headwater

SRC = Path(headwater.__file__).parent
STATEMENT = re.compile(r"(?<![\w.])(select|insert|update|delete|text)\(")


def _runtime_imports(path: Path) -> list[str]:
    """The modules `path` imports when it runs (not those under `if TYPE_CHECKING:`)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_workspace_and_core_never_import_the_store() -> None:
    offenders = {
        str(path.relative_to(SRC)): [
            m for m in _runtime_imports(path) if m.startswith("headwater.store")
        ]
        for folder in ("workspace", "core")
        for path in (SRC / folder).rglob("*.py")
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_store_parts_build_no_statement_of_their_own() -> None:
    parts = ("base", "workspaces", "jobs", "runs", "combiner", "logs", "events", "keys")
    parts += ("idempotency", "store")
    built = {part: STATEMENT.findall((SRC / "store" / f"{part}.py").read_text()) for part in parts}
    assert {part: found for part, found in built.items() if found} == {}
