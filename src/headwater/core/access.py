"""Who may do what: API key scopes and the actions they allow. Pure."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "read"  # sees everything, changes nothing
    TRIGGER = "trigger"  # triggers jobs and follows the runs it created
    ADMIN = "admin"  # everything: deploy, keys, variables, pause, cancel
    WORKER = "worker"  # a `headwater worker` on another host: runs, their code and environment


class Action(StrEnum):
    SEE_JOBS = "see_jobs"  # the workspace and its jobs: a trigger key must resolve refs
    READ_RUNS = "read_runs"  # runs and their logs: a trigger key reads the ones it created
    READ = "read"  # everything else there is to read: variables, members, package files
    TRIGGER = "trigger"
    ADMIN = "admin"
    DOWNLOAD_PACKAGES = "download_packages"  # the bytes of code and configuration packages
    READ_RUN_ENVIRONMENT = "read_run_environment"  # a run's variables, secrets in clear


WORKER_ACTIONS = frozenset(
    {Action.SEE_JOBS, Action.READ_RUNS, Action.DOWNLOAD_PACKAGES, Action.READ_RUN_ENVIRONMENT}
)
"""What a worker key may do: what running a run on another host needs, nothing more. The
configuration package holds secrets.toml and a run's environment the secret variables, so
no other key but an admin's may read them."""


def allows(scope: Scope, action: Action, *, owns: bool = False) -> bool:
    """Whether a key of `scope` may do `action`; `owns`: the run was created by this key."""
    if scope is Scope.ADMIN:
        return True
    if scope is Scope.WORKER:
        return action in WORKER_ACTIONS
    if action is Action.SEE_JOBS:
        return True
    if action is Action.READ_RUNS:
        return scope is Scope.READ or owns
    if action is Action.READ:
        return scope is Scope.READ
    if action is Action.TRIGGER:
        return scope is Scope.TRIGGER
    return False
