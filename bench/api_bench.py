"""Authenticated trigger throughput and latency, and `dlthub job trigger` wall time.

Starts `headwater up` on a copy of bench/workspace (loopback only), makes a
trigger-scoped key, then:
  a) wrk, 50 connections, POST /jobs/-trigger for the no-op job, each request
     creating a real run: requests/s and latency percentiles; then waits (bounded)
     until every run created has ended and reports how long the worker took;
  b) 50 clients together offering a fixed rate (default 500 req/s, Poisson
     arrivals, `bench/open_loop.py`), again each request a real run: the latency
     at that rate. (wrk keeps every connection busy, so by Little's law its latency is
     connections / throughput: p99 <= 50 ms with 50 busy connections would need
     > 1000 req/s. A fixed offered rate is how a latency target is measured.)
     Also the CPU each process spent per request (API, worker, launcher + runs);
  c) `dlthub job trigger noop`, the official CLI, N times: wall time per call.
Needs `wrk` (Debian package) on PATH. Writes bench/api_results.json.

    python bench/api_bench.py [--duration 5] [--connections 50] [--rate 500] [--cli-calls 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import open_loop  # noqa: E402  (beside this file)

HERE = Path(__file__).parent
LUA = """
wrk.method = "POST"
wrk.body = '{"job_ids": ["%s"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def headwater(*args: str, cwd: Path) -> str:
    exe = Path(sys.executable).parent / "headwater"
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--cli-calls", type=int, default=5)
    ap.add_argument("--rate", type=int, default=500, help="offered req/s (0: skip)")
    ap.add_argument("--rate-duration", type=int, default=10)
    ap.add_argument(
        "--up-arg", action="append", default=[], help="extra `headwater up` argument (repeat)"
    )
    ap.add_argument("--out", default=str(HERE / "api_results.json"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    results: dict[str, object] = {"up_args": args.up_arg}
    with bench_server(args.up_arg) as srv:
        url, ws, ws_id, key, noop, http = srv.url, srv.ws, srv.ws_id, srv.key, srv.noop, srv.http
        before = http.get(f"/api/v1/workspaces/{ws_id}/job-runs", params={"limit": 1}).json()[
            "total"
        ]
        script = srv.tmp / "trigger.lua"
        script.write_text(LUA % (noop, key))
        wrk = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.duration}s",
                "--latency",
                "-s",
                str(script),
                f"{url}/api/v1/workspaces/{ws_id}/jobs/-trigger",
            ],
            capture_output=True,
            text=True,
            timeout=args.duration + 60,
        )
        print(wrk.stdout)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk.stdout).group(1))
        pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", wrk.stdout, re.M))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk.stdout)
        requests = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
        drain = wait_for_runs_to_end(http, ws_id)
        total = http.get(f"/api/v1/workspaces/{ws_id}/job-runs", params={"limit": 1}).json()[
            "total"
        ]
        created = total - before
        failed = http.get(
            f"/api/v1/workspaces/{ws_id}/job-runs", params={"limit": 1, "status": "failed"}
        ).json()["total"]
        results["wrk"] = {
            "connections": args.connections,
            "duration_s": args.duration,
            "requests": requests,
            "requests_per_s": rps,
            "latency_percentiles": pct,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "runs_created": created,
            "runs_failed": failed,
            "drain_after_load_s": round(drain, 1),
        }

        if args.rate > 0:
            results["fixed_rate"] = fixed_rate(srv, args, before + created)

        env = {
            **os.environ,
            "RUNTIME__API_BASE_URL": url,
            "RUNTIME__API_KEY": key,
            "RUNTIME__WORKSPACE_ID": ws_id,
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        }
        dlthub = str(Path(sys.executable).parent / "dlthub")
        walls = []
        for _ in range(args.cli_calls):
            start = time.perf_counter()
            proc = subprocess.run(
                [dlthub, "job", "trigger", "noop"],
                cwd=ws,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            walls.append(round(time.perf_counter() - start, 3))
            assert proc.returncode == 0, proc.stdout + proc.stderr
        results["dlthub_job_trigger_wall_s"] = walls
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import dlt_runtime._runtime_command"], check=True)
        results["dlthub_cli_import_s"] = round(time.perf_counter() - start, 3)
    results["machine"] = {"nproc": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


def wait_for_runs_to_end(http: httpx.Client, ws_id: str, limit_s: float = 600) -> float:
    """Seconds until no run is pending, starting or running (at most `limit_s`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        active = http.get(
            f"/api/v1/workspaces/{ws_id}/job-runs",
            params=[
                ("limit", 1),
                ("status", "pending"),
                ("status", "starting"),
                ("status", "running"),
            ],
        ).json()["total"]
        if active == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


def _cpu_ms(pid: int) -> float:
    """CPU time of a process and of its reaped children, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _tree(pid: int) -> dict[int, str]:
    """The server's processes by role: the API (`up`, and the API processes it forks with
    --api-processes), the worker process `up` forks with --separate-worker (same command
    line, niced), and warm launchers with the runs they fork."""
    out = {pid: "api"}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            c = int(child)
            if _cmdline(c) != _cmdline(pid):
                out[c] = "launcher+runs"
            else:
                out[c] = "worker" if _nice(c) > _nice(pid) else "api"
            todo.append(c)
    return out


def fixed_rate(srv: BenchServer, args: argparse.Namespace, runs_before: int) -> dict[str, object]:
    """`open_loop`: args.connections clients offering args.rate req/s in all (Poisson
    arrivals), for args.rate_duration s; then the CPU each process spent per request
    (a forked run's CPU counts in its launcher's once the launcher has reaped it)."""
    procs = _tree(srv.process.pid)
    cpu_before = {p: _cpu_ms(p) for p in procs}
    result = offer_triggers(srv, args.connections, args.rate, args.rate_duration)
    print(json.dumps(result, indent=2))
    # wait for the runs to end, so the CPU of the runs is counted
    drain = wait_for_runs_to_end(srv.http, srv.ws_id)
    time.sleep(1)
    cpu = cpu_by_role(procs, cpu_before)
    total = srv.http.get(f"/api/v1/workspaces/{srv.ws_id}/job-runs", params={"limit": 1}).json()[
        "total"
    ]
    done = int(result["requests"])  # type: ignore[call-overload]
    return {
        **result,
        "runs_created": total - runs_before,
        "drain_after_load_s": round(drain, 1),
        "cpu_ms_per_request": {k: round(v / max(done, 1), 2) for k, v in cpu.items()},
    }


@dataclass
class BenchServer:
    process: subprocess.Popen[bytes]
    tmp: Path
    ws: Path
    url: str
    ws_id: str
    key: str
    """A trigger-scoped key."""
    noop: str
    """The no-op job's id."""
    http: httpx.Client
    """Authenticated as the local admin."""


@contextmanager
def bench_server(up_args: list[str]) -> Iterator[BenchServer]:
    """`headwater up` (plus `up_args`) on a copy of bench/workspace, loopback only, with its
    warm launcher up; stopped (SIGINT, then SIGKILL) and removed whatever happens."""
    tmp = Path(tempfile.mkdtemp(prefix="hw-bench-"))
    ws = tmp / "ws"
    shutil.copytree(HERE / "workspace", ws)
    (ws / ".dlt").mkdir(exist_ok=True)
    (ws / ".dlt" / ".workspace").touch()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "server.log", "wb")
    exe = str(Path(sys.executable).parent / "headwater")
    process = subprocess.Popen(
        [exe, "up", str(ws), "--port", str(port), "--log-level", "warning", *up_args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ws_id = httpx.get(f"{url}/health").json()["workspace_id"]
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((tmp / "server.log").read_text()) from None
                time.sleep(0.1)
        admin = (ws / ".headwater" / "admin.key").read_text().strip()
        key = headwater("key", "create", "--name", "bench", "--scope", "trigger", cwd=ws).strip()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        jobs = http.get(f"/api/v1/workspaces/{ws_id}/jobs", params={"limit": 1000}).json()["items"]
        noop = next(j["id"] for j in jobs if j["job_ref"].endswith(".noop"))
        time.sleep(3)  # let the warm launcher come up
        yield BenchServer(process, tmp, ws, url, ws_id, key, noop, http)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def offer_triggers(
    srv: BenchServer, clients: int, rate: float, duration: float
) -> dict[str, object]:
    """`open_loop.run`: `clients` offering `rate` no-op triggers/s in all, for `duration` s."""
    return open_loop.run(
        f"{srv.url}/api/v1/workspaces/{srv.ws_id}/jobs/-trigger",
        {"Content-Type": "application/json", "Authorization": f"Bearer {srv.key}"},
        json.dumps({"job_ids": [srv.noop]}).encode(),
        clients,
        rate,
        duration,
    )


def cpu_by_role(procs: dict[int, str], before: dict[int, float]) -> dict[str, float]:
    """CPU ms each role spent since `before` (a process gone meanwhile counts nothing)."""
    cpu: dict[str, float] = {}
    for pid, role in procs.items():
        try:
            cpu[role] = cpu.get(role, 0.0) + _cpu_ms(pid) - before[pid]
        except OSError:
            pass
    return cpu


if __name__ == "__main__":
    sys.exit(main())
