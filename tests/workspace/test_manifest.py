"""Loading a manifest through dlt in a child process: what dlt refuses, said clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.workspace.manifest import ManifestError, load_manifest

MATCHING_INTERVAL = """
import dlt.hub.run as run
from dlt.hub.run import trigger


@run.job(trigger=trigger.schedule("0 0 * * *"), interval={"start": "2026-11-01"})
def up():
    pass


@run.job(
    trigger=trigger.schedule("0 0 * * *"),
    interval={"start": "2026-11-01"},
    freshness=[up.is_matching_interval_fresh],
)
def down():
    pass


__all__ = ["up", "down"]
"""


def test_is_matching_interval_fresh_is_refused_with_what_to_write_instead(tmp_path: Path) -> None:
    (tmp_path / "__deployment__.py").write_text(MATCHING_INTERVAL)
    with pytest.raises(ManifestError) as ex:
        load_manifest(tmp_path)
    message = str(ex.value)
    assert "not yet implemented" in message  # dlt's own words
    assert "dlt 1.31 refuses" in message and "is_fresh" in message


def test_is_fresh_loads(tmp_path: Path) -> None:
    text = MATCHING_INTERVAL.replace("up.is_matching_interval_fresh", "up.is_fresh")
    (tmp_path / "__deployment__.py").write_text(text)
    loaded = load_manifest(tmp_path)
    down = next(j for j in loaded.jobs if j["job_ref"].endswith(".down"))
    assert down["freshness"] == ["job.is_fresh:jobs.__deployment__.up"]
