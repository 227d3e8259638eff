"""A run in a new interpreter: `python -m headwater.worker.runner FD`.

FD holds the run's request as JSON (`launcher`, `argv`, `cgroup`): the launcher's
arguments (the entry point, with every run parameter) never go on a command line,
where they would hit the kernel's argument size limit and show in `ps`.

This process stays as the run's parent: it forks the process that runs dlt's
launcher, waits for it, kills and reaps whatever the job left behind, and exits
as the launcher did (the same code, or the same signal).
"""

from __future__ import annotations

import os
import resource
import signal
import sys

from headwater.worker import strays
from headwater.worker.forkserver import read_request, run_launcher

GROUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(fd: int) -> None:
    req = read_request(fd)
    strays.become_subreaper()
    # a signal to the run's process group is for the job: this process outlives it
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        for sig in GROUP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any interpreter
        # the job's cgroup, not this process's: a kill of the cgroup leaves it to reap
        strays.join_cgroup(req.get("cgroup"))
        strays.become_subreaper()
        # a normal interpreter exit: dlt's atexit handlers deliver what its telemetry holds
        sys.exit(run_launcher(req["launcher"], req["argv"]))
    _pid, status = os.waitpid(pid, 0)
    strays.kill_strays()
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        # end as the job did, without a core file of this process
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main(int(sys.argv[1]))
