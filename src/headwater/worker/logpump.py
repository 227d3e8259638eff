"""The log pump: every run's output on its way to the store.

Secrets are masked, the job's output is kept within the run's cap, and while the store
cannot write, lines wait in a bounded buffer (lines past its bounds are counted, and a
line saying how many were lost is stored in their place).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from headwater.core.logtext import ExceptionTracker, Masker
from headwater.store.store import LogLine, Store

log = logging.getLogger(__name__)

MAX_LOG_LINES = 1_000_000
"""Default cap of the lines one run may store (`up --max-log-lines`)."""
MAX_LOG_BYTES = 256 * 1024 * 1024
"""Default cap of the bytes of output one run may store (`up --max-log-mb`)."""
MAX_BUFFERED_LINES = 100_000
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
"""While the store cannot write, log lines wait in memory up to these bounds (all runs);
lines beyond them are counted, and a line saying how many were lost is stored later."""
LOG_RETRY_MAX_S = 2.0
"""The longest wait between two attempts to write buffered log lines."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunLog:
    """One run's log on its way to the store."""

    next_num: int = 0
    """The line number of the first line in `pending`."""
    pending: list[LogLine] = field(default_factory=list)
    """Lines not written yet, in order."""
    mask: Masker | None = None
    lines: int = 0
    size: int = 0
    """Output lines and bytes accepted so far (the cap counts these)."""
    over_cap: int = 0
    """Output lines dropped past the cap."""
    lost: int = 0
    """Lines dropped because the buffer was full, not yet reported by a stored line."""
    lost_total: int = 0
    closed: bool = False
    """The run will write no more lines (it never started): forget it once written."""
    tracker: dict[str, ExceptionTracker] = field(default_factory=dict)
    """Per output stream: the last exception it printed (for a failed run's reason)."""
    fence: tuple[str, int] | None = None
    """A remote worker's (worker, attempt): its lines are written only while the run's
    attempt is still this worker's."""
    refused: bool = False
    """The store refused its lines (the worker lost the run): the rest are dropped."""

    def exception(self) -> str | None:
        found = [t.last for t in self.tracker.values() if t.last]
        return found[-1] if found else None


def _size(line: LogLine) -> int:
    return len(line.content) + 64


def marker(text: str) -> LogLine:
    """A line of Headwater's own in a run's output."""
    # `user` so every client shows it (the dlthub CLI hides `runner` lines)
    return LogLine(f"[headwater] {text}", "user", "run", "other", _now())


