"""No process a run started outlives the run.

A job may start processes that leave its process group (`setsid`, a double-fork
daemon), which a signal to the group misses. So:

- a run's main process is a child subreaper (`become_subreaper`): what its
  descendants leave behind is handed to it, not to init, and stays in its tree;
- the process that parents the runs' main processes (the warm launcher, or the small
  parent of a run in a new interpreter) is a subreaper too: when a run's main process
  ends, what it left is handed to that parent, which kills and reaps it
  (`kill_strays`) before it reports the exit;
- the worker's SIGKILL (grace period over) kills the run's descendants, then its
  group (`kill_tree`);
- with `HEADWATER_RUN_CGROUPS=on`, where cgroup v2 is mounted and writable, each run also
  gets a cgroup of its own (`RunCgroups`), which the worker empties when the run ends,
  whatever became of the process tree, even if the launcher that parents runs died. Off by
  default: moving a process into a cgroup waits for the kernel (an RCU grace period), which
  doubled the time from trigger to a run's first line (bench/RESULTS.md).

psutil is imported only when there is something to look at: the warm launcher and
each run stay as light as they were.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
KILL_TIMEOUT_S = 2.0
"""How long a sweep waits for what it killed to die before it gives up for now."""
CGROUPS_ENV = "HEADWATER_RUN_CGROUPS"


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux `prctl`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _own_children() -> set[int] | None:
    """This (single-threaded) process's children, live or not yet reaped; None when the
    kernel does not list them (no CONFIG_PROC_CHILDREN)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except OSError:
        return None


def kill_strays(keep: Collection[int] = (), timeout: float = KILL_TIMEOUT_S) -> int:
    """SIGKILL and reap this subreaper's children that are not in `keep`, and all theirs.

    Called by the parent of runs when a run's main process has ended: its leftovers were
    handed to this process. `keep` holds the main processes of runs still going (their
    own leftovers stay in their trees). Answers how many processes it killed.
    """
    keep = set(keep)
    listed = _own_children()
    if listed is not None and not listed - keep:
        return 0  # the usual case: nothing left, and no /proc scan
    import psutil

    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        try:
            direct = [c for c in psutil.Process().children() if c.pid not in keep]
        except psutil.Error:
            return len(killed)
        if not direct:
            return len(killed)
        victims = list(direct)
        for child in direct:
            with contextlib.suppress(psutil.Error):
                victims += child.children(recursive=True)
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
                    killed.add(proc.pid)
        # our children die and are reaped here; what they held is handed to us, and goes
        # in the next round
        psutil.wait_procs(direct, timeout=max(0.0, deadline - time.monotonic()))
        if time.monotonic() >= deadline:
            return len(killed)


def kill_tree(pid: int, *, group: bool = True, timeout: float = KILL_TIMEOUT_S) -> None:
    """SIGKILL a run: every descendant of its process `pid`, then (`group`) its process group.

    The run's main process is a subreaper, so while it lives every process the run
    started is in its tree, wherever `setsid` took it: killing the descendants before
    the main process leaves nothing to escape. Without `group`, `pid` itself is spared:
    the parent of a run in a new interpreter, which reaps what was killed, then ends as
    its job did.
    """
    import psutil

    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.Error):
        main = psutil.Process(pid)
        while time.monotonic() < deadline:
            live = []
            for proc in main.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        proc.kill()
                        live.append(proc)
            if not live:
                break
            time.sleep(0.002)  # SIGKILL lands asynchronously; look again
    if not group:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to signal process group %s", pid)


# -- cgroup v2 ---------------------------------------------------------------------------------


def _cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `.../unified` on a
    hybrid host)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split()[4])
    except OSError:
        pass
    return None


def _own_cgroup() -> str | None:
    """This process's cgroup v2 path (the `0::` line of /proc/self/cgroup)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def join_cgroup(path: str | None) -> bool:
    """Move this process into the cgroup at `path` (in a run's process, before its job)."""
    if not path:
        return False
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        return True
    except OSError:
        return False


class RunCgroups:
    """One cgroup per run, under a cgroup of this worker's workspace inside its own."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def detect(cls, workspace: Path, setting: str | None = None) -> RunCgroups | None:
        """Run cgroups when they are asked for (`setting`, else `HEADWATER_RUN_CGROUPS`:
        on/off, off by default), cgroup v2 is mounted and this process may make them."""
        wanted = setting if setting is not None else os.environ.get(CGROUPS_ENV, "off")
        if wanted.strip().lower() not in ("1", "on", "yes", "true", "auto"):
            return None
        mount, own = _cgroup2_mount(), _own_cgroup()
        if mount is None or own is None:
            return None
        digest = hashlib.sha256(str(workspace).encode()).hexdigest()[:12]
        base = mount / own.lstrip("/") / f"headwater-{digest}"
        try:
            base.mkdir(exist_ok=True)
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            writable = os.access(probe / "cgroup.procs", os.W_OK)
            probe.rmdir()
        except OSError:
            return None
        return cls(base) if writable else None

    def path(self, run_id: str) -> Path:
        return self.base / f"run-{run_id}"

    def create(self, run_id: str) -> str | None:
        path = self.path(run_id)
        try:
            path.mkdir(exist_ok=True)
        except OSError as ex:
            log.warning("no cgroup for run %s: %s", run_id, ex)
            return None
        return str(path)

    def kill(self, path: str, timeout: float = KILL_TIMEOUT_S) -> bool:
        """SIGKILL every process in the run's cgroup, wait until it is empty, remove it.

        Answers whether it is gone (else a later `sweep` removes it).
        """
        cg = Path(path)
        if not cg.exists():
            return True
        deadline = time.monotonic() + timeout
        try:
            (cg / "cgroup.kill").write_text("1")
        except OSError:
            _kill_listed(cg)  # before Linux 5.14: one by one
        while True:
            try:
                cg.rmdir()  # only an empty cgroup can be removed
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    log.warning("cgroup %s still holds processes after SIGKILL; left in place", cg)
                    return False
            _kill_listed(cg)
            time.sleep(0.002)

    def sweep(self, live: Collection[str] = ()) -> None:
        """Empty and remove the run cgroups of runs not in `live` (left by a crash)."""
        with contextlib.suppress(OSError):
            for cg in self.base.glob("run-*"):
                if cg.name[4:] not in live:
                    self.kill(str(cg), timeout=0.5)

    def close(self) -> None:
        self.sweep()
        with contextlib.suppress(OSError):
            self.base.rmdir()


def _kill_listed(cg: Path) -> None:
    try:
        pids = (cg / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)
