"""Log lines of runs: appended by the worker in batches, read by line number."""

from __future__ import annotations

from typing import Any

from headwater.core.specs import LogLine
from headwater.store import notify
from headwater.store.base import StoreBase
from headwater.store.db import write
from headwater.store.sql import HOLDERS_OF_RUNS, INSERT_LOG_LINES, LAST_LINE_NUM, LOGS_AFTER


class Logs(StoreBase):
    def append_logs(
        self,
        batches: dict[str, tuple[int, list[LogLine]]],
        fences: dict[str, tuple[str, int]] | None = None,
    ) -> set[str]:
        """Insert log lines; `batches` maps run id to (first line number, lines). A run in
        `fences` (run id -> a remote worker's (worker, attempt)) gets its lines only while
        it is live and that attempt is still the worker's: answers the runs whose lines
        were refused (a worker that lost the run writes nothing of it)."""
        refused: set[str] = set()
        with write(self.engine) as conn:
            if fences:
                fenced = [r for r in batches if r in fences]
                held = {
                    row.id: (row.worker_id, row.attempt)
                    for row in conn.execute(HOLDERS_OF_RUNS, {"b_ids": fenced})
                }
                refused = {r for r in fenced if held.get(r) != fences[r]}
            rows = [
                dict(
                    run_id=run_id,
                    line_num=first + i,
                    content=line.content,
                    source=line.source,
                    stage=line.stage,
                    io_stream=line.io_stream,
                    reported_at=line.reported_at,
                )
                for run_id, (first, lines) in batches.items()
                if run_id not in refused
                for i, line in enumerate(lines)
            ]
            if rows:
                conn.execute(INSERT_LOG_LINES, rows)
        if rows:
            self.notifier.notify(notify.LOGS)
        return refused

    def next_line_num(self, run_id: str) -> int:
        with self.reader.connect() as conn:
            n = conn.execute(LAST_LINE_NUM, {"b_run_id": run_id}).scalar()
        return 0 if n is None else int(n) + 1

    def read_logs(self, run_id: str, after: int = -1, limit: int = 10_000) -> list[dict[str, Any]]:
        return self._all(LOGS_AFTER, {"b_run_id": run_id, "b_after": after, "b_limit": limit})
