"""The trigger combiner: concurrent triggers recorded in one transaction per batch.

A burst of triggers costs one commit and one lock hand-over per batch instead of per
trigger. Threads wait on an event; async callers get a future resolved on their loop,
and on SQLite the loop records its own batch once the write lock is free.
This path was tuned hard (bench/RESULTS.md): keep it free of per-call layers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from headwater.core.specs import RunRequest, TriggerResult
from headwater.store import notify
from headwater.store.db import WriteLock, write, write_lock
from headwater.store.runs import Runs
from headwater.store.sql import utcnow


@dataclass
class _QueuedTrigger:
    req: RunRequest
    now: datetime
    dry_run: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: TriggerResult | None = None
    error: BaseException | None = None
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[TriggerResult]] | None = None
    """An async caller's loop and future (`create_run_async`), resolved on that loop."""


def _resolve(futures: list[tuple[asyncio.Future[TriggerResult], _QueuedTrigger]]) -> None:
    for future, item in futures:
        if future.done():  # the caller went away (cancelled)
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(item.result)  # type: ignore[arg-type]


def _fail_unanswered(items: list[_QueuedTrigger], ex: BaseException) -> None:
    """Never leave a caller waiting: what got no answer gets `ex`."""
    unanswered = [i for i in items if i.result is None and i.error is None]
    for item in unanswered:
        item.error = ex
    _answer(unanswered)


def _answer(items: list[_QueuedTrigger]) -> None:
    """Wake the callers of answered items: threads by their event, async callers with
    one call per event loop (not one per item: each call writes to the loop's pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for item in items:
        if item.result is None and item.error is None:
            continue
        item.done.set()
        if item.waiter is not None:
            loop, future = item.waiter
            by_loop.setdefault(loop, []).append((future, item))
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


class Combiner(Runs):
    # triggers waiting for the combiner (see create_run)
    _queue: list[_QueuedTrigger]
    _queue_lock: threading.Lock
    _combining: bool
    _combiner: ThreadPoolExecutor
    # triggers an event loop records on its next turn (SQLite; see create_run_async)
    _on_loop: list[_QueuedTrigger]

    def _init_combiner(self) -> None:
        self._queue = []
        self._queue_lock = threading.Lock()
        self._combining = False
        # records batches for async callers, so the event loop never waits on the database
        # (its one thread starts on first use)
        self._combiner = ThreadPoolExecutor(1, thread_name_prefix="trigger-combiner")
        self._on_loop = []
        self._replacing = False

    def create_run(
        self, req: RunRequest, *, now: datetime | None = None, dry_run: bool = False
    ) -> TriggerResult:
        """Decide a trigger and record its outcome.

        Each trigger is decided on facts read in the transaction that records it:
        the job row is locked first (`FOR UPDATE`; SQLite's `BEGIN IMMEDIATE`), so
        concurrent triggers of one job see each other's runs. Concurrent callers
        are combined: the first records every trigger queued meanwhile in one
        transaction, in order, while the others wait for their answer, so a burst
        costs one commit and one lock hand-over per batch instead of per trigger.
        """
        item = _QueuedTrigger(req, now or utcnow(), dry_run)
        if self._enqueue(item):
            self._combine()
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    async def create_run_async(
        self, req: RunRequest, *, now: datetime | None = None, dry_run: bool = False
    ) -> TriggerResult:
        """`create_run` for the event loop, which goes on serving while the run is recorded.

        On SQLite the loop records every trigger queued since its last turn itself, in
        one transaction, once the write lock is free (it never waits for it): a
        thread would have to win the interpreter lock back from the loop after every
        statement. Elsewhere a combiner thread records them.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TriggerResult] = loop.create_future()
        item = _QueuedTrigger(req, now or utcnow(), dry_run, waiter=(loop, future))
        lock = write_lock(self.engine)
        if lock is None:
            if self._enqueue(item):
                self._combiner.submit(self._combine)
        else:
            with self._queue_lock:
                self._on_loop.append(item)
                first = len(self._on_loop) == 1
            if first:
                loop.call_soon(self._record_on_loop, loop, lock)
        return await future

    def _record_on_loop(
        self, loop: asyncio.AbstractEventLoop, lock: WriteLock, locked: bool = False
    ) -> None:
        if not locked and not lock.try_acquire():
            # another writer holds it: a thread waits for it, so the loop neither blocks nor spins
            self._combiner.submit(self._lock_for_loop, loop, lock)
            return
        with self._queue_lock:
            batch, self._on_loop = self._on_loop, []
        try:
            if batch:
                self._record(batch, self.engine.begin)
        except BaseException as ex:
            _fail_unanswered(batch, ex)
        finally:
            lock.release()

    def _lock_for_loop(self, loop: asyncio.AbstractEventLoop, lock: WriteLock) -> None:
        lock.__enter__()
        try:
            loop.call_soon_threadsafe(self._record_on_loop, loop, lock, True)
        except RuntimeError:  # the loop is closed
            lock.release()

    def _enqueue(self, item: _QueuedTrigger) -> bool:
        """Queue a trigger; True when the caller must start combining."""
        with self._queue_lock:
            self._queue.append(item)
            combine = not self._combining
            self._combining = True
        return combine

    def _combine(self) -> None:
        """Record queued triggers until the queue is empty."""
        batch: list[_QueuedTrigger] = []
        try:
            while True:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._combining = False
                        return
                self._record(batch)
        except BaseException as ex:  # never leave a caller waiting
            with self._queue_lock:
                stranded, self._queue = self._queue, []
                self._combining = False
            _fail_unanswered(batch + stranded, ex)
            raise

    def _record(
        self,
        batch: list[_QueuedTrigger],
        transaction: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        begin = transaction or (lambda: write(self.engine))
        try:
            with begin() as conn:
                results = self._decide_and_record(conn, batch)
            for item, result in zip(batch, results, strict=True):
                item.result = result
        except Exception:
            if len(batch) == 1:
                raise
            # one trigger failed (a job gone, say): none of the batch was kept;
            # record each alone, so only that one gets the error
            for item in batch:
                try:
                    with begin() as conn:
                        (item.result,) = self._decide_and_record(conn, [item])
                except Exception as ex:
                    item.error = ex
        finally:
            if self._replacing:
                # overlap replace moved live runs to cancelling: their workers stop them
                self._replacing = False
                self.notifier.notify(notify.RUNS, notify.CANCELS)
            else:
                self.notifier.notify(notify.RUNS)
            _answer(batch)
