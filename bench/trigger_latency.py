"""Trigger latency at a fixed offered rate, per server layout, without the wrk phase.

Starts `headwater up` on a copy of bench/workspace with the given `up` arguments,
makes a trigger key, offers `--rate` req/s of `POST /jobs/-trigger` (each a real run
of the no-op job) from 50 open-loop clients (`bench/open_loop.py`) for `--duration`
s, and prints the latency percentiles and the CPU each role spent per request while
the load lasted (the runs it leaves queued are not waited for). `--stop` pauses the
named roles (SIGSTOP) during the load, to see the API alone.

    python bench/trigger_latency.py [--rate 500] [--duration 15] [--stop worker,launcher+runs]
        [-- UP_ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import api_bench  # noqa: E402  (beside this file)

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--stop", default="", help="roles to SIGSTOP during the load")
    ap.add_argument("up_args", nargs="*")
    args = ap.parse_args()
    with api_bench.bench_server(args.up_args) as srv:
        procs = api_bench._tree(srv.process.pid)
        stopped = [p for p, role in procs.items() if role in args.stop.split(",")]
        cpu_before = {p: api_bench._cpu_ms(p) for p in procs}
        for p in stopped:
            os.kill(p, signal.SIGSTOP)
        try:
            result = api_bench.offer_triggers(srv, args.clients, args.rate, args.duration)
            cpu = api_bench.cpu_by_role(procs, cpu_before)
        finally:
            for p in stopped:
                os.kill(p, signal.SIGCONT)
        n = max(int(result["requests"]), 1)  # type: ignore[call-overload]
        print(
            json.dumps(
                {
                    "up_args": args.up_args,
                    "stopped": args.stop or None,
                    "achieved_req_per_s": result["achieved_req_per_s"],
                    "statuses": result["statuses"],
                    "latency_ms": result["latency_ms"],
                    "cpu_ms_per_request_during_load": {k: round(v / n, 2) for k, v in cpu.items()},
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
