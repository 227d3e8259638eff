"""Jobs the integration tests drive through a real `headwater up`."""

import os
import sys
import time

import dlt
import dlt.hub.run as run


@run.job(expose={"tags": ["grp"]})
def ok():
    print("ok ran")


@run.job
def boom():
    print("about to fail")
    raise RuntimeError("boom failed on purpose")


@run.job(trigger=[ok.success])
def after_ok(run_context: run.TJobRunContext):
    print(f"after_ok triggered by {run_context['trigger']}")


@run.job(trigger=[boom.fail])
def after_boom_fail():
    print("after_boom_fail ran")


@run.job(trigger=[boom.success])
def after_boom_success():
    print("after_boom_success must never run")


@run.job(execute={"intercept_signals": False})
def slow(seconds: float = dlt.config.value):
    print("slow started", flush=True)
    time.sleep(float(seconds))
    print("slow finished")


@run.job(execute={"timeout": {"timeout": 1, "grace_period": 1}})
def stubborn():
    # dlt intercepts the first SIGTERM (a graceful-stop flag) and the job sleeps on:
    # only the SIGKILL after the grace period ends it
    print("stubborn started", flush=True)
    time.sleep(30)


@run.pipeline("shared_pipe", name="pipe_a")
def pipe_a():
    print(f"pipe_a start {time.time():.3f}", flush=True)
    time.sleep(1.0)
    print(f"pipe_a end {time.time():.3f}", flush=True)


@run.pipeline("shared_pipe", name="pipe_b")
def pipe_b():
    print(f"pipe_b start {time.time():.3f}", flush=True)
    time.sleep(1.0)
    print(f"pipe_b end {time.time():.3f}", flush=True)


@run.job(expose={"tags": ["nightly"]})
def tagged_one():
    print("tagged_one ran")


@run.job(expose={"tags": ["nightly"]})
def tagged_two():
    print("tagged_two ran")


@run.job
def greet(greeting: str = dlt.config.value):
    print(f"greeting={greeting}")
    print("to stderr", file=sys.stderr)


@run.job
def where():
    print(f"data_dir={os.environ.get('DLT_DATA_DIR')}")
    print(f"profile={os.environ.get('WORKSPACE__PROFILE')}")


# a schedule that fires on New Year's midnight only: a job the tests can pause
@run.job(trigger=run.trigger.schedule("0 0 1 1 *"))
def yearly():
    print("yearly ran")


__all__ = [
    "ok",
    "boom",
    "after_ok",
    "after_boom_fail",
    "after_boom_success",
    "slow",
    "stubborn",
    "pipe_a",
    "pipe_b",
    "tagged_one",
    "tagged_two",
    "greet",
    "where",
    "yearly",
]
