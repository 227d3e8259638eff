"""API key scopes: what each may do."""

from __future__ import annotations

from headwater.core.access import Action, Scope, allows


def test_scopes_allow_what_the_api_promises() -> None:
    assert all(allows(Scope.ADMIN, a) for a in Action)
    assert allows(Scope.TRIGGER, Action.TRIGGER) and not allows(Scope.TRIGGER, Action.ADMIN)
    assert not allows(Scope.TRIGGER, Action.READ_RUNS)
    assert allows(Scope.TRIGGER, Action.READ_RUNS, owns=True)
    assert not allows(Scope.TRIGGER, Action.READ, owns=True)  # variables, members, files
    assert allows(Scope.READ, Action.READ) and allows(Scope.READ, Action.READ_RUNS)
    assert not allows(Scope.READ, Action.TRIGGER)
    assert not allows(Scope.READ, Action.ADMIN)
    assert all(allows(s, Action.SEE_JOBS) for s in Scope)


def test_a_worker_key_reads_runs_their_code_and_environment_and_nothing_else() -> None:
    worker = {Action.SEE_JOBS, Action.READ_RUNS, Action.DOWNLOAD_PACKAGES}
    worker.add(Action.READ_RUN_ENVIRONMENT)
    assert {a for a in Action if allows(Scope.WORKER, a)} == worker
    # variables listing, members, package listings: a worker needs none of them
    assert not allows(Scope.WORKER, Action.READ)
    assert not allows(Scope.WORKER, Action.TRIGGER) and not allows(Scope.WORKER, Action.ADMIN)


def test_only_worker_and_admin_keys_read_packages_and_run_environments() -> None:
    """The configuration package holds secrets.toml; a run's environment, secrets in clear."""
    for action in (Action.DOWNLOAD_PACKAGES, Action.READ_RUN_ENVIRONMENT):
        assert {s for s in Scope if allows(s, action, owns=True)} == {Scope.WORKER, Scope.ADMIN}
