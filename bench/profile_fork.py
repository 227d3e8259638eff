"""Where a forked run's time goes, without the server: fork -> the job's first line.

    python bench/profile_fork.py [--runs 100] [--profile-children 20]

Loads the benchmark workspace the way Headwater's warm launcher does
(`headwater.worker.forkserver._warm`), then forks runs of the `noop` job with
the same launcher command and environment the worker builds, and measures:

- bare:     fork() -> a child that prints time.time() at once (the floor);
- launcher: fork() -> `FIRST <time>` of the noop job run through dlt's launcher
            (`forkserver._child`, exactly what a warm run does);
- exit:     fork() -> the child's exit as seen by waitpid;
- direct:   (prototype of a proposed change) the same run, but the child calls the
            already-imported launcher's functions instead of `runpy.run_module`
            (no .pyc re-read, no module body re-run, no argparse) and applies
            the run's environment as a diff;
- prefork:  (prototype) `direct`, in a child forked *before* the request arrives,
            timed from handing it the request to its first line.

With --profile-children N it also runs N children under cProfile and prints
the functions the child spends its time in between fork and exit.
Only files under a temporary folder are written; it cleans up after itself.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def show(name: str, xs: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in xs]
    s = {
        "n": len(ms),
        "p50": pct(ms, 50),
        "p90": pct(ms, 90),
        "p99": pct(ms, 99),
        "max": max(ms),
        "mean": statistics.fmean(ms),
    }
    print(
        f"  {name:<34} p50 {s['p50']:6.2f}  p90 {s['p90']:6.2f}  p99 {s['p99']:6.2f}  "
        f"max {s['max']:6.2f} ms  (n={s['n']})"
    )
    return s


def read_first(fd: int, timeout: float = 10.0) -> tuple[float | None, float]:
    """Read the pipe until a `FIRST <t>` line; answers (printed time, time read)."""
    import select

    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
        for line in buf.split(b"\n")[:-1]:
            if line.startswith(b"FIRST "):
                return float(line.split()[1]), time.time()
    return None, time.time()


def drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def direct_child(req: dict, fds: list[int]) -> None:
    """Prototype of a leaner `forkserver._child`: no runpy, no argparse, env as a diff."""
    import io as _io
    import signal
    import traceback
    from functools import partial

    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        out_fd, err_fd = fds
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        sys.stdout = _io.TextIOWrapper(
            _io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True
        )
        sys.stderr = _io.TextIOWrapper(
            _io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True
        )
        env = req["env"]
        for k in [k for k in os.environ if k not in env]:
            del os.environ[k]
        for k, v in env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
        if os.getcwd() != req["cwd"]:
            os.chdir(req["cwd"])
        mod = sys.modules[req["launcher"]]
        argv = req["argv"]
        opts = dict(zip(argv[::2], argv[1::2], strict=True))
        try:
            mod.run_and_print_result(
                partial(
                    mod.run,
                    entry_point=json.loads(opts["--entry-point"]),
                    run_id=opts["--run-id"],
                    trigger=opts["--trigger"],
                )
            )
            code = 0
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        os._exit(code)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--profile-children", type=int, default=20)
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="prototype: gc.freeze() in the warm process after the warm-up",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hwforkprof-"))
    ws = tmp / "workspace"
    shutil.copytree(
        BENCH_DIR / "workspace", ws, ignore=shutil.ignore_patterns(".headwater", "__pycache__")
    )
    (ws / ".headwater").mkdir()
    results: dict[str, object] = {}
    try:
        from headwater.worker import forkserver
        from headwater.workspace.launch import launch_command, run_environment

        job_def = {
            "engine_version": 2,
            "job_ref": "jobs.__deployment__.noop",
            "entry_point": {
                "module": "__deployment__",
                "function": "noop",
                "job_type": "batch",
                "launcher": "dlt._workspace.deployment.launchers.job",
            },
            "triggers": [],
            "execute": {"concurrency": None},
            "expose": {"manual": True},
        }
        os.chdir(ws)
        sys.path.insert(0, str(ws))
        t0 = time.perf_counter()
        forkserver._warm(str(ws))
        print(f"warm-up (imports + one no-op launcher run): {(time.perf_counter() - t0):.2f} s")
        if args.gc_freeze:
            import gc

            gc.collect()
            gc.freeze()
        rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
        print(f"warm process RSS {rss:.1f} MB, {len(sys.modules)} modules")
        results["warm_rss_mb"] = rss

        def request(i: int) -> dict:
            run = {
                "id": f"prof-{i}",
                "number": i,
                "trigger": "manual:jobs.__deployment__.noop",
                "parameters": {},
                "refresh": False,
            }
            launcher, argv = launch_command(run, job_def)
            data_dir = ws / ".headwater" / "data"
            try:
                env = run_environment(dict(os.environ), ws, run, "prof", data_dir)
            except TypeError:  # the older signature, without data_dir
                env = run_environment(dict(os.environ), ws, run, "prof")
            return {
                "op": "spawn",
                "run_id": run["id"],
                "launcher": launcher,
                "argv": argv,
                "env": env,
                "cwd": str(ws),
            }

        # bare fork: the floor
        bare, exits_bare = [], []
        for _ in range(args.runs):
            r, w = os.pipe()
            t0 = time.time()
            pid = os.fork()
            if pid == 0:
                os.write(w, f"FIRST {time.time():.6f}\n".encode())
                os._exit(0)
            os.close(w)
            first, _ = read_first(r)
            drain(r)
            os.close(r)
            os.waitpid(pid, 0)
            exits_bare.append(time.time() - t0)
            bare.append(first - t0)

        # the launcher, as a warm run does it
        first_l, read_l, exits_l, prep = [], [], [], []
        for i in range(args.runs):
            tp = time.time()
            req = request(i)
            json.dumps(req)  # the worker sends it as JSON over the socket
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            t0 = time.time()
            prep.append(t0 - tp)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(out_r)
                os.close(err_r)
                forkserver._child(req, [out_w, err_w], [])
            os.close(out_w)
            os.close(err_w)
            first, seen = read_first(out_r)
            drain(out_r)
            os.close(out_r)
            err = b""
            try:
                err = os.read(err_r, 65536)
            except OSError:
                pass
            os.close(err_r)
            _, status = os.waitpid(pid, 0)
            exits_l.append(time.time() - t0)
            if first is None:
                print("no FIRST line; stderr:", err.decode(errors="replace")[-2000:])
                return 1
            first_l.append(first - t0)
            read_l.append(seen - first)

        # prototype: call the launcher directly
        first_d, exits_d = [], []
        for i in range(args.runs):
            req = request(20_000 + i)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            t0 = time.time()
            pid = os.fork()
            if pid == 0:
                os.close(out_r)
                os.close(err_r)
                direct_child(req, [out_w, err_w])
            os.close(out_w)
            os.close(err_w)
            first, _ = read_first(out_r)
            drain(out_r)
            os.close(out_r)
            err = os.read(err_r, 65536)
            os.close(err_r)
            os.waitpid(pid, 0)
            exits_d.append(time.time() - t0)
            if first is None:
                print("direct: no FIRST line; stderr:", err.decode(errors="replace")[-2000:])
                return 1
            first_d.append(first - t0)

        # prototype: a spare child forked ahead, handed its request later
        first_p = []
        for i in range(args.runs):
            req = request(30_000 + i)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            req_r, req_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(out_r)
                os.close(err_r)
                os.close(req_w)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = os.read(req_r, 1 << 20)
                    if not chunk:
                        os._exit(1)
                    data += chunk
                direct_child(json.loads(data), [out_w, err_w])
            os.close(out_w)
            os.close(err_w)
            os.close(req_r)
            time.sleep(0.02)  # the spare is forked and waiting before the run arrives
            t0 = time.time()
            os.write(req_w, json.dumps(req).encode() + b"\n")
            first, _ = read_first(out_r)
            drain(out_r)
            os.close(out_r)
            os.close(err_r)
            os.close(req_w)
            os.waitpid(pid, 0)
            if first is None:
                print("prefork: no FIRST line")
                return 1
            first_p.append(first - t0)

        print("fork from the warm process (this script, no server):")
        results["bare_fork_to_first_line"] = show("bare fork -> first line", bare)
        results["bare_fork_to_exit"] = show("bare fork -> exit", exits_bare)
        results["build_request"] = show("launch_command + env (parent)", prep)
        results["launcher_fork_to_first_line"] = show("launcher fork -> FIRST", first_l)
        results["launcher_first_to_read"] = show("FIRST printed -> read by parent", read_l)
        results["launcher_fork_to_exit"] = show("launcher fork -> exit", exits_l)
        results["direct_fork_to_first_line"] = show("direct fork -> FIRST (prototype)", first_d)
        results["direct_fork_to_exit"] = show("direct fork -> exit (prototype)", exits_d)
        results["prefork_request_to_first_line"] = show(
            "prefork request -> FIRST (prototype)", first_p
        )

        if args.profile_children:
            stats_dir = tmp / "prof"
            stats_dir.mkdir()
            for i in range(args.profile_children):
                req = request(10_000 + i)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(out_r)
                    os.close(err_r)
                    prof = cProfile.Profile()
                    real_exit = os._exit

                    def exit_with_stats(code: int, _p=prof, _i=i, _exit=real_exit) -> None:
                        _p.disable()
                        _p.dump_stats(str(stats_dir / f"child-{_i}.prof"))
                        _exit(code)

                    os._exit = exit_with_stats  # type: ignore[assignment]
                    prof.enable()
                    forkserver._child(req, [out_w, err_w], [])
                os.close(out_w)
                os.close(err_w)
                drain(out_r)
                drain(err_r)
                os.close(out_r)
                os.close(err_r)
                os.waitpid(pid, 0)
            files = sorted(str(p) for p in stats_dir.glob("*.prof"))
            if files:
                st = pstats.Stats(files[0], stream=io.StringIO())
                for f in files[1:]:
                    st.add(f)
                buf = io.StringIO()
                st.stream = buf
                st.sort_stats("cumulative").print_stats(40)
                print(f"\ncProfile of {len(files)} forked launcher children (cumulative, summed):")
                print("\n".join(buf.getvalue().splitlines()[:70]))
        out = BENCH_DIR / "profile_fork.json"
        out.write_text(json.dumps(results, indent=2))
        print(f"numbers: {out}")
    finally:
        os.chdir(BENCH_DIR)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
