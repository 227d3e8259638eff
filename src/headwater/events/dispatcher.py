"""Reads the event log and fires what events trigger: `job.success:`, `job.fail:`, `deployment:`.

The dispatcher's position is a stored cursor. A run it fires carries the key
`event:<id>`, so an event handled twice (a crash between firing and moving
the cursor) still makes one run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from headwater.loops import SupervisedLoop, TopicWake
from headwater.store import notify
from headwater.store.store import Store
from headwater.workspace.launch import fire

log = logging.getLogger(__name__)

CURSOR = "events.dispatcher"

CHAIN_TRIGGERS = {"run.completed": "job.success", "run.failed": "job.fail"}
CURSOR_SAVE_S = 5.0
"""How often the position is saved when only events nobody listens to went by.

Re-reading those after a crash is harmless; saving after each would be a write per run.
"""


class Dispatcher:
    def __init__(
        self, store: Store, ws_id: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.ws_id = ws_id
        self.clock = clock
        self._loop = SupervisedLoop(
            "dispatcher",
            self._step,
            clock,
            TopicWake(store.notifier, notify.EVENTS),
            period=1.0,
        )
        self._position: int | None = None
        self._saved_at: datetime | None = None
        self._jobs: tuple[int, list[dict[str, Any]]] | None = None

    def _active_jobs(self, fresh: bool = False) -> list[dict[str, Any]]:
        """Jobs, re-read only after a deploy, pause or resume (the JOBS topic moved)."""
        version = self.store.notifier.version(notify.JOBS)
        if fresh or self._jobs is None or self._jobs[0] != version:
            self._jobs = (version, self.store.active_jobs(self.ws_id))
        return self._jobs[1]

    def start(self) -> None:
        if self.store.get_cursor(CURSOR) is None:
            # a new store starts at its beginning; events are never replayed past the cursor
            self.store.set_cursor(CURSOR, 0)
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        if self._position is not None:
            self.store.set_cursor(CURSOR, self._position)

    def run_once(self, now: datetime | None = None) -> int:
        """Handle the events after the cursor at `now`; answers how many were read."""
        now = self.clock() if now is None else now
        if self._position is None:
            self._position = self.store.get_cursor(CURSOR) or 0
        events = self.store.events_after(self._position)
        if not events:
            return 0
        fired = False
        for event in events:
            kind = event["kind"]
            if kind in CHAIN_TRIGGERS or kind == "deployment.loaded":
                # a deployment event may race its own JOBS wake-up: read the jobs anew
                jobs = self._active_jobs(fresh=kind == "deployment.loaded")
                fired = self._handle(event, jobs, now) or fired
        self._position = events[-1]["id"]
        if (
            fired
            or self._saved_at is None
            or (now - self._saved_at).total_seconds() > CURSOR_SAVE_S
        ):
            # runs fired above carry `event:<id>` keys, so a replay after a crash is harmless
            self.store.set_cursor(CURSOR, self._position)
            self._saved_at = now
        return len(events)

    def _handle(self, event: dict[str, Any], jobs: list[dict[str, Any]], now: datetime) -> bool:
        """Fire the jobs an event triggers at `now`; answers whether any was fired."""
        if event["kind"] == "deployment.loaded":
            wanted = "deployment:"
            previous = None
        else:
            upstream = next((j for j in jobs if j["id"] == event["job_id"]), None)
            if upstream is None:
                upstream = self.store.get_job(event["job_id"])
            if upstream is None:
                return False
            wanted = f"{CHAIN_TRIGGERS[event['kind']]}:{upstream['job_ref']}"
            previous = event["run_id"]
        fired = False
        for job in jobs:
            # dlt resolved chain selectors to concrete refs: events match by exact string;
            # the job's triggers include the chains headwater.toml adds
            if any(str(t) == wanted for t in job["triggers"] or []):
                fired = True
                result = fire(
                    self.store,
                    job,
                    wanted,
                    now=now,
                    previous_run_id=previous,
                    dedupe_key=f"event:{event['id']}",
                )
                log.info("%s fired %s: %s", job["job_ref"], wanted, result.decision.status.value)
        return fired

    def _step(self, now: datetime) -> float | None:
        """One iteration: at once again while events come, else wait for a wake-up."""
        return 0 if self.run_once(now) else None
