"""CPU of the tick arithmetic in one scheduler turn: for each of N cron jobs, the newest due
tick and the next one (`workspace/triggers.py`), with dlt's cron parsing cached per
(trigger, instant, tz) as the scheduler runs it, and uncached.

    python bench/scheduler_ticks.py --jobs 1000 --crons 60
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from headwater.workspace import triggers


def one_turn(crons: list[str], last: datetime, now: datetime) -> float:
    started = time.process_time()
    for cron in crons:
        triggers.latest_due_tick(cron, last, now, "UTC")
        triggers.next_tick(cron, last, "UTC")
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--crons", type=int, default=60, help="distinct cron expressions")
    args = parser.parse_args()
    keys = [i % args.crons for i in range(args.jobs)]
    crons = [f"schedule:{k % 60} {k // 60 % 24} * * *" for k in keys]
    last = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    now = datetime(2026, 12, 6, 3, 4, 30, tzinfo=UTC)

    cached_next, cached_newest = triggers.next_tick, triggers._newest_elapsed_tick
    triggers.next_tick = cached_next.__wrapped__  # type: ignore[assignment]
    triggers._newest_elapsed_tick = cached_newest.__wrapped__  # type: ignore[assignment]
    try:
        uncached = one_turn(crons, last, now)
    finally:
        triggers.next_tick, triggers._newest_elapsed_tick = cached_next, cached_newest
    first = one_turn(crons, last, now)
    second = one_turn(crons, last, now)
    print(
        f"{args.jobs} jobs on {args.crons} crons, CPU of one turn's tick arithmetic:"
        f" uncached {uncached:.3f} s, cached first turn {first:.3f} s, next turn {second:.3f} s"
    )


if __name__ == "__main__":
    main()
