"""What the file watcher counts as a change of the workspace's code."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.workspace.watch import is_watched


@pytest.mark.parametrize(
    "rel",
    ["__deployment__.py", "pipelines/load.py", ".dlt/config.toml", "sql/report.sql"],
)
def test_code_and_configuration_are_watched(tmp_path: Path, rel: str) -> None:
    assert is_watched(tmp_path, str(tmp_path / rel))


@pytest.mark.parametrize(
    "rel",
    [
        ".headwater/packages/run/abc/__deployment__.py",
        ".dlt/data/dev/schemas/export.json",  # dlt's local files: what runs write
        ".dlt/data/prod/out.yaml",
        "pkg/__pycache__/x.py",
        "ledger.duckdb",
    ],
)
def test_what_runs_write_is_not_watched(tmp_path: Path, rel: str) -> None:
    assert not is_watched(tmp_path, str(tmp_path / rel))
