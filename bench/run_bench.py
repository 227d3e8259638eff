"""Headwater benchmark: trigger latency, burst throughput, chain latency and memory.

Run from the repository root, with the project installed:

    python bench/run_bench.py

It copies `bench/workspace` to a temporary folder, starts `headwater up` on a
free port of 127.0.0.1, waits until runs are forked from the warm launcher,
then measures:

a) trigger -> the job's first line, over sequential runs of a no-op job;
b) a burst of triggers fired from a few client threads: runs completed per second;
c) `job.success` chain latency: upstream's last line -> downstream's first line;
d) memory (RSS and PSS) of the server (the API process and the worker process it forks)
   and its warm launcher, idle and during the burst.

"First line" is the wall-clock time the job itself prints (`FIRST <time.time()>`),
read back from the logs API; every phase breakdown uses the server's own
timestamps (run created_at / started_at / finished_at, log reported_at), all on
this machine's wall clock. Raw numbers go to bench/results.json.

Every loop is bounded in count and in time; the server is stopped (SIGINT,
then SIGKILL) and the temporary folder removed whatever happens.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
WORKSPACE_SRC = BENCH_DIR / "workspace"
HOST = "127.0.0.1"
TERMINAL = {"completed", "failed", "cancelled", "skipped"}
ACTIVE = ["pending", "starting", "running", "cancelling"]

TARGETS = {
    "trigger_first_line_p50_ms": ("<=", 20.0),
    "trigger_first_line_p99_ms": ("<=", 100.0),
    "burst_runs_per_s": (">=", 50.0),
    "chain_p50_ms": ("<=", 30.0),
    "idle_rss_mb": ("<=", 150.0),
}


class BenchError(Exception):
    pass


# -- small helpers ------------------------------------------------------------------------------


def ts(value: str | None) -> float | None:
    """An API timestamp (ISO 8601, `Z`) as seconds since the epoch."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear interpolation between closest ranks."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary_ms(values_s: list[float | None]) -> dict[str, Any]:
    """p50/p90/p99/max/min/mean in milliseconds of a list of seconds."""
    xs = [v * 1000.0 for v in values_s if v is not None]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "min": min(xs),
        "p50": pct(xs, 50),
        "p90": pct(xs, 90),
        "p99": pct(xs, 99),
        "max": max(xs),
        "mean": statistics.fmean(xs),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def headwater_command() -> list[str]:
    exe = Path(sys.executable).parent / "headwater"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("headwater")
    if found:
        return [found]
    return [sys.executable, "-m", "headwater.cli.main"]


# -- /proc ----------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def descendants(pid: int, limit: int = 10_000) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < limit:
        p = todo.pop()
        out.append(p)
        todo.extend(children_of(p))
    return out


def _kb_field(path: str, name: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid: int) -> int | None:
    return _kb_field(f"/proc/{pid}/status", "VmRSS")


def pss_kb(pid: int) -> int | None:
    return _kb_field(f"/proc/{pid}/smaps_rollup", "Pss")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def memory_snapshot(server_pid: int) -> dict[str, Any]:
    """RSS and PSS (MB) of the server, its warm launcher(s) and the whole process tree."""
    tree = descendants(server_pid)
    launchers = [p for p in tree if "headwater.worker.forkserver" in cmdline(p)]
    # `up` forks its worker process: both are "the server" (same command line)
    servers = [server_pid] + [
        p for p in children_of(server_pid) if cmdline(p) == cmdline(server_pid)
    ]
    mb = lambda kb: None if kb is None else kb / 1024.0  # noqa: E731

    def total(pids: list[int], fn: Any) -> float | None:
        vals = [fn(p) for p in pids]
        vals = [v for v in vals if v is not None]
        return mb(sum(vals)) if vals else None

    return {
        "at": time.time(),
        "server_db_fds": db_fds(server_pid),
        "server_pids": servers,
        "server_rss_mb": total(servers, rss_kb),
        "server_pss_mb": total(servers, pss_kb),
        "launcher_pids": launchers,
        "launcher_rss_mb": total(launchers, rss_kb),
        "launcher_pss_mb": total(launchers, pss_kb),
        "server_plus_launcher_rss_mb": total([*servers, *launchers], rss_kb),
        "server_plus_launcher_pss_mb": total([*servers, *launchers], pss_kb),
        "tree_processes": len(tree),
        "tree_rss_mb": total(tree, rss_kb),
        "tree_pss_mb": total(tree, pss_kb),
    }


