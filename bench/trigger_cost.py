"""CPU cost of recording one trigger, without HTTP: `Store.get_job` and `launch.fire`
(the policy decision, the run and its event in one transaction), one call at a time.

    python bench/trigger_cost.py [--calls 2000]

Runs on a copy of bench/workspace with a fresh SQLite store; nothing is started.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from headwater.app import Runtime
from headwater.workspace.launch import fire

HERE = Path(__file__).parent


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hw-trigger-cost-"))
    try:
        shutil.copytree(HERE / "workspace", tmp / "ws")
        runtime = Runtime(tmp / "ws", watch=False)
        runtime.reload_manifest(refresh_launcher=False)
        store = runtime.store
        jobs, _ = store.list_jobs(runtime.ws_id, limit=100)
        noop = next(j for j in jobs if j["job_ref"].endswith(".noop"))
        unlimited = {**noop, "definition": {**noop["definition"], "execute": {}}}
        print(f"get_job  {per_call_us(lambda: store.get_job(noop['id']), args.calls):8.1f} us")
        print(
            "fire     "
            f"{per_call_us(lambda: fire(store, unlimited, 'manual:', now=datetime.now(UTC)), args.calls):8.1f} us"  # noqa: E501
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
