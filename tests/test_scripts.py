"""The install and demo scripts: the demo installs only what running needs, and that is
enough for everything the demo imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def test_demo_installs_without_the_test_tools_and_the_tests_with_them() -> None:
    demo = (ROOT / "demo.sh").read_text()
    assert "bash scripts/install --run\n" in demo
    assert "bash scripts/install --dev\n" in (ROOT / "scripts" / "test").read_text()


def test_install_refuses_an_unknown_argument_before_installing_anything() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install"), "--nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "usage: bash scripts/install [--dev|--run]" in proc.stderr


def runtime_distributions() -> set[str]:
    """Headwater's distribution and everything its requirements pull in, without `dev`."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [("headwater", frozenset())]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency for another platform
        for text in requires:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": extra}) for extra in (extras or {""})
            )
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module.split(".")[0])
    return modules


def test_the_runtime_install_has_everything_the_demo_imports() -> None:
    demo = (ROOT / "demo.sh").read_text()
    heredoc = demo.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    modules = imported_modules(heredoc)
    for path in (ROOT / "examples" / "demo").glob("*.py"):
        modules |= imported_modules(path.read_text())
    local = {p.stem for p in (ROOT / "examples" / "demo").glob("*.py")}
    third_party = {m for m in modules - local if m not in sys.stdlib_module_names}
    assert {"duckdb", "dlt", "sqlalchemy"} <= third_party
    provided = metadata.packages_distributions()
    runtime = runtime_distributions()
    missing = {
        m for m in third_party if not {canonicalize_name(d) for d in provided.get(m, [])} & runtime
    }
    assert not missing, f"the demo imports {missing}, which `pip install -e .` does not install"