def db_fds(pid: int) -> int | None:
    """Open file descriptors on the SQLite database: one per pooled connection."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    n = 0
    for fd in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("headwater.db"):
                n += 1
        except OSError:
            pass
    return n


def machine_info() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = _kb_field("/proc/meminfo", "MemTotal")
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mb": None if mem_kb is None else round(mem_kb / 1024),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def source_state() -> dict[str, Any]:
    """The commit the benchmark ran against and whether src/ had uncommitted changes."""
    repo = BENCH_DIR.parent

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=repo, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_changes": git("status", "--porcelain", "--", "src").splitlines(),
    }


def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return []


def other_headwater_processes(own: set[int]) -> int:
    """How many other `headwater` processes run on this machine (noise in the figures)."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in own or int(name) == os.getpid():
            continue
        line = cmdline(int(name))
        if "headwater" in line and ("up " in line or "forkserver" in line):
            n += 1
    return n


# -- the server ------------------------------------------------------------------------------------


class Server:
    def __init__(
        self,
        workspace: Path,
        port: int,
        log_dir: Path,
        switch_interval: float | None = None,
        trace: Path | None = None,
    ) -> None:
        self.switch_interval = switch_interval
        self.trace = trace
        self.workspace = workspace
        self.port = port
        self.stdout_path = log_dir / "server.stdout"
        self.stderr_path = log_dir / "server.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.url = ""
        self.ws_id = ""
        self.server_json_after_s: float | None = None

    def start(self, timeout: float = 60.0) -> None:
        base = headwater_command()
        if self.switch_interval is not None:
            # experiment: the same CLI with a shorter GIL switch interval (not a Headwater option)
            base = [
                sys.executable,
                "-c",
                f"import sys; sys.setswitchinterval({self.switch_interval!r}); "
                "sys.argv[0] = 'headwater'; from headwater.cli.main import app; app()",
            ]
        if self.trace is not None:
            # profiling: the same CLI with timing wrappers (bench/trace_server.py)
            base = [sys.executable, str(BENCH_DIR / "trace_server.py"), str(self.trace)]
        cmd = [
            *base,
            "up",
            str(self.workspace),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self.started_at = time.time()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # our own group: the cleanup reaches every process in it
            )
        info_path = self.workspace / ".headwater" / "server.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"headwater up exited with {self.proc.returncode}: {self.tail()}")
            if info_path.exists():
                try:
                    info = json.loads(info_path.read_text())
                except ValueError:
                    info = None
                if info:
                    self.url, self.ws_id = info["url"], info["workspace_id"]
                    self.server_json_after_s = time.time() - self.started_at
                    break
            time.sleep(0.05)
        else:
            raise BenchError(f"no server.json after {timeout:g}s: {self.tail()}")
        with httpx.Client(base_url=self.url, timeout=5.0) as c:
            while time.monotonic() < deadline:
                try:
                    if c.get("/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if self.proc.poll() is not None:
                    raise BenchError(f"headwater up exited: {self.tail()}")
                time.sleep(0.05)
        raise BenchError(f"API not answering after {timeout:g}s: {self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> dict[str, Any]:
        """SIGINT, then SIGKILL after 15 s; then SIGKILL what is left in our process group."""
        if self.proc is None:
            return {}
        result: dict[str, Any] = {"signal": None, "exit_code": None}
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGINT)
            result["signal"] = "SIGINT"
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                result["signal"] = "SIGKILL"
                self.proc.wait(10)
            result["stop_s"] = time.monotonic() - t0
        result["exit_code"] = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created; leftovers only
        except (ProcessLookupError, PermissionError):
            pass
        return result


# -- the API ---------------------------------------------------------------------------------------


class Api:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.headers: dict[str, str] = {}
        key_file = server.workspace / ".headwater" / "admin.key"
        if key_file.exists():
            # the local admin key `headwater up` writes for its CLI (servers with API keys)
            self.headers["Authorization"] = f"Bearer {key_file.read_text().strip()}"
        self.client = self.new_client()
        self.ws = server.ws_id

    def new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30.0, headers=self.headers)

    def close(self) -> None:
        self.client.close()

    def jobs(self) -> dict[str, str]:
        r = self.client.get(f"/api/v1/workspaces/{self.ws}/jobs", params={"limit": 1000})
        r.raise_for_status()
        return {j["job_ref"].rsplit(".", 1)[-1]: j["id"] for j in r.json()["items"]}

    def trigger(self, job_id: str, client: httpx.Client | None = None) -> tuple[float, float, Any]:
        """POST a trigger; answers (time before sending, time the answer arrived, response)."""
        c = client or self.client
        t0 = time.time()
        r = c.post(f"/api/v1/workspaces/{self.ws}/jobs/-trigger", json={"job_ids": [job_id]})
        t1 = time.time()
        return t0, t1, r

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.client.get(f"/api/v1/workspaces/{self.ws}/job-runs/{run_id}")
        r.raise_for_status()
        return r.json()

    def wait_run(self, run_id: str, poll_s: float, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise BenchError(f"run {run_id} not terminal after {timeout:g}s: {run['status']}")
            time.sleep(poll_s)

    def logs(self, run_id: str, client: httpx.Client | None = None) -> list[dict[str, Any]]:
        c = client or self.client
        r = c.get(f"/logs/v1/workspaces/{self.ws}/job-runs/{run_id}/logs")
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def runs_of(
        self, job_id: str, statuses: list[str] | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        params: list[tuple[str, Any]] = [("job_id", job_id), ("limit", limit), ("offset", offset)]
        params += [("status", s) for s in statuses or []]
        r = self.client.get(f"/api/v1/workspaces/{self.ws}/job-runs", params=params)
        r.raise_for_status()
        return r.json()


def trigger_ok(resp: httpx.Response) -> str | None:
    """The run id of a successful single-job trigger answer, else None."""
    if resp.status_code != 200:
        return None
    body = resp.json()
    ok = body.get("succeeded") or []
    if len(ok) != 1 or not ok[0].get("job_run_id"):
        return None
    return str(ok[0]["job_run_id"])


def parse_logs(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Printed FIRST/LAST times and the reported_at of the lines the breakdown needs."""
    out: dict[str, Any] = {
        "first_printed": None,
        "first_reported": None,
        "last_printed": None,
        "last_reported": None,
        "setup_reported": None,
        "end_reported": None,
        "n_lines": len(lines),
    }
    for line in lines:
        content = line.get("content") or ""
        src = line.get("source")
        if src == "setup" and out["setup_reported"] is None:
            out["setup_reported"] = ts(line.get("reported_at"))
        elif src == "user" and content.startswith("FIRST ") and out["first_printed"] is None:
            out["first_printed"] = float(content.split()[1])
            out["first_reported"] = ts(line.get("reported_at"))
        elif src == "user" and content.startswith("LAST "):
            out["last_printed"] = float(content.split()[1])
            out["last_reported"] = ts(line.get("reported_at"))
        elif src == "runner" and content.startswith("run #"):
            out["end_reported"] = ts(line.get("reported_at"))
    return out


def run_record(
    run: dict[str, Any], logs: dict[str, Any], t_send: float | None, t_answer: float | None
) -> dict[str, Any]:
    return {
        "run_id": run["id"],
        "status": run["status"],
        "launch_mode": run.get("launch_mode"),
        "t_send": t_send,
        "t_answer": t_answer,
        "created_at": ts(run.get("created_at")),
        "started_at": ts(run.get("started_at")),
        "finished_at": ts(run.get("finished_at")),
        **logs,
    }


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# -- the measurements ------------------------------------------------------------------------------


def wait_warm(api: Api, job_id: str, poll_s: float, timeout: float = 60.0) -> dict[str, Any]:
    """Trigger the no-op job until a run is forked from the warm launcher."""
    deadline = time.monotonic() + timeout
    runs = []
    for _ in range(200):
        if time.monotonic() > deadline:
            break
        t0, t1, resp = api.trigger(job_id)
        run_id = trigger_ok(resp)
        if run_id is None:
            raise BenchError(f"warm-up trigger failed: {resp.status_code} {resp.text[:300]}")
        run = api.wait_run(run_id, poll_s)
        rec = run_record(run, parse_logs(api.logs(run_id)), t0, t1)
        runs.append(rec)
        if run.get("launch_mode") == "fork":
            return {"runs": runs, "warm_after_start_s": t1 - api.server.started_at}
        time.sleep(0.2)
    raise BenchError(f"no run forked from the warm launcher within {timeout:g}s")


def bench_sequential(
    api: Api, job_id: str, n: int, poll_s: float, budget_s: float
) -> dict[str, Any]:
    recs, errors = [], []
    deadline = time.monotonic() + budget_s
    for i in range(n):
        if time.monotonic() > deadline:
            errors.append(f"time budget of {budget_s:g}s spent after {i} runs")
            break
        t0, t1, resp = api.trigger(job_id)
        run_id = trigger_ok(resp)
        if run_id is None:
            errors.append(f"trigger {i}: HTTP {resp.status_code} {resp.text[:200]}")
            continue
        try:
            run = api.wait_run(run_id, poll_s)
        except BenchError as ex:
            errors.append(str(ex))
            continue
        recs.append(run_record(run, parse_logs(api.logs(run_id)), t0, t1))
    lat_send = [diff(r["first_printed"], r["t_send"]) for r in recs]
    lat_answer = [diff(r["first_printed"], r["t_answer"]) for r in recs]
    breakdown = {
        "http_round_trip": summary_ms([diff(r["t_answer"], r["t_send"]) for r in recs]),
        "send_to_created": summary_ms([diff(r["created_at"], r["t_send"]) for r in recs]),
        "created_to_claimed": summary_ms([diff(r["started_at"], r["created_at"]) for r in recs]),
        "claimed_to_setup_line": summary_ms(
            [diff(r["setup_reported"], r["started_at"]) for r in recs]
        ),
        "setup_line_to_first_printed": summary_ms(
            [diff(r["first_printed"], r["setup_reported"]) for r in recs]
        ),
        "first_printed_to_read_by_worker": summary_ms(
            [diff(r["first_reported"], r["first_printed"]) for r in recs]
        ),
        "first_printed_to_finished_at": summary_ms(
            [diff(r["finished_at"], r["first_printed"]) for r in recs]
        ),
        "answer_before_first_line_share": (
            sum(1 for v in lat_answer if v is not None and v < 0) / len(recs) if recs else None
        ),
    }
    return {
        "n_requested": n,
        "n_measured": len(recs),
        "errors": errors,
        "failed_runs": sum(1 for r in recs if r["status"] != "completed"),
        "not_forked": sum(1 for r in recs if r["launch_mode"] != "fork"),
        "trigger_sent_to_first_line": summary_ms(lat_send),
        "trigger_answered_to_first_line": summary_ms(lat_answer),
        "breakdown": breakdown,
        "runs": recs,
    }


class MemorySampler(threading.Thread):
    def __init__(self, server_pid: int, interval_s: float = 0.05, max_s: float = 300.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.server_pid = server_pid
        self.interval_s = interval_s
        self.max_s = max_s
        self.samples: list[dict[str, Any]] = []
        self._stop_ev = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.max_s
        k = 0
        while not self._stop_ev.is_set() and time.monotonic() < end:
            tree = descendants(self.server_pid)
            rss = [rss_kb(p) for p in tree]
            sample = {
                "at": time.time(),
                "server_rss_kb": rss_kb(self.server_pid),
                "tree_rss_kb": sum(v for v in rss if v is not None),
                "tree_processes": len(tree),
                "tree_pss_kb": None,
            }
            if k % 5 == 0:
                # PSS (shared pages split between sharers) every 5th sample: it costs more to read
                pss = [pss_kb(p) for p in tree]
                sample["tree_pss_kb"] = sum(v for v in pss if v is not None)
            self.samples.append(sample)
            k += 1
            self._stop_ev.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(5)


def bench_burst(api: Api, job_id: str, n: int, threads: int, budget_s: float) -> dict[str, Any]:
    counter = itertools.count()
    lock = threading.Lock()
    sent: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget_s

    def fire() -> None:
        with api.new_client() as c:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                try:
                    t0, t1, resp = api.trigger(job_id, c)
                    run_id = trigger_ok(resp)
                    rec = {
                        "i": i,
                        "t_send": t0,
                        "t_answer": t1,
                        "http": resp.status_code,
                        "run_id": run_id,
                    }
                    if run_id is None:
                        rec["error"] = resp.text[:300]
                except httpx.HTTPError as ex:
                    rec = {
                        "i": i,
                        "t_send": time.time(),
                        "t_answer": None,
                        "http": None,
                        "run_id": None,
                        "error": repr(ex),
                    }
                with lock:
                    sent.append(rec)

    sampler = MemorySampler(api.server.pid)
    sampler.start()
    workers = [threading.Thread(target=fire, name=f"burst-{k}") for k in range(threads)]
    t_start = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()) + 5)

    ids = {r["run_id"] for r in sent if r["run_id"]}
    # wait until no run of the job is active any more (every run of the burst is terminal)
    wait_deadline = time.monotonic() + max(10.0, deadline - time.monotonic())
    active = None
    while time.monotonic() < wait_deadline:
        active = api.runs_of(job_id, ACTIVE, limit=0)["total"]
        if active == 0:
            break
        time.sleep(0.1)
    t_done_seen = time.time()
    time.sleep(0.3)
    sampler.stop()

    # the burst's runs, as the API reports them
    runs: dict[str, dict[str, Any]] = {}
    for page in range(50):
        body = api.runs_of(job_id, limit=1000, offset=page * 1000)
        for item in body["items"]:
            if item["id"] in ids:
                runs[item["id"]] = item
        if len(body["items"]) < 1000:
            break

    # first lines of the burst's runs (after the fact, so reading does not load the burst)
    def first_of(run_id: str, client: httpx.Client) -> tuple[str, dict[str, Any]]:
        return run_id, parse_logs(api.logs(run_id, client))

    logs: dict[str, dict[str, Any]] = {}
    clients = [api.new_client() for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(first_of, rid, clients[k % 4]) for k, rid in enumerate(ids)]
            for f in futs:
                rid, parsed = f.result(timeout=60)
                logs[rid] = parsed
    finally:
        for c in clients:
            c.close()

    by_id = {r["run_id"]: r for r in sent if r["run_id"]}
    statuses: dict[str, int] = {}
    for r in runs.values():
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    finished = [ts(r.get("finished_at")) for r in runs.values()]
    finished = [f for f in finished if f is not None]
    first_send = min((r["t_send"] for r in sent), default=t_start)
    last_finished = max(finished, default=None)
    window = diff(last_finished, first_send)
    answers = [r["t_answer"] for r in sent if r["t_answer"] is not None]
    recs = [
        run_record(runs[rid], logs.get(rid, {}), by_id[rid]["t_send"], by_id[rid]["t_answer"])
        for rid in ids
        if rid in runs
    ]
    peak_tree = max((s["tree_rss_kb"] for s in sampler.samples), default=None)
    peak_server = max((s["server_rss_kb"] or 0 for s in sampler.samples), default=None)
    peak_pss = max((s["tree_pss_kb"] for s in sampler.samples if s["tree_pss_kb"]), default=None)
    return {
        "n_requested": n,
        "client_threads": threads,
        "triggers_sent": len(sent),
        "http_errors": sum(1 for r in sent if r["run_id"] is None),
        "error_samples": [r.get("error") for r in sent if r["run_id"] is None][:5],
        "runs_created": len(ids),
        "runs_found": len(runs),
        "statuses": statuses,
        "runs_failed": sum(v for k, v in statuses.items() if k != "completed"),
        "runs_not_forked": sum(1 for r in runs.values() if r.get("launch_mode") != "fork"),
        "still_active_at_end": active,
        "first_trigger_at": first_send,
        "all_triggers_answered_s": diff(max(answers, default=None), first_send),
        "trigger_rate_per_s": (len(answers) / diff(max(answers), first_send))
        if len(answers) > 1
        else None,
        "last_finished_s": window,
        "runs_per_s": (statuses.get("completed", 0) / window) if window else None,
        "all_terminal_seen_s": t_done_seen - first_send,
        "trigger_http_round_trip": summary_ms([diff(r["t_answer"], r["t_send"]) for r in sent]),
        "trigger_answered_to_first_line": summary_ms(
            [diff(r["first_printed"], r["t_answer"]) for r in recs]
        ),
        "created_to_claimed": summary_ms([diff(r["started_at"], r["created_at"]) for r in recs]),
        "claimed_to_first_line": summary_ms(
            [diff(r["first_printed"], r["started_at"]) for r in recs]
        ),
        "first_line_to_finished": summary_ms(
            [diff(r["finished_at"], r["first_printed"]) for r in recs]
        ),
        "peak_tree_rss_mb": None if peak_tree is None else peak_tree / 1024.0,
        "peak_server_rss_mb": None if peak_server is None else peak_server / 1024.0,
        "peak_tree_pss_mb": None if peak_pss is None else peak_pss / 1024.0,
        "peak_tree_processes": max((s["tree_processes"] for s in sampler.samples), default=None),
        "rss_samples": len(sampler.samples),
        "rss_series": [
            [
                round(s["at"] - first_send, 3),
                s["server_rss_kb"],
                s["tree_rss_kb"],
                s["tree_processes"],
                s["tree_pss_kb"],
            ]
            for s in sampler.samples
        ],
    }


def bench_chain(
    api: Api, up_id: str, down_id: str, n: int, poll_s: float, budget_s: float
) -> dict[str, Any]:
    recs, errors = [], []
    deadline = time.monotonic() + budget_s
    for i in range(n):
        if time.monotonic() > deadline:
            errors.append(f"time budget of {budget_s:g}s spent after {i} chains")
            break
        t0, t1, resp = api.trigger(up_id)
        up_run_id = trigger_ok(resp)
        if up_run_id is None:
            errors.append(f"chain {i}: HTTP {resp.status_code} {resp.text[:200]}")
            continue
        try:
            up = api.wait_run(up_run_id, poll_s)
            down = None
            wait_end = time.monotonic() + 30
            while time.monotonic() < wait_end:
                for item in api.runs_of(down_id, limit=10)["items"]:
                    if item.get("previous_job_run_id") == up_run_id and item["status"] in TERMINAL:
                        down = item
                        break
                if down is not None:
                    break
                time.sleep(poll_s)
            if down is None:
                raise BenchError(f"chain {i}: no terminal downstream run of {up_run_id} in 30 s")
        except BenchError as ex:
            errors.append(str(ex))
            continue
        up_rec = run_record(up, parse_logs(api.logs(up_run_id)), t0, t1)
        down_rec = run_record(down, parse_logs(api.logs(down["id"])), None, None)
        recs.append({"up": up_rec, "down": down_rec})
    return {
        "n_requested": n,
        "n_measured": len(recs),
        "errors": errors,
        "failed_runs": sum(
            1 for r in recs for k in ("up", "down") if r[k]["status"] != "completed"
        ),
        "upstream_last_to_downstream_first": summary_ms(
            [diff(r["down"]["first_printed"], r["up"]["last_printed"]) for r in recs]
        ),
        "breakdown": {
            "up_last_printed_to_up_finished_at": summary_ms(
                [diff(r["up"]["finished_at"], r["up"]["last_printed"]) for r in recs]
            ),
            "up_finished_at_to_down_created_at": summary_ms(
                [diff(r["down"]["created_at"], r["up"]["finished_at"]) for r in recs]
            ),
            "down_created_to_claimed": summary_ms(
                [diff(r["down"]["started_at"], r["down"]["created_at"]) for r in recs]
            ),
            "down_claimed_to_first_printed": summary_ms(
                [diff(r["down"]["first_printed"], r["down"]["started_at"]) for r in recs]
            ),
        },
        "chains": recs,
    }


def idle_memory(server_pid: int, samples: int = 5, gap_s: float = 0.2) -> dict[str, Any]:
    snaps = []
    for _ in range(samples):
        snaps.append(memory_snapshot(server_pid))
        time.sleep(gap_s)
    keys = [k for k, v in snaps[0].items() if isinstance(v, float) and k != "at"]
    med = {
        k: statistics.median([s[k] for s in snaps if s.get(k) is not None] or [float("nan")])
        for k in keys
    }
    med["launcher_pids"] = snaps[-1]["launcher_pids"]
    med["server_db_fds"] = snaps[-1]["server_db_fds"]
    med["tree_processes"] = snaps[-1]["tree_processes"]
    return med


# -- report ----------------------------------------------------------------------------------------


def fmt(v: Any, unit: str = "", nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}{unit}"
    return f"{v}{unit}"


def verdict(key: str, value: float | None) -> str:
    op, target = TARGETS[key]
    if value is None:
        return "n/a"
    ok = value <= target if op == "<=" else value >= target
    return "OK" if ok else "MISSED"


def print_report(res: dict[str, Any]) -> None:
    empty_seq = {
        "trigger_sent_to_first_line": {},
        "trigger_answered_to_first_line": {},
        "n_measured": 0,
        "failed_runs": "-",
        "not_forked": "-",
        "breakdown": {},
    }
    empty_burst = {
        k: None
        for k in (
            "runs_per_s",
            "http_errors",
            "runs_failed",
            "all_triggers_answered_s",
            "last_finished_s",
            "peak_tree_rss_mb",
            "peak_server_rss_mb",
        )
    }
    empty_burst.update(n_requested=0, client_threads=0)
    empty_chain = {"upstream_last_to_downstream_first": {}, "breakdown": {}}
    a = res.get("sequential", empty_seq)
    b = res.get("burst", empty_burst)
    c = res.get("chain", empty_chain)
    d = res["memory"]
    lat, lat_ans = a["trigger_sent_to_first_line"], a["trigger_answered_to_first_line"]
    rows = [
        (
            "a) trigger sent -> first line p50",
            fmt(lat.get("p50"), " ms"),
            "<= 20 ms",
            verdict("trigger_first_line_p50_ms", lat.get("p50")),
        ),
        ("a) trigger sent -> first line p90", fmt(lat.get("p90"), " ms"), "", ""),
        (
            "a) trigger sent -> first line p99",
            fmt(lat.get("p99"), " ms"),
            "<= 100 ms",
            verdict("trigger_first_line_p99_ms", lat.get("p99")),
        ),
        ("a) trigger sent -> first line max", fmt(lat.get("max"), " ms"), "", ""),
        (
            "a) HTTP answer -> first line p50/p90/p99/max",
            "/".join(fmt(lat_ans.get(k), "", 1) for k in ("p50", "p90", "p99", "max")) + " ms",
            "",
            "",
        ),
        (
            "a) runs measured / failed / not forked",
            f"{a['n_measured']} / {a['failed_runs']} / {a['not_forked']}",
            "",
            "",
        ),
        (
            f"b) burst of {b['n_requested']} ({b['client_threads']} threads): runs/s",
            fmt(b["runs_per_s"], " /s"),
            ">= 50 /s",
            verdict("burst_runs_per_s", b["runs_per_s"]),
        ),
        (
            "b) burst: HTTP errors / failed runs",
            f"{b['http_errors']} / {b['runs_failed']}",
            "0 / 0",
            "",
        ),
        (
            "b) burst: all answered / last finished after",
            f"{fmt(b['all_triggers_answered_s'], ' s', 2)} / {fmt(b['last_finished_s'], ' s', 2)}",
            "",
            "",
        ),
        (
            "c) chain up LAST -> down FIRST p50",
            fmt(c["upstream_last_to_downstream_first"].get("p50"), " ms"),
            "<= 30 ms",
            verdict("chain_p50_ms", c["upstream_last_to_downstream_first"].get("p50")),
        ),
        (
            "c) chain up LAST -> down FIRST p99",
            fmt(c["upstream_last_to_downstream_first"].get("p99"), " ms"),
            "",
            "",
        ),
        (
            "d) idle RSS server + warm launcher",
            fmt(d["idle"]["server_plus_launcher_rss_mb"], " MB"),
            "<= 150 MB",
            verdict("idle_rss_mb", d["idle"]["server_plus_launcher_rss_mb"]),
        ),
        ("d) idle RSS server alone", fmt(d["idle"]["server_rss_mb"], " MB"), "", ""),
        (
            "d) idle PSS server + warm launcher",
            fmt(d["idle"]["server_plus_launcher_pss_mb"], " MB"),
            "",
            "",
        ),
        ("d) idle PSS server alone", fmt(d["idle"]["server_pss_mb"], " MB"), "", ""),
        ("d) peak RSS tree during burst", fmt(b["peak_tree_rss_mb"], " MB"), "", ""),
        (
            "d) peak PSS tree during burst (250 ms samples)",
            fmt(b.get("peak_tree_pss_mb"), " MB"),
            "",
            "",
        ),
        ("d) peak RSS server alone during burst", fmt(b["peak_server_rss_mb"], " MB"), "", ""),
        (
            "d) RSS server + launcher after the bench",
            fmt(d["after"]["server_plus_launcher_rss_mb"], " MB"),
            "",
            "",
        ),
    ]
    w = max(len(r[0]) for r in rows)
    print()
    print(f"{'metric':<{w}}  {'measured':>24}  {'target':>10}  verdict")
    print("-" * (w + 48))
    for name, val, tgt, ok in rows:
        print(f"{name:<{w}}  {val:>24}  {tgt:>10}  {ok}")
    print()
    print("where the time goes (sequential runs, ms: p50 / p90 / max)")
    for k, v in a["breakdown"].items():
        if isinstance(v, dict) and v.get("n"):
            print(f"  {k:<36} {v['p50']:7.2f} / {v['p90']:7.2f} / {v['max']:7.2f}")
    print("chain breakdown (ms: p50 / p90 / max)")
    for k, v in c["breakdown"].items():
        if v.get("n"):
            print(f"  {k:<36} {v['p50']:7.2f} / {v['p90']:7.2f} / {v['max']:7.2f}")
    print("burst breakdown (ms: p50 / p90 / max)")
    for k in (
        "trigger_http_round_trip",
        "created_to_claimed",
        "claimed_to_first_line",
        "first_line_to_finished",
        "trigger_answered_to_first_line",
    ):
        v = b.get(k) or {}
        if v.get("n"):
            print(f"  {k:<36} {v['p50']:7.2f} / {v['p90']:7.2f} / {v['max']:7.2f}")
    print()


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=200, help="sequential runs for (a)")
    ap.add_argument("--burst", type=int, default=500, help="triggers in the burst (b)")
    ap.add_argument("--burst-threads", type=int, default=8, help="client threads of the burst")
    ap.add_argument("--chains", type=int, default=50, help="job.success chains for (c)")
    ap.add_argument("--poll-ms", type=float, default=20.0, help="status poll interval")
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="experiment: run the server with sys.setswitchinterval(S)",
    )
    ap.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="profiling: start the server through bench/trace_server.py, "
        "writing its call timings to this file",
    )
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    ap.add_argument("--summary-only", action="store_true", help="leave per-run records out")
    args = ap.parse_args()
    poll_s = args.poll_ms / 1000.0

    tmp = Path(tempfile.mkdtemp(prefix="hwbench-"))
    workspace = tmp / "workspace"
    shutil.copytree(
        WORKSPACE_SRC, workspace, ignore=shutil.ignore_patterns(".headwater", "__pycache__")
    )
    server = Server(workspace, free_port(), tmp, args.switch_interval, args.trace)
    api: Api | None = None
    res: dict[str, Any] = {"machine": machine_info(), "config": vars(args) | {"out": str(args.out)}}
    res["loadavg_before"] = loadavg()
    res["command"] = headwater_command()
    res["source"] = source_state()
    code = 0
    t_bench = time.monotonic()
    try:
        server.start()
        api = Api(server)
        res["other_headwater_processes_at_start"] = other_headwater_processes(
            set(descendants(server.pid))
        )
        jobs = api.jobs()
        for name in ("noop", "upstream", "after"):
            if name not in jobs:
                raise BenchError(f"job {name!r} missing from the workspace: {sorted(jobs)}")
        print(f"server pid {server.pid} at {server.url}; waiting for the warm launcher", flush=True)
        warm = wait_warm(api, jobs["noop"], poll_s)
        res["warmup"] = {
            "server_json_after_s": server.server_json_after_s,
            "warm_after_start_s": warm["warm_after_start_s"],
            "runs_until_fork": len(warm["runs"]),
            "first_run_answered_to_first_line_ms": (
                diff(warm["runs"][0]["first_printed"], warm["runs"][0]["t_answer"]) or 0
            )
            * 1000,
            "first_run_launch_mode": warm["runs"][0]["launch_mode"],
            "first_fork_run_answered_to_first_line_ms": (
                diff(warm["runs"][-1]["first_printed"], warm["runs"][-1]["t_answer"]) or 0
            )
            * 1000,
            "runs": warm["runs"],
        }
        time.sleep(1.0)
        res["memory"] = {"idle": idle_memory(server.pid)}
        print(
            f"warm after {warm['warm_after_start_s']:.2f}s; idle RSS "
            f"{res['memory']['idle']['server_plus_launcher_rss_mb']:.1f} MB",
            flush=True,
        )

        if args.runs:
            print(f"(a) {args.runs} sequential runs", flush=True)
            res["sequential"] = bench_sequential(api, jobs["noop"], args.runs, poll_s, budget_s=240)
            time.sleep(0.5)
        if args.burst:
            print(
                f"(b) burst of {args.burst} triggers from {args.burst_threads} threads", flush=True
            )
            res["burst"] = bench_burst(
                api, jobs["noop"], args.burst, args.burst_threads, budget_s=180
            )
            time.sleep(0.5)
        if args.chains:
            print(f"(c) {args.chains} job.success chains", flush=True)
            res["chain"] = bench_chain(
                api, jobs["upstream"], jobs["after"], args.chains, poll_s, budget_s=120
            )
        time.sleep(1.0)
        res["memory"]["after"] = idle_memory(server.pid)
        res["loadavg_after"] = loadavg()
        res["bench_duration_s"] = time.monotonic() - t_bench
        res["targets"] = {k: {"op": op, "target": t} for k, (op, t) in TARGETS.items()}
        seq = res.get("sequential", {}).get("trigger_sent_to_first_line", {})
        chain = res.get("chain", {}).get("upstream_last_to_downstream_first", {})
        res["verdicts"] = {
            "trigger_first_line_p50_ms": verdict("trigger_first_line_p50_ms", seq.get("p50")),
            "trigger_first_line_p99_ms": verdict("trigger_first_line_p99_ms", seq.get("p99")),
            "burst_runs_per_s": verdict("burst_runs_per_s", res.get("burst", {}).get("runs_per_s")),
            "chain_p50_ms": verdict("chain_p50_ms", chain.get("p50")),
            "idle_rss_mb": verdict(
                "idle_rss_mb", res["memory"]["idle"]["server_plus_launcher_rss_mb"]
            ),
        }
        print_report(res)
    except (BenchError, httpx.HTTPError) as ex:
        print(f"benchmark failed: {ex}", file=sys.stderr)
        print(server.tail(), file=sys.stderr)
        res["error"] = str(ex)
        code = 1
    finally:
        if api is not None:
            api.close()
        res["server_stop"] = server.stop()
        res["server_stderr_tail"] = server.tail(50)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.summary_only:
        # the per-run records are big; the summaries above are what the report reads
        for section, key in (("sequential", "runs"), ("chain", "chains"), ("warmup", "runs")):
            if section in res and key in res[section]:
                res[section][f"{key}_count"] = len(res[section][key])
                del res[section][key]
        if "burst" in res:
            res["burst"].pop("rss_series", None)
    args.out.write_text(json.dumps(res, indent=2, default=str))
    print(f"raw numbers: {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
