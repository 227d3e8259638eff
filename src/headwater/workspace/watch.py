"""Watching the workspace folder: a change of its code or configuration reloads the manifest."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headwater.workspace.packages import HOME_DIR

log = logging.getLogger(__name__)

WATCHED_SUFFIXES = (".py", ".toml", ".json", ".yaml", ".yml", ".sql")


def is_watched(workspace: Path, path: str) -> bool:
    """Whether a change of `path` may be a change of the workspace's code or configuration.

    What runs write is not: Headwater's own folder, dlt's local files (`.dlt/data`, where runs
    of any code source keep relative destination paths) and caches; a run's file there must
    not switch runs from a deployed package back to the folder's code.
    """
    parts = os.path.relpath(path, workspace).split(os.sep)
    if parts[0] in (HOME_DIR, "_storage", "__pycache__") or "__pycache__" in parts:
        return False
    if parts[:2] == [".dlt", "data"]:
        return False
    return path.endswith(WATCHED_SUFFIXES)


def watch_loop(workspace: Path, on_change: Callable[[], Any], stop: threading.Event) -> None:
    """Call `on_change()` after each burst of changes of watched files, until `stop` is set."""
    from watchfiles import watch

    def relevant(_change: Any, path: str) -> bool:
        return is_watched(workspace, path)

    try:
        for _changes in watch(
            workspace,
            watch_filter=relevant,
            stop_event=stop,
            debounce=300,
            rust_timeout=1000,
        ):
            # job code may have changed even when the manifest did not: a good
            # reload always warms a new launcher; it logs what it loaded, or the error
            on_change()
    except Exception:
        log.exception("file watch stopped")


def start_watching(workspace: Path, on_change: Callable[[], Any], stop: threading.Event) -> None:
    """`watch_loop` in a daemon thread."""
    threading.Thread(
        target=watch_loop, args=(workspace, on_change, stop), name="watcher", daemon=True
    ).start()
