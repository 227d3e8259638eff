"""Wake-ups between the components that meet in the store.

A writer bumps a topic after its transaction commits; a loop waiting on that
topic wakes at once instead of polling. Waits always carry a timeout, so a
lost wake-up only costs latency, never a stuck loop. (Across machines the
same topics can ride PostgreSQL `LISTEN/NOTIFY`.)
"""

from __future__ import annotations

import threading
from collections import defaultdict

RUNS = "runs"  # a run was created or became claimable
CANCELS = "cancels"  # a live run was asked to stop
EVENTS = "events"  # an event was appended
LOGS = "logs"  # log lines were appended or a run ended
JOBS = "jobs"  # jobs changed: deploy, pause, resume


class Notifier:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions: dict[str, int] = defaultdict(int)

    def version(self, topic: str) -> int:
        with self._cond:
            return self._versions[topic]

    def notify(self, *topics: str) -> None:
        with self._cond:
            for topic in topics:
                self._versions[topic] += 1
            self._cond.notify_all()

    def wait(self, topic: str, seen: int, timeout: float) -> int:
        """Block until `topic` moves past `seen` or `timeout` passes; answers the version."""
        with self._cond:
            self._cond.wait_for(lambda: self._versions[topic] != seen, timeout=timeout)
            return self._versions[topic]
