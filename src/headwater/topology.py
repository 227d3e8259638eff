"""Process topology of `headwater up`: which process runs the API and which runs the engine.

The engine (the worker, the scheduler and the event dispatcher) runs either in the
process that serves the API or, with `separate_worker`, in a worker process forked at
start, so the API and the runs' supervision each have a core (and an interpreter lock)
of their own. With `api_processes` > 1 (which implies `separate_worker`) that many
processes answer the API on one listening socket. The processes tell each other what
changed over a `WakeBridge` (named commands, handled where they are registered). On
PostgreSQL each process also listens for wake-ups from other hosts (`PgWakeBridge`).

This is wiring, not a component: `app.py` decides what runs; this module decides where,
forks, and stops what it forked. No component imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from headwater.store.notify import Notifier, PgWakeBridge, WakeBridge

log = logging.getLogger(__name__)

WORKER_NICE = 10
"""Default scheduling priority of the worker process and its runs, below the API's."""
WORKER_STOP_S = 15.0
"""How long the worker process may take to stop its loops before it is killed."""

Handler = Callable[[dict[str, Any]], None]


class Topology:
    """The processes of one server, from the one `headwater up` started.

    `start_engine`/`stop_engine` start and stop the worker, scheduler and dispatcher in
    whichever process runs them. `api_commands` are the bridge commands every API process
    handles, `worker_commands` those the worker process handles.
    """

    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        home: Path,
        *,
        start_engine: Callable[[], None],
        stop_engine: Callable[[], None],
        separate_worker: bool = False,
        worker_nice: int = WORKER_NICE,
        api_processes: int = 1,
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.peers_dir = home / "peers"
        self.start_engine = start_engine
        self.stop_engine = stop_engine
        self.api_processes = max(1, api_processes)
        self.separate_worker = separate_worker or self.api_processes > 1
        self.worker_nice = worker_nice
        self.is_api_copy = False
        """True in an API process forked by `start` (not the one that started the server)."""
        self.bridge: WakeBridge | None = None
        self.pg_bridge: PgWakeBridge | None = None
        """This process's wake-ups to and from other hosts, on PostgreSQL (after `start`)."""
        self._api_pids: list[int] = []
        self._worker_pid: int | None = None
        self._worker_watch: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, api_commands: dict[str, Handler], worker_commands: dict[str, Handler]) -> bool:
        """Fork the processes and start the engine where it runs; True in a forked API
        process. Called before this process starts any thread: a thread's lock would stay
        held in a forked child."""
        if not self.separate_worker:
            self.pg_bridge = PgWakeBridge.for_engine(self.notifier, self.engine)
            self.start_engine()
            return False
        for _ in range(self.api_processes - 1):
            if self._fork_api_process(api_commands):
                return True
        self._fork_worker_process(worker_commands)
        self.bridge = self._bridge(api_commands)
        self.pg_bridge = PgWakeBridge.for_engine(self.notifier, self.engine)
        return False

    def command(self, name: str, **args: Any) -> bool:
        """Send a command to the server's other processes; False when there are none."""
        if self.bridge is None:
            return False
        self.bridge.command(name, **args)
        return True

    def _bridge(self, commands: dict[str, Handler]) -> WakeBridge:
        bridge = WakeBridge(self.notifier, self.peers_dir)
        for name, handler in commands.items():
            bridge.on(name, handler)
        return bridge

    def _fork_api_process(self, commands: dict[str, Handler]) -> bool:
        """Fork one more API process; True in the child."""
        pid = os.fork()
        if pid:
            self._api_pids.append(pid)
            return False
        self.is_api_copy = True
        self._api_pids = []
        die_with_parent()
        self.engine.dispose(close=False)  # the parent's connections stay the parent's
        # it follows what another API process learns (a remote deploy or a reload answered there)
        self.bridge = self._bridge(commands)
        # each process listens itself: a wake-up from another host reaches this one at once,
        # not relayed by a sibling that may be busy
        self.pg_bridge = PgWakeBridge.for_engine(self.notifier, self.engine)
        return True

    def _fork_worker_process(self, commands: dict[str, Handler]) -> None:
        """Fork the worker process; called before this process starts any thread."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self._worker_process_main(parent, commands)
            except BaseException:
                log.exception("worker process failed")
                code = 1
            finally:
                os._exit(code)
        self._worker_pid = pid
        self._worker_watch = threading.Thread(
            target=self._watch_worker_process, name="worker-watch", daemon=True
        )
        self._worker_watch.start()

    def _worker_process_main(self, parent: int, commands: dict[str, Handler]) -> None:
        stop = threading.Event()
        # Ctrl-C reaches the whole process group: the parent decides when this one stops
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        die_with_parent()
        # the runs this process starts inherit this: under a burst of triggers the API
        # keeps answering and runs queue, instead of the API waiting on the runs' CPU
        os.nice(self.worker_nice)
        # connections are the parent's: this process opens its own
        self.engine.dispose(close=False)
        bridge = self._bridge(commands)
        pg_bridge = PgWakeBridge.for_engine(self.notifier, self.engine)
        self.start_engine()
        # as the API process does (cli `_serve`): full collections stay short, so this
        # process never holds the write lock through a long pause. Done here, not before the
        # fork: shared pages would then be copied one refcount at a time, under load
        gc.collect()
        gc.freeze()
        while not stop.wait(1.0):
            if os.getppid() != parent:
                break
        self.stop_engine()
        bridge.close()
        if pg_bridge is not None:
            pg_bridge.close()

    def _watch_worker_process(self) -> None:
        assert self._worker_pid is not None
        _pid, status = os.waitpid(self._worker_pid, 0)
        if self._stopping.is_set():
            return
        log.error(
            "the worker process ended unexpectedly (%s); stopping the server",
            os.waitstatus_to_exitcode(status),
        )
        os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        """Stop the engine and the processes this one forked (in a forked API process: its
        bridges only)."""
        self._stopping.set()
        if self.is_api_copy:
            self._close_bridges()
            return
        stop_children(self._api_pids, WORKER_STOP_S)
        if self._worker_pid is not None and self._worker_watch is not None:
            # SIGTERM, then SIGKILL if it has not ended in time; the watcher reaps it
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self._worker_watch.is_alive():
                    with contextlib.suppress(ProcessLookupError):  # reaped meanwhile
                        os.kill(self._worker_pid, sig)
                    self._worker_watch.join(WORKER_STOP_S)
        elif not self.separate_worker:
            self.stop_engine()
        self._close_bridges()

    def _close_bridges(self) -> None:
        for bridge in (self.bridge, self.pg_bridge):
            if bridge is not None:
                bridge.close()


def stop_children(pids: list[int], grace_s: float) -> None:
    """SIGTERM the processes, reap them, and SIGKILL those still there after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = set(pids)
    while left:
        for pid in list(left):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left and time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        if left:
            time.sleep(0.05)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a kill -9 of `up`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent-pid check in the worker process's loop remains
