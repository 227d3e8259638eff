"""Headwater benchmark workspace: no-op jobs that print wall-clock timestamps.

- `noop`: the job of the latency and burst measurements. Nothing is chained on
  it, so a burst of N triggers makes exactly N runs.
- `upstream` -> `after`: the `job.success` chain. `upstream` prints
  `LAST <time>` as its final statement; `after` prints `FIRST <time>` first.

The benchmark (`bench/run_bench.py`) reads these lines back through the logs API.
"""

import dlt.hub.run as run

__all__ = ["noop", "upstream", "after"]


@run.job(execute={"concurrency": None})
def noop():
    """A no-op job: its first line carries time.time()."""
    import time

    print(f"FIRST {time.time():.6f}", flush=True)


@run.job(execute={"concurrency": None})
def upstream():
    """Head of the chain: first and last line carry time.time()."""
    import time

    print(f"FIRST {time.time():.6f}", flush=True)
    print(f"LAST {time.time():.6f}", flush=True)


@run.job(trigger=[upstream.success], execute={"concurrency": None})
def after():
    """Chained on upstream.success: its first line carries time.time()."""
    import time

    print(f"FIRST {time.time():.6f}", flush=True)
