"""`headwater` with timing wrappers around the hot path, for profiling only.

    python bench/trace_server.py OUT.json up WORKSPACE --port P ...

Wraps every public `Store` method, the worker's start/flush/finish steps, the
warm launcher's spawn, the dispatcher's pass and the API's ASGI app, records
(name, thread, start, duration) of each call, and writes them to OUT.json when
the server exits. `run_bench.py --trace OUT.json` starts the server this way.
Nothing in src/ changes; the wrappers cost a few microseconds per call.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import sys
import threading
import time
from typing import Any

RECORDS: list[tuple[str, str, float, float]] = []
_lock = threading.Lock()


def timed(name: str, fn: Any) -> Any:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*a: Any, **kw: Any) -> Any:
            t0 = time.time()
            p0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                rec = (name, threading.current_thread().name, t0, time.perf_counter() - p0)
                with _lock:
                    RECORDS.append(rec)

        return awrapper

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.time()
        p0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            rec = (name, threading.current_thread().name, t0, time.perf_counter() - p0)
            with _lock:
                RECORDS.append(rec)

    return wrapper


def patch() -> None:
    from headwater.events import dispatcher
    from headwater.store import store
    from headwater.worker import launchers, logpump, processes, supervisor

    for attr, fn in [(a, getattr(store.Store, a)) for a in dir(store.Store)]:  # with its parts
        if callable(fn) and not attr.startswith("__"):
            setattr(store.Store, attr, timed(f"Store.{attr}", fn))
    sup = supervisor.Supervisor
    for attr in ("start_runs", "_read", "_pick_up_cancels", "finish_exited"):
        setattr(sup, attr, timed(f"Supervisor.{attr}", getattr(sup, attr)))
    logpump.LogPump.flush = timed("LogPump.flush", logpump.LogPump.flush)
    supervisor.launch_command = timed("launch_command", supervisor.launch_command)
    launchers.run_environment = timed("run_environment", launchers.run_environment)
    processes.ForkServer.spawn = timed("ForkServer.spawn", processes.ForkServer.spawn)
    dispatcher.Dispatcher.run_once = timed("Dispatcher.run_once", dispatcher.Dispatcher.run_once)

    from headwater import app as hw_app

    original_api = hw_app.Runtime.api

    def api(self: Any) -> Any:
        asgi = original_api(self)

        async def traced(scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") != "http":
                await asgi(scope, receive, send)
                return
            kind = "http " + scope.get("method", "") + " " + _route(scope.get("path", ""))
            t0 = time.time()
            p0 = time.perf_counter()
            try:
                await asgi(scope, receive, send)
            finally:
                with _lock:
                    RECORDS.append((kind, "event-loop", t0, time.perf_counter() - p0))

        return traced

    hw_app.Runtime.api = api


def _route(path: str) -> str:
    parts = path.split("/")
    out = []
    for p in parts:
        out.append("{id}" if len(p) >= 32 and p.count("-") == 4 else p)
    return "/".join(out)


def dump(path: str) -> None:
    with _lock:
        rows = list(RECORDS)
    with open(path, "w") as f:
        json.dump({"records": rows}, f)


def main() -> None:
    out = sys.argv[1]
    patch()
    atexit.register(dump, out)
    sys.argv = ["headwater", *sys.argv[2:]]
    from headwater.cli.main import app

    app()


if __name__ == "__main__":
    main()
