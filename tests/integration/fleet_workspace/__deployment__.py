"""Jobs the multi-host tests run on remote workers (`headwater worker`)."""

import os
import time

import dlt
import dlt.hub.run as run


def _marker(suffix: str) -> str:
    return os.path.join(os.environ["FLEET_MARKERS"], os.environ["RUNTIME__RUN_ID"] + suffix)


@run.job(execute={"concurrency": None})
def marked(seconds: str = dlt.config.value):
    """Leaves `<run id>.done` once per execution; `<run id>.double` if another execution of
    the same run was going at the same time."""
    try:
        os.close(os.open(_marker(".running"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        open(_marker(".double"), "a").close()
    print(f"marked started on {os.environ.get('FLEET_WORKER')}", flush=True)
    print(f"code from {os.path.dirname(os.path.abspath(__file__))}", flush=True)
    time.sleep(float(seconds))
    with open(_marker(".done"), "a") as f:
        f.write(f"{os.environ.get('FLEET_WORKER')} {os.getpid()}\n")
    os.unlink(_marker(".running"))
    print("marked finished", flush=True)


__all__ = ["marked"]
