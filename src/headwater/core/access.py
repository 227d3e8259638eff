"""Who may do what: API key scopes and the actions they allow. Pure."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "read"  # sees everything, changes nothing
    TRIGGER = "trigger"  # triggers jobs and follows the runs it created
    ADMIN = "admin"  # everything: deploy, keys, variables, pause, cancel


class Action(StrEnum):
    SEE_JOBS = "see_jobs"  # the workspace and its jobs: a trigger key must resolve refs
    READ_RUNS = "read_runs"  # runs and their logs: a trigger key reads the ones it created
    READ = "read"  # everything else there is to read: variables, members, package files
    TRIGGER = "trigger"
    ADMIN = "admin"


def allows(scope: Scope, action: Action, *, owns: bool = False) -> bool:
    """Whether a key of `scope` may do `action`; `owns`: the run was created by this key."""
    if scope is Scope.ADMIN:
        return True
    if action is Action.SEE_JOBS:
        return True
    if action is Action.READ_RUNS:
        return scope is Scope.READ or owns
    if action is Action.READ:
        return scope is Scope.READ
    if action is Action.TRIGGER:
        return scope is Scope.TRIGGER
    return False
