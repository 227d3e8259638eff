"""How fast the web pages answer with 500 jobs and 100,000 runs in the store (SQLite).

    python bench/ui_pages.py [--jobs 500] [--runs 100000] [--repeat 20] [--api-processes N]

Writes a workspace of `--jobs` jobs (a fifth chained to another, tags, schedules), starts
`headwater up` on it (with `--api-processes N`: N processes answer on one port), adds
`--runs` runs over the last 30 days straight into its SQLite database (as the store writes
them), signs in with a read key, then requests each page `--repeat` times over loopback and
reports p50 / p95 / max of the answer time and the server's CPU time per request. The
target (issue 24) is 100 ms on the server. Writes bench/ui_pages.json
(bench/ui_pages_api<N>.json with N processes), with the machine's load averages before and
after.

Requests go one at a time. With N processes they take turns over 4 x N kept connections:
the kernel hands each new connection to one of the processes (SO_REUSEPORT), so one
connection would only ever measure one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import Server  # noqa: E402


def workspace(jobs: int) -> str:
    out = ["import dlt.hub.run as run", "from dlt.hub.run import trigger", ""]
    names = []
    for i in range(jobs):
        name = f"job_{i:04d}"
        deco = "@run.job"
        if i % 5 == 1:
            deco = f"@run.job(trigger=[job_{i - 1:04d}.success])"
        elif i % 5 == 2:
            cron, tags = f"{i % 60} * * * *", f'["t{i % 7}"]'
            deco = f'@run.job(trigger=trigger.schedule("{cron}"), expose={{"tags": {tags}}})'
        out += [deco, f"def {name}():", "    pass", ""]
        names.append(name)
    out.append(f"__all__ = {names!r}")
    return "\n".join(out)


def seed(db: Path, ws_id: str, runs: int) -> dict[str, list[str]]:
    """`runs` runs spread over the jobs and the last 30 days, written as the store does."""
    from headwater.store.db import make_engine, sqlite_url
    from headwater.store.models import Run
    from headwater.store.store import Store

    store = Store(make_engine(sqlite_url(db)))
    jobs, _ = store.list_jobs(ws_id, limit=10_000)
    jobs = [j for j in jobs if j["job_type"] == "batch"]
    now = datetime.now(UTC)
    rng = random.Random(7)
    counters = {j["id"]: 0 for j in jobs}
    rows = []
    for _ in range(runs):
        job = rng.choice(jobs)
        counters[job["id"]] += 1
        created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        started = created + timedelta(seconds=rng.uniform(0, 5))
        status = rng.choices(["completed", "failed", "cancelled"], [90, 8, 2])[0]
        rows.append(
            dict(
                id=str(uuid.uuid4()), workspace_id=ws_id, job_id=job["id"],
                job_version_id=job["current_version_id"], code_package_id=None,
                config_package_id=None, number=counters[job["id"]], status=status,
                trigger=f"manual:{job['job_ref']}", profile=None, parameters={}, refresh=False,
                interval_start=None, interval_end=None, previous_run_id=None, triggered_by=None,
                dedupe_key=None, reason=None, exit_code=0, pipeline_name=None, timeout_s=None,
                grace_period_s=30.0, cancel_requested=False, worker_id=None, pid=None,
                pid_started=None, launch_mode="fork", locks=None, attempt=1, retry_policy=None,
                not_before=None, backfill_id=None, deadline_at=None, deadline_missed_at=None,
                created_at=created, updated_at=started, started_at=started,
                finished_at=started + timedelta(seconds=rng.uniform(0.2, 900)),
            )
        )  # fmt: skip
    with store.engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(Run.__table__.insert(), rows[i : i + 5000])
        for job_id, n in counters.items():
            conn.execute(
                Run.__table__.metadata.tables["jobs"]
                .update()
                .where(Run.__table__.metadata.tables["jobs"].c.id == job_id)
                .values(run_counter=n)
            )
    some_run = rows[len(rows) // 2]
    return {"job": [some_run["job_id"]], "run": [some_run["id"]]}


def server_cpu(server: Server) -> float:
    """CPU seconds the server's processes have used so far. Per request, it says what a
    page costs the server whatever else the machine is doing (answer times on a busy
    machine include the time the server waited for a core)."""
    assert server.proc is not None
    root = psutil.Process(server.proc.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--api-processes", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n = args.api_processes
    out = args.out or str(ROOT / "bench" / ("ui_pages.json" if n == 1 else f"ui_pages_api{n}.json"))
    tmp = Path(tempfile.mkdtemp(prefix="hw-ui-bench-"))
    ws = tmp / "ws"
    ws.mkdir()
    (ws / "__deployment__.py").write_text(workspace(args.jobs))
    server = Server(ws, *(["--api-processes", str(n)] if n > 1 else [])).start(wait_warm=False)
    try:
        t0 = time.monotonic()
        ids = seed(ws / ".headwater" / "headwater.db", server.ws_id, args.runs)
        seeded = time.monotonic() - t0
        key = server.cli("key", "create", "--name", "bench", "--scope", "read").stdout.strip()
        browsers = [
            httpx.Client(base_url=server.url, timeout=60, follow_redirects=False)
            for _ in range(1 if n == 1 else 4 * n)
        ]
        assert browsers[0].post("/ui/login", data={"key": key}).status_code == 303
        for other in browsers[1:]:
            other.cookies = browsers[0].cookies
        browser = browsers[0]
        w = f"/w/{server.ws_id}"
        pages = {
            "jobs": w,
            "jobs filtered": f"{w}?tag=t3",
            "job": f"{w}/jobs/{ids['job'][0]}",
            "runs": f"{w}/runs",
            "runs by job": f"{w}/runs?job={ids['job'][0]}",
            "runs failed, last week": f"{w}/runs?status=failed&start="
            + (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
            "run": f"{w}/runs/{ids['run'][0]}",
            "timeline": f"{w}/timeline",
            "timeline, a week (capped)": f"{w}/timeline?hours=168",
            "workspace": f"{w}/settings",
        }
        results = {}
        load_before = os.getloadavg()
        for name, path in pages.items():
            for each in browsers:
                each.get(path)  # warm
            times = []
            cpu = server_cpu(server)
            for i in range(args.repeat):
                started = time.perf_counter()
                answer = browsers[i % len(browsers)].get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (name, answer.status_code, answer.text[:300])
            cpu = server_cpu(server) - cpu
            times.sort()
            results[name] = {
                "p50_ms": round(times[len(times) // 2], 1),
                "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
                "max_ms": round(times[-1], 1),
                "server_cpu_ms": round(cpu * 1000 / args.repeat, 1),
                "bytes": len(answer.content),
            }
            print(f"{name:28} {results[name]}")
        # the next page of runs, by cursor, deep in the list
        page = browser.get(f"{w}/runs")
        result = {
            "jobs": args.jobs,
            "runs": args.runs,
            "api_processes": n,
            # 1, 5 and 15 minute load averages before and after the pages (2 cores)
            "load_average": [
                [round(x, 2) for x in load_before],
                [round(x, 2) for x in os.getloadavg()],
            ],
            "seeded_in_s": round(seeded, 1),
            "pages": results,
            "source": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
        }
        assert page.status_code == 200
        Path(out).write_text(json.dumps(result, indent=2))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
