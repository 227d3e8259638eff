"""Many dbt Cloud runs watched at once by one `headwater up`, against the local fake of dbt
Cloud's API (its own process, answering from memory).

    python bench/dbt_cloud_watch.py --runs 10000 --poll 30 --watch 240

Starts the fake and a server on a workspace whose `headwater.toml` declares one dbt Cloud
job (mode ignore, so every trigger is a dbt Cloud run; runs stay `running` for hours). It
creates `--runs` runs through the API, waits until none is left to fire (each `running`
with dbt Cloud's run id stored, or failed: the failures are reported), then watches for
`--watch` seconds and reports:
- the server's RSS, summed over its whole process tree (API, engine, warm launcher): idle
  (median of 5 samples before the first run is created), and the highest of samples taken
  every 2 s from the first run created to the end of the watch window, once every run is
  `running` and over the whole bench; PSS beside it (pages shared by the processes counted
  once);
- poll lateness: a run is polled when the fake is asked for it alone (`GET runs/<id>/`) or
  shows it in a page of a list of runs (`GET runs/`); each poll is due `poll_interval` after
  the run's previous poll, and its lateness is how much later it came (negative: earlier).
  Counted: every poll that came in the watch window (its previous one may be older), and,
  for every run still unpolled at the window's end, the wait so far when it is already past
  due (a run left behind is not dropped from the figures).
Writes bench/dbt_cloud_watch.json; `--raw FILE` also keeps the fake's request log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
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


def tree_memory(pid: int, pss: bool = False) -> tuple[int, int]:
    """RSS and (with `pss`) PSS summed over the process and all its descendants."""
    proc = psutil.Process(pid)
    rss = proc_pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            if pss:
                info = p.memory_full_info()
                rss, proc_pss = rss + info.rss, proc_pss + info.pss
            else:
                rss += p.memory_info().rss
        except psutil.Error:
            pass
    return rss, proc_pss


class Sampler(threading.Thread):
    """The server tree's memory and the machine's load, every `every` seconds."""

    def __init__(self, pid: int, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int, int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rss, pss = tree_memory(self.pid, pss=True)
            self.samples.append((time.time(), rss, pss, os.getloadavg()[0]))
            self.stop.wait(self.every)

    def between(self, start: float, end: float) -> list[tuple[float, int, int, float]]:
        return [s for s in self.samples if start <= s[0] <= end]


def poll_lateness(
    polls: dict[str, list[float]], runs: list[str], poll: float, start: float, end: float
) -> list[float]:
    """Per poll that came in [start, end]: its time minus the run's previous poll's time
    minus `poll`. Per run not polled since `end - poll`: `end` minus its last poll (or
    `start - poll` when never polled) minus `poll`, a lower bound of how late its next is."""
    lateness = []
    for run in runs:
        times = sorted(polls.get(run, []))
        for a, b in zip(times, times[1:], strict=False):
            if start <= b <= end:
                lateness.append(b - a - poll)
        last = max([t for t in times if t <= end], default=start - poll)
        if end - last > poll:
            lateness.append(end - last - poll)
    lateness.sort()
    return lateness


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--poll", type=float, default=30.0)
    ap.add_argument("--watch", type=float, default=240.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "dbt_cloud_watch.json"))
    ap.add_argument("--raw", help="also write the fake's request log (JSON) here")
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
            time.sleep(3)  # the engine and warm launcher start after /health answers
            idle = []
            for _ in range(5):
                idle.append(tree_memory(server.pid, pss=True))
                time.sleep(1)
            rss_idle = sorted(r for r, _ in idle)[2]
            pss_idle = sorted(p for _, p in idle)[2]
            sampler = Sampler(server.pid)
            sampler.start()
            started = time.monotonic()
            bench_from = time.time()

            def create(_: int) -> None:
                answer = http.post(f"/api/v1/workspaces/{ws_id}/job-runs", json={"job_id": job_id})
                answer.raise_for_status()

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(args.runs)))
            created_s = time.monotonic() - started
            while True:
                # settled: no run left to fire (a failed POST ends its run failed)
                page = http.get(
                    f"/api/v1/workspaces/{ws_id}/job-runs",
                    params={"status": ["pending", "starting"], "limit": 1},
                ).json()
                if page["total"] == 0:
                    break
                if time.monotonic() - started > 1800:
                    raise SystemExit(f"{page['total']} runs not yet running after 30 min")
                time.sleep(2)
            all_running_s = time.monotonic() - started
            failed = http.get(
                f"/api/v1/workspaces/{ws_id}/job-runs",
                params={"status": "failed", "limit": 20},
            ).json()
            watch_from = time.time()
            time.sleep(args.watch)
            watch_to = time.time()
            sampler.stop.set()
            sampler.join()
            log = fake.requests("GET", r"/runs/\d+/$")
            listed = fake.requests("GET", r"/runs/$")
            # the dbt Cloud runs the server watches (not one whose POST failed): its store
            with sqlite3.connect(f"file:{ws}/.headwater/headwater.db?mode=ro", uri=True) as db:
                dbt_runs = [
                    str(row[0])
                    for row in db.execute(
                        "SELECT w.dbt_run_id FROM dbt_cloud_watches w JOIN runs r"
                        " ON r.id = w.run_id WHERE r.status = 'running'"
                    )
                ]
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
    lateness = poll_lateness(by_run, dbt_runs, args.poll, watch_from, watch_to)
    if args.raw:
        Path(args.raw).write_text(
            json.dumps(
                {
                    "single": log,
                    "listed": listed,
                    "memory": sampler.samples,
                    "window": [watch_from, watch_to],
                }
            )
        )
    watched = sampler.between(watch_from, watch_to)
    whole = sampler.between(bench_from, watch_to)

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
        "rss_max_mb": round(max(s[1] for s in watched) / 2**20, 1),
        "rss_last_mb": round(watched[-1][1] / 2**20, 1),
        "rss_max_whole_bench_mb": round(max(s[1] for s in whole) / 2**20, 1),
        "pss_idle_mb": round(pss_idle / 2**20, 1),
        "pss_max_mb": round(max(s[2] for s in watched) / 2**20, 1),
        "load1_watch_min_max": [
            round(min(s[3] for s in watched), 2),
            round(max(s[3] for s in watched), 2),
        ],
        "runs_failed": failed["total"],
        "failed_reasons": sorted({r["reason"] for r in failed["items"]}),
        "dbt_cloud_runs_watched": len(dbt_runs),
        "runs_polled_in_window": sum(
            1 for r in dbt_runs if any(watch_from <= t <= watch_to for t in by_run.get(r, []))
        ),
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
        "source_dirty": subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.split("\n")[:-1],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