class LogPump:
    """Buffers every run's log lines and writes them to the store in batches."""

    def __init__(
        self,
        store: Store,
        *,
        max_log_lines: int = MAX_LOG_LINES,
        max_log_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        self.store = store
        self.max_log_lines = max_log_lines
        self.max_log_bytes = max_log_bytes
        self.max_buffered_lines = MAX_BUFFERED_LINES
        self.max_buffered_bytes = MAX_BUFFERED_BYTES
        self.runs: dict[str, RunLog] = {}
        """Each run's log still on its way (run id -> its log)."""
        self.buffered = [0, 0]
        """Lines and bytes in every run's `pending`."""
        self.retry_at = 0.0
        """No write is tried before this (monotonic seconds): the back-off after a failure."""
        self._write_failures = 0
        self._lock = threading.Lock()
        # the claimer flushes too (runs that could not start): one batch in flight at a time
        self._flush_lock = threading.Lock()

    def open(
        self,
        run_id: str,
        secrets: list[str],
        first_line: int = 0,
        fence: tuple[str, int] | None = None,
    ) -> None:
        """Start a run's log (a run just claimed has written no line yet; a retry's lines
        follow its earlier attempts', from `first_line`); a remote worker's is fenced by
        its (worker, attempt)."""
        with self._lock:
            self.runs[run_id] = RunLog(mask=Masker(secrets) or None, fence=fence)
            self.runs[run_id].next_num = first_line

    def get(self, run_id: str) -> RunLog | None:
        with self._lock:
            return self.runs.get(run_id)

    def close(self, run_id: str) -> None:
        """The run writes no more lines (it never started): forget it once written."""
        with self._lock:
            self.runs[run_id].closed = True

    def queue(self, run_id: str, content: str, source: str, stage: str, stream: str) -> None:
        """Buffer one line of a run's log: secrets masked; the job's output within the run's
        cap and the buffer's bounds (Headwater's own lines always)."""
        with self._lock:
            rl = self.runs.setdefault(run_id, RunLog())
        if rl.mask is not None:
            content = rl.mask(content)
        line = LogLine(content, source, stage, stream, _now())
        size = _size(line)
        with self._lock:
            if source == "user":
                rl.tracker.setdefault(stream, ExceptionTracker()).feed(content)
                if rl.over_cap or (
                    rl.lines >= self.max_log_lines or rl.size + size > self.max_log_bytes
                ):
                    if not rl.over_cap:
                        self._buffer(
                            rl,
                            marker(
                                f"log truncated: this run printed more than its cap of"
                                f" {self.max_log_lines:,} lines or {self.max_log_bytes // 2**20:,}"
                                " MB (`headwater up --max-log-lines/--max-log-mb`); the rest of"
                                " its output is not stored"
                            ),
                        )
                    rl.over_cap += 1
                    return
                if (
                    self.buffered[0] >= self.max_buffered_lines
                    or self.buffered[1] + size > self.max_buffered_bytes
                ):
                    rl.lost += 1
                    rl.lost_total += 1
                    return
                rl.lines += 1
                rl.size += size
            self._buffer(rl, line)

    def _buffer(self, rl: RunLog, line: LogLine) -> None:
        if rl.refused:  # the run is no longer this worker's
            return
        rl.pending.append(line)
        self.buffered[0] += 1
        self.buffered[1] += _size(line)

    def runner_line(self, run_id: str, content: str, source: str = "runner") -> None:
        """Queue a line of Headwater's runner (`setup`: before the job starts)."""
        self.queue(run_id, content, source, "build" if source == "setup" else "run", "other")

    def forget(self, run_id: str) -> RunLog:
        """Drop an ended run's log, written or not; answers what it held."""
        with self._lock:
            rl = self.runs.pop(run_id, None) or RunLog()
            self.buffered[0] -= len(rl.pending)
            self.buffered[1] -= sum(map(_size, rl.pending))
        return rl

    def flush(self) -> bool:
        """Write every buffered line; True when nothing is left buffered.

        A failed write keeps the lines buffered and is retried on a later turn (backing
        off up to `LOG_RETRY_MAX_S`); lines dropped meanwhile for a full buffer are
        reported by a line saying how many, written in their place."""
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        if time.monotonic() < self.retry_at:
            return False
        with self._lock:
            batches: dict[str, tuple[int, list[LogLine]]] = {}
            taken: dict[str, tuple[int, int]] = {}  # run -> (pending lines, lost reported)
            fences: dict[str, tuple[str, int]] = {}
            for run_id, rl in self.runs.items():
                if rl.fence is not None:
                    fences[run_id] = rl.fence
                lines = list(rl.pending)
                if rl.lost:
                    lines.append(
                        marker(
                            f"{rl.lost:,} log lines lost: the store could not write them"
                            " and the buffer was full"
                        )
                    )
                if lines:
                    batches[run_id] = (rl.next_num, lines)
                    taken[run_id] = (len(rl.pending), rl.lost)
        if not batches:
            return True
        try:
            refused = self.store.append_logs(batches, fences or None)
        except IntegrityError as ex:
            # not a passing condition: the store holds some of these line numbers already
            # (a write that committed, then failed): number on from what it holds
            log.warning("log lines clash with stored ones; numbering on after them: %s", ex)
            with self._lock:
                nums = {r: held.next_num for r in batches if (held := self.runs.get(r)) is not None}
            try:
                for run_id in nums:
                    nums[run_id] = max(nums[run_id], self.store.next_line_num(run_id))
            except Exception:
                log.exception("reading the stored line numbers failed")
                return False
            with self._lock:
                for run_id, n in nums.items():
                    if run_id in self.runs:
                        self.runs[run_id].next_num = n
            return False
        except Exception as ex:
            self._write_failures += 1
            self.retry_at = time.monotonic() + min(
                0.05 * 2 ** min(self._write_failures, 10), LOG_RETRY_MAX_S
            )
            if self._write_failures == 1 or self._write_failures % 50 == 0:
                log.warning(
                    "writing log lines failed (%d in a row; %d lines buffered, retrying): %s",
                    self._write_failures,
                    self.buffered[0],
                    ex,
                )
            return False
        if self._write_failures:
            log.info("log lines written again after %d failed writes", self._write_failures)
        self._write_failures, self.retry_at = 0, 0.0
        with self._lock:
            for run_id, (n, lost) in taken.items():
                kept = self.runs.get(run_id)
                if kept is None:
                    continue
                if run_id in refused and not kept.refused:
                    kept.refused = True
                    log.warning(
                        "run %s is no longer this worker's attempt: its log lines are dropped",
                        run_id,
                    )
                written = kept.pending[:n]
                del kept.pending[:n]
                kept.next_num += len(batches[run_id][1])
                kept.lost -= lost
                self.buffered[0] -= n
                self.buffered[1] -= sum(map(_size, written))
                if kept.closed and not kept.pending:
                    del self.runs[run_id]
            return not any(rl.pending or rl.lost for rl in self.runs.values())
