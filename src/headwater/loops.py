"""One supervised background loop for the scheduler, the dispatcher and the worker.

Each of them is a `run_once(now)` iteration; this runs it on a thread: wait for a
wake-up or a period, run an iteration, log and survive its exceptions, stop on an
event. It lives beside `app.py`, not in a component, because components on one floor
never import each other; it imports nothing of ours (a store notifier topic is reached
through the `Wake` protocol), so every component may use it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Wake(Protocol):
    """How a loop sleeps until its next iteration: a mark taken before an iteration, so a
    wake-up that comes while it runs is not missed by the wait that follows."""

    def mark(self) -> object: ...

    def wait(self, mark: object, timeout: float) -> None:
        """Return after `timeout` seconds, or sooner on a wake-up since `mark`."""

    def poke(self) -> None:
        """Wake the loop now (it is stopping)."""


class _Notifier(Protocol):
    def version(self, topic: str) -> int: ...
    def notify(self, *topics: str) -> None: ...
    def wait(self, topic: str, seen: int, timeout: float) -> int: ...


class TopicWake:
    """Wake-ups of one topic of the store's notifier (`headwater.store.notify`)."""

    def __init__(self, notifier: _Notifier, topic: str) -> None:
        self.notifier = notifier
        self.topic = topic

    def mark(self) -> int:
        return self.notifier.version(self.topic)

    def wait(self, mark: object, timeout: float) -> None:
        assert isinstance(mark, int)
        self.notifier.wait(self.topic, mark, timeout)

    def poke(self) -> None:
        self.notifier.notify(self.topic)


class TimerWake:
    """No wake-ups but a poke: a loop that only keeps time (a heartbeat)."""

    def __init__(self) -> None:
        self._poked = threading.Event()

    def mark(self) -> None:
        self._poked.clear()

    def wait(self, mark: object, timeout: float) -> None:
        self._poked.wait(timeout)

    def poke(self) -> None:
        self._poked.set()


class SupervisedLoop(Generic[T]):
    """A thread that calls `step(clock())` until stopped.

    `step` answers the seconds until it wants to run again: 0 at once, None after
    `period`. An exception is logged and the loop waits `error_wait` (through the same
    wake-up), then goes on. With `drain`, the loop keeps turning after `stop()` while
    `drain()` is true (a worker finishing its runs).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[T], float | None],
        clock: Callable[[], T],
        wake: Wake,
        *,
        period: float,
        error_wait: float | None = None,
        drain: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.clock = clock
        self.wake = wake
        self.period = period
        self.error_wait = period if error_wait is None else error_wait
        self.drain = drain
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake.poke()
        if self._thread is not None:
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; answers whether it did."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _draining(self) -> bool:
        return self.drain is not None and self.drain()

    def _run(self) -> None:
        while not self._stop.is_set() or self._draining():
            try:
                self._turn()
            except Exception:
                # the wake-up itself failed: pause, then try again
                log.exception("%s wait failed", self.name)
                self._stop.wait(self.error_wait)

    def _turn(self) -> None:
        mark = self.wake.mark()
        try:
            wait = self.step(self.clock())
        except Exception:
            log.exception("%s iteration failed", self.name)
            wait = self.error_wait
        if wait is None:
            wait = self.period
        if wait > 0 and not (self._stop.is_set() and not self._draining()):
            self.wake.wait(mark, wait)
