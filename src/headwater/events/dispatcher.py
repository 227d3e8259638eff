"""Reads the event log and fires what events trigger: `job.success:`, `job.fail:`, `deployment:`.

The dispatcher's position is a stored cursor. A run it fires carries the key
`event:<id>`, so an event handled twice (a crash between firing and moving
the cursor) still makes one run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace.launch import fire

log = logging.getLogger(__name__)

CURSOR = "events.dispatcher"

CHAIN_TRIGGERS = {"run.completed": "job.success", "run.failed": "job.fail"}


class Dispatcher:
    def __init__(
        self, store: Store, ws_id: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.store.get_cursor(CURSOR) is None:
            # a new store starts at its beginning; events are never replayed past the cursor
            self.store.set_cursor(CURSOR, 0)
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.store.notifier.notify(notify.EVENTS)
        if self._thread is not None:
            self._thread.join(5)

    def run_once(self) -> int:
        """Handle the events after the cursor; answers how many were read."""
        position = self.store.get_cursor(CURSOR) or 0
        events = self.store.events_after(position)
        if not events:
            return 0
        jobs: list[dict[str, Any]] | None = None
        for event in events:
            kind = event["kind"]
            if kind in CHAIN_TRIGGERS or kind == "deployment.loaded":
                jobs = jobs if jobs is not None else self.store.active_jobs(self.ws_id)
                self._handle(event, jobs)
        self.store.set_cursor(CURSOR, events[-1]["id"])
        return len(events)

    def _handle(self, event: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        now = self.clock()
        if event["kind"] == "deployment.loaded":
            wanted = "deployment:"
            previous = None
        else:
            upstream = next((j for j in jobs if j["id"] == event["job_id"]), None)
            if upstream is None:
                upstream = self.store.get_job(event["job_id"])
            if upstream is None:
                return
            wanted = f"{CHAIN_TRIGGERS[event['kind']]}:{upstream['job_ref']}"
            previous = event["run_id"]
        for job in jobs:
            # dlt resolved chain selectors to concrete refs: events match by exact string
            if any(str(t) == wanted for t in job["definition"].get("triggers", [])):
                result = fire(
                    self.store,
                    job,
                    wanted,
                    now=now,
                    previous_run_id=previous,
                    dedupe_key=f"event:{event['id']}",
                )
                log.info("%s fired %s: %s", job["job_ref"], wanted, result.decision.status.value)

    def _loop(self) -> None:
        while not self._stop.is_set():
            seen = self.store.notifier.version(notify.EVENTS)
            try:
                if self.run_once():
                    continue
            except Exception:
                log.exception("event dispatch failed")
            self.store.notifier.wait(notify.EVENTS, seen, 1.0)
