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
