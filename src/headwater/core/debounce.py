"""Debounced triggering of a job with a `run_interval` (rules R1-R9 of
`debounced-trigger.md`): after a fire, at most one more per interval, and every trigger
covered by a fire at or after it.

Pure: a state and the time in, the next state and what to do out. Times are seconds on
one clock the caller picks (the store persists wall time; the timer that waits for a
scheduled fire holds it on the monotonic clock, so a wall-clock jump never moves it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


def fire_key(fire_count: int) -> str:
    """The dedupe key of a job's fire N's run: a fire done again after a crash makes one run."""
    return f"debounce:{fire_count}"


class Action(StrEnum):
    FIRE = "fire"
    """Fire now: create the run (the fire is in flight until the run has started)."""
    SCHEDULE = "schedule"
    """A fire is scheduled at `Step.at`; this trigger is folded into it."""
    COALESCE = "coalesce"
    """Folded into the fire already scheduled, or into the follow-up of the one in flight."""
    WAIT = "wait"
    """Nothing to do now."""


@dataclass(frozen=True)
class DebounceState:
    last_fire: float | None = None
    """When the last fire began (R3: set before anything else of the fire happens)."""
    due: float | None = None
    """When the scheduled fire happens; None: none scheduled."""
    in_flight: bool = False
    """The last fire's run has not started yet: fires of one job never overlap."""
    follow_up: bool = False
    """A trigger came while a fire was in flight: one more fire once it has landed (R2a, R9)."""


@dataclass(frozen=True)
class Step:
    state: DebounceState
    action: Action
    at: float | None = None
    """For SCHEDULE and COALESCE: when the fire that covers the trigger is due, if known."""


def _fire(state: DebounceState, now: float) -> Step:
    return Step(
        replace(state, last_fire=now, due=None, in_flight=True, follow_up=False), Action.FIRE
    )


def signal(state: DebounceState, now: float, interval: float) -> Step:
    """A trigger of the job (R2): coalesce, fire now, or schedule at last fire + interval."""
    if state.due is not None:
        return Step(state, Action.COALESCE, state.due)
    if state.in_flight:
        return Step(replace(state, follow_up=True), Action.COALESCE)
    if state.last_fire is None or now - state.last_fire >= interval:
        return _fire(state, now)
    at = state.last_fire + interval
    return Step(replace(state, due=at), Action.SCHEDULE, at)


def tick(state: DebounceState, now: float) -> Step:
    """The timer: fire the scheduled fire once it is due (after the one in flight)."""
    if state.due is None or now < state.due:
        return Step(state, Action.WAIT, state.due)
    if state.in_flight:
        # R3: never two fires at once; the scheduled one follows the one in flight
        return Step(replace(state, due=None, follow_up=True), Action.WAIT)
    return _fire(state, now)


def landed(state: DebounceState, now: float, interval: float) -> Step:
    """The fire in flight has landed (its run started, or ended without starting): a
    follow-up queued meanwhile is handled as a trigger arriving now."""
    if not state.in_flight:
        return Step(state, Action.WAIT, state.due)
    settled = replace(state, in_flight=False, follow_up=False)
    if state.follow_up:
        return signal(settled, now, interval)
    return Step(settled, Action.WAIT, settled.due)


def start(state: DebounceState, now: float, interval: float, trigger_on_start: bool) -> Step:
    """The server starts (R1, R6). A last fire in the future means the clock went back: it
    counts as now. With `trigger_on_start`, fire at once (it covers what was pending);
    else a pending fire happens at last fire + interval, or now if that has passed."""
    if state.last_fire is not None and state.last_fire > now:
        state = replace(state, last_fire=now)
    if state.in_flight:
        return Step(state, Action.WAIT, state.due)
    if trigger_on_start:
        return _fire(state, now)
    if state.due is not None:
        base = state.last_fire if state.last_fire is not None else now
        due = max(now, base + interval)
        return (
            tick(replace(state, due=due), now)
            if due <= now
            else Step(replace(state, due=due), Action.SCHEDULE, due)
        )
    return Step(state, Action.WAIT)
