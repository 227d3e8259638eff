"""Many dbt Cloud runs watched at once by one `headwater up`, against the local fake of dbt
Cloud's API (its own process, answering from memory).

    python bench/dbt_cloud_watch.py --runs 10000 --poll 30 --watch 240

Starts the fake and a server on a workspace whose `headwater.toml` declares one dbt Cloud
job (mode ignore, so every trigger is a dbt Cloud run; runs stay `running` for hours). It
creates `--runs` runs through the API, waits until every one is `running` (dbt Cloud's run
id stored), then watches for `--watch` seconds and reports:
- the server's RSS (all its processes: API, engine, workers), sampled every 5 s;
- poll lateness: for each dbt Cloud run, the gaps between two status requests the fake
  received, minus `poll_interval` (p50, p99, max), in the steady window.
Writes bench/dbt_cloud_watch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.dbt_cloud import FakeDbtCloud  # noqa: E402
from tests.integration.harness import free_port  # noqa: E402

ACCOUNT, JOB = 12345, 4242


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--poll", type=float, default=30.0)
    ap.add_argument("--watch", type=float, default=240.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "dbt_cloud_watch.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hw-dbt-bench-"))
    with FakeDbtCloud() as fake:
        fake.add_job(JOB, account_id=ACCOUNT, queued=1.0, starting=1.0, running=86_400)
        ws = tmp / "ws"
        ws.mkdir()
        (ws / "__deployment__.py").write_text(
            "import dlt.hub.run as run\n\n@run.job\ndef noop():\n    pass\n\n__all__ = ['noop']\n"
        )
        (ws / "headwater.toml").write_text(
            f"""
[dbt_cloud.connections.prod]
account_id = {ACCOUNT}
token = "env:DBT_CLOUD_TOKEN"
access_url = "{fake.url}"

[[dbt_cloud.jobs]]
name = "watched"
connection = "prod"
job_id = {JOB}
mode = "ignore"
poll_interval = {args.poll}
"""
        )
        port = free_port()
        env = {**os.environ, "DBT_CLOUD_TOKEN": fake.token}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "headwater.cli.main",
                "up",
                str(ws),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=open(tmp / "server.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            key = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            key = (ws / ".headwater" / "admin.key").read_text().strip()
            http = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            ws_id = http.get("/health").json()["workspace_id"]
            jobs = http.get(f"/api/v1/workspaces/{ws_id}/jobs").json()["items"]
            job_id = next(j["id"] for j in jobs if j["job_ref"] == "jobs.dbt_cloud.watched")
            rss_idle = tree_rss(server.pid)
            started = time.monotonic()

            def create(_: int) -> None:
                answer = http.post(f"/api/v1/workspaces/{ws_id}/job-runs", json={"job_id": job_id})
                answer.raise_for_status()

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(args.runs)))
            created_s = time.monotonic() - started
            while True:
                page = http.get(
                    f"/api/v1/workspaces/{ws_id}/job-runs",
                    params={"status": "running", "limit": 1},
                ).json()
                if page["total"] >= args.runs:
                    break
                if time.monotonic() - started > 1800:
                    raise SystemExit(f"only {page['total']} running after 30 min")
                time.sleep(2)
            all_running_s = time.monotonic() - started
            watch_from = time.time()
            samples = []
            end = time.monotonic() + args.watch
            while time.monotonic() < end:
                samples.append(tree_rss(server.pid))
                time.sleep(5)
            watch_to = time.time()
            log = fake.requests("GET", r"/runs/\d+/$")
            listed = fake.requests("GET", r"/runs/$")
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    # a run is polled when its status is asked alone, or shown in a list of the job's runs
    by_run: dict[str, list[float]] = {}
    for r in log:
        by_run.setdefault(r["path"].rstrip("/").rsplit("/", 1)[-1], []).append(r["at"])
    for r in listed:
        for run_id in r.get("run_ids") or []:
            by_run.setdefault(str(run_id), []).append(r["at"])
    lateness = []
    for times in by_run.values():
        steady = sorted(t for t in times if watch_from - args.poll <= t <= watch_to)
        lateness += [b - a - args.poll for a, b in zip(steady, steady[1:], strict=False)]
    lateness.sort()

    def pct(p: float) -> float:
        return (
            lateness[min(len(lateness) - 1, int(p * len(lateness)))] if lateness else float("nan")
        )

    result = {
        "runs": args.runs,
        "poll_interval_s": args.poll,
        "watch_s": args.watch,
        "created_in_s": round(created_s, 1),
        "all_running_after_s": round(all_running_s, 1),
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "rss_max_mb": round(max(samples) / 2**20, 1),
        "rss_last_mb": round(samples[-1] / 2**20, 1),
        "polls_measured": len(lateness),
        "status_requests_per_s": round(
            sum(1 for r in [*log, *listed] if watch_from <= r["at"] <= watch_to)
            / max(1e-9, watch_to - watch_from),
            1,
        ),
        "lateness_p50_s": round(pct(0.50), 3),
        "lateness_p99_s": round(pct(0.99), 3),
        "lateness_max_s": round(lateness[-1], 3) if lateness else None,
        "source": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
