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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import api_bench  # noqa: E402  (beside this file)
import open_loop  # noqa: E402

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--stop", default="", help="roles to SIGSTOP during the load")
    ap.add_argument("up_args", nargs="*")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hw-latency-"))
    ws = tmp / "ws"
    shutil.copytree(HERE / "workspace", ws)
    (ws / ".dlt").mkdir(exist_ok=True)
    (ws / ".dlt" / ".workspace").touch()
    port = api_bench.free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "headwater"
    cmd = [str(exe), "up", str(ws), "--port", str(port), "--log-level", "warning", *args.up_args]
    server = subprocess.Popen(cmd, stdout=open(tmp / "server.log", "wb"), stderr=subprocess.STDOUT)
    try:
        ws_id = None
        for _ in range(600):
            try:
                ws_id = httpx.get(f"{url}/health").json()["workspace_id"]
                break
            except httpx.TransportError:
                time.sleep(0.1)
        admin = (ws / ".headwater" / "admin.key").read_text().strip()
        key = api_bench.headwater("key", "create", "--name", "b", "--scope", "trigger", cwd=ws)
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"})
        jobs = http.get(f"/api/v1/workspaces/{ws_id}/jobs", params={"limit": 1000}).json()
        noop = next(j["id"] for j in jobs["items"] if j["job_ref"].endswith(".noop"))
        time.sleep(3)  # the warm launcher comes up
        procs = api_bench._tree(server.pid)
        stopped = [p for p, role in procs.items() if role in args.stop.split(",")]
        cpu_before = {p: api_bench._cpu_ms(p) for p in procs}
        for p in stopped:
            os.kill(p, signal.SIGSTOP)
        result = open_loop.run(
            f"{url}/api/v1/workspaces/{ws_id}/jobs/-trigger",
            {"Content-Type": "application/json", "Authorization": f"Bearer {key.strip()}"},
            json.dumps({"job_ids": [noop]}).encode(),
            args.clients,
            args.rate,
            args.duration,
        )
        cpu: dict[str, float] = {}
        for p, role in procs.items():
            cpu[role] = cpu.get(role, 0.0) + api_bench._cpu_ms(p) - cpu_before[p]
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
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
