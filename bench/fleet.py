"""Remote workers: runs per second and trigger -> first line with 1, 2 and 4 workers.

For each worker count: a fresh PostgreSQL database, `headwater up --executor celery` on a
copy of bench/workspace (RabbitMQ as the broker), N `headwater worker` processes (each
`--slots`, its own folder), warmed up; then `--sequential` runs of the no-op job one after
the other (trigger sent -> the run's first printed line, the job's own clock) and a burst of
`--burst` triggers from 8 threads (first trigger sent -> every run ended).

All processes share this machine: with 2 cores, more workers add slots, not cores.

    python bench/fleet.py [--workers 1,2,4] [--slots 4] [--burst 200] [--sequential 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

HERE = Path(__file__).parent
PG = os.environ.get("HEADWATER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("HEADWATER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
TERMINAL = {"completed", "failed", "cancelled", "skipped"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] * 1000, 1)


def headwater(*args: str, log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "headwater.cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


def one_setup(n_workers: int, slots: int, burst: int, sequential: int, tmp: Path) -> dict[str, Any]:
    name = f"hw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db = PG.rsplit("/", 1)[0] + f"/{name}"
    pool = f"bench_{uuid.uuid4().hex[:6]}"
    ws = tmp / f"server-{n_workers}"
    shutil.copytree(HERE / "workspace", ws)
    (ws / "headwater.toml").write_text(f'[jobs."*"]\npool = "{pool}"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            headwater(
                "up",
                str(ws),
                "--port",
                str(port),
                "--db",
                db,
                "--executor",
                "celery",
                "--broker",
                AMQP,
                "--log-level",
                "warning",
                log=tmp / f"server-{n_workers}.log",
            )
        )
        http = httpx.Client(base_url=url, timeout=30)
        wait(lambda: _ok(http, "/health"), 90, "server up")
        ws_id = http.get("/health").json()["workspace_id"]
        admin = (ws / ".headwater" / "admin.key").read_text().strip()
        http.headers["Authorization"] = f"Bearer {admin}"
        w = f"/api/v1/workspaces/{ws_id}"
        key = http.post(f"{w}/api-keys", json={"name": "bench", "scope": "worker"}).json()["key"]
        logs = []
        for i in range(n_workers):
            home = tmp / f"w{n_workers}-{i}"
            home.mkdir()
            logs.append(tmp / f"worker-{n_workers}-{i}.log")
            procs.append(
                headwater(
                    "worker",
                    "--db",
                    db,
                    "--broker",
                    AMQP,
                    "--server",
                    url,
                    "--key",
                    key,
                    "--name",
                    f"w{i}",
                    "--slots",
                    str(slots),
                    "--pool",
                    pool,
                    "--home",
                    str(home),
                    "--log-level",
                    "warning",
                    log=logs[-1],
                    cwd=home,
                )
            )
        wait(
            lambda: sum(x["live"] for x in http.get(f"{w}/workers").json()["items"]) == n_workers,
            90,
            "workers live",
        )
        jobs = {
            j["job_ref"].rsplit(".", 1)[-1]: j["id"] for j in http.get(f"{w}/jobs").json()["items"]
        }
        noop = jobs["noop"]

        def trigger() -> tuple[float, str]:
            t = time.time()
            r = http.post(f"{w}/jobs/-trigger", json={"job_ids": [noop]})
            r.raise_for_status()
            return t, r.json()["succeeded"][0]["job_run_id"]

        def ended(run_id: str) -> dict[str, Any]:
            return wait(
                lambda: (
                    (r := http.get(f"{w}/job-runs/{run_id}").json())["status"] in TERMINAL and r
                ),
                120,
                f"run {run_id} ended",
            )

        # warm: every worker's launcher forks runs (a run per slot, a few times)
        for _ in range(3):
            ids = [trigger()[1] for _ in range(n_workers * slots)]
            for run_id in ids:
                ended(run_id)
        latencies = []
        for _ in range(sequential):
            sent, run_id = trigger()
            ended(run_id)
            lines = http.get(f"/logs/v1/workspaces/{ws_id}/job-runs/{run_id}/logs").text
            first = next(
                float(x["content"].split()[1])
                for x in map(json.loads, lines.splitlines())
                if x["source"] == "user" and x["content"].startswith("FIRST ")
            )
            latencies.append(first - sent)
        started = time.time()
        with ThreadPoolExecutor(8) as pool_:
            ids = [r for _t, r in pool_.map(lambda _: trigger(), range(burst))]
        triggered = time.time() - started
        statuses = [ended(run_id)["status"] for run_id in ids]
        took = time.time() - started
        return {
            "workers": n_workers,
            "slots_each": slots,
            "trigger_to_first_line_ms": {
                "p50": pct(latencies, 50),
                "p90": pct(latencies, 90),
                "max": pct(latencies, 100),
                "n": len(latencies),
            },
            "burst": burst,
            "burst_triggered_s": round(triggered, 2),
            "burst_all_ended_s": round(took, 2),
            "runs_per_s": round(burst / took, 1),
            "completed": statuses.count("completed"),
            "load_after": os.getloadavg(),
        }
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p is not procs[0] else signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ok(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--out", default=str(HERE / "fleet.json"))
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="hw-fleet-") as tmp:
        for n in [int(x) for x in args.workers.split(",")]:
            print(f"{n} worker(s)...", file=sys.stderr, flush=True)
            sub = Path(tmp) / str(n)
            sub.mkdir()
            result = one_setup(n, args.slots, args.burst, args.sequential, sub)
            print(json.dumps(result), flush=True)
            results.append(result)
    Path(args.out).write_text(
        json.dumps({"machine": {"cpus": os.cpu_count()}, "results": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
