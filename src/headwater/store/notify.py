"""Wake-ups between the components that meet in the store.

A writer bumps a topic after its transaction commits; a loop waiting on that
topic wakes at once instead of polling. Waits always carry a timeout, so a
lost wake-up only costs latency, never a stuck loop. (Across machines the
same topics can ride PostgreSQL `LISTEN/NOTIFY`.)
"""

from __future__ import annotations

import threading

RUNS = "runs"  # a run was created or became claimable
CANCELS = "cancels"  # a live run was asked to stop
EVENTS = "events"  # an event was appended
LOGS = "logs"  # log lines were appended or a run ended
JOBS = "jobs"  # jobs changed: deploy, pause, resume
TOPICS = (RUNS, CANCELS, EVENTS, LOGS, JOBS)


class _Topic:
    __slots__ = ("cond", "version")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0


class Notifier:
    """One condition per topic: a log line wakes log followers, not the scheduler."""

    def __init__(self) -> None:
        self._topics = {t: _Topic() for t in TOPICS}

    def version(self, topic: str) -> int:
        return self._topics[topic].version

    def notify(self, *topics: str) -> None:
        for name in topics:
            topic = self._topics[name]
            with topic.cond:
                topic.version += 1
                topic.cond.notify_all()

    def wait(self, topic: str, seen: int, timeout: float) -> int:
        """Block until `topic` moves past `seen` or `timeout` passes; answers the version."""
        t = self._topics[topic]
        with t.cond:
            t.cond.wait_for(lambda: t.version != seen, timeout=timeout)
            return t.version
