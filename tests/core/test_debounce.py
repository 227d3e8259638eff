"""Debounced triggering (debounced-trigger.md R1-R9), on a fake clock: the acceptance cases
T1-T4, T8 and T9 and the invariants under any sequence of triggers."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.debounce import Action, DebounceState, landed, signal, start, tick

MIN = 60.0
INTERVAL = 30 * MIN


@dataclass
class Sim:
    """A job's debouncer driven like the server drives it; fires land `land_after` later."""

    interval: float = INTERVAL
    land_after: float = 0.0
    state: DebounceState = field(default_factory=DebounceState)
    fires: list[float] = field(default_factory=list)
    landing: float | None = None

    def _apply(self, step_action: Action, now: float) -> None:
        if step_action is Action.FIRE:
            self.fires.append(now)
            self.landing = now + self.land_after

    def advance(self, until: float) -> None:
        """Let time pass to `until`: fires land and scheduled fires happen, in order."""
        while True:
            events = [t for t in (self.landing, self.state.due) if t is not None and t <= until]
            if not events:
                return
            now = min(events)
            if self.landing is not None and self.landing <= now:
                self.landing = None
                step = landed(self.state, now, self.interval)
            else:
                step = tick(self.state, now)
            self.state = step.state
            self._apply(step.action, now)

    def start(self, now: float, on_start: bool = True) -> None:
        """The server starts at `now` (a restart: nothing ran while it was down)."""
        step = start(self.state, now, self.interval, on_start)
        self.state = step.state
        self._apply(step.action, now)

    def signal(self, now: float) -> Action:
        self.advance(now)
        step = signal(self.state, now, self.interval)
        self.state = step.state
        self._apply(step.action, now)
        return step.action


def test_t1_start_fires_once_at_once() -> None:
    sim = Sim()
    sim.start(0)
    sim.advance(10 * 24 * 60 * MIN)
    assert sim.fires == [0]


def test_t2_signals_inside_an_interval_coalesce_into_one_fire_at_its_end() -> None:
    sim = Sim()
    sim.start(0)
    for at in (1, 5, 20):
        sim.signal(at * MIN)
    sim.advance(120 * MIN)
    assert sim.fires == [0, 30 * MIN]


def test_t3_a_late_signal_waits_for_the_interval_a_later_one_fires_at_once() -> None:
    sim = Sim()
    sim.start(0)
    for at in (1, 5, 20):
        sim.signal(at * MIN)
    sim.signal(45 * MIN)
    sim.advance(99 * MIN)
    assert sim.fires == [0, 30 * MIN, 60 * MIN]
    assert sim.signal(100 * MIN) is Action.FIRE
    assert sim.fires[-1] == 100 * MIN


def test_t4_no_signal_no_fire_after_the_start() -> None:
    sim = Sim()
    sim.start(0)
    sim.advance(1000 * MIN)
    assert sim.fires == [0]


def test_t8_a_signal_during_a_slow_fire_queues_one_follow_up() -> None:
    sim = Sim(interval=0, land_after=5)
    sim.start(0)
    for at in (1, 2, 3, 4):
        assert sim.signal(at) is Action.COALESCE
    sim.advance(100)
    # never two at once; exactly one follow-up for the four signals
    assert sim.fires == [0, 5]


def test_t8_with_an_interval_the_follow_up_waits_for_it() -> None:
    sim = Sim(land_after=5 * MIN)
    sim.start(0)
    sim.signal(1 * MIN)
    sim.advance(100 * MIN)
    assert sim.fires == [0, 30 * MIN]


def test_t9_a_pending_fire_survives_a_restart_and_happens_once() -> None:
    sim = Sim()
    sim.start(0)
    sim.signal(10 * MIN)  # scheduled at 30
    persisted = sim.state
    # crash at 15, start at 16 without trigger_on_start: the fire still happens at 30
    again = Sim(state=persisted)
    again.start(16 * MIN, on_start=False)
    again.advance(200 * MIN)
    assert again.fires == [30 * MIN]
    # with trigger_on_start it fires at 16, and that covers the pending one
    other = Sim(state=persisted)
    other.start(16 * MIN, on_start=True)
    other.advance(200 * MIN)
    assert other.fires == [16 * MIN]


def test_a_restart_after_the_pending_fire_was_due_fires_at_once() -> None:
    sim = Sim()
    sim.start(0)
    sim.signal(10 * MIN)
    again = Sim(state=sim.state)
    again.start(45 * MIN, on_start=False)
    assert again.fires == [45 * MIN]


def test_a_last_fire_in_the_future_counts_as_now() -> None:
    state = DebounceState(last_fire=500 * MIN, due=530 * MIN)
    step = start(state, 100 * MIN, INTERVAL, trigger_on_start=False)
    assert step.state.last_fire == 100 * MIN
    assert step.action is Action.SCHEDULE and step.at == 130 * MIN


@settings(max_examples=300, deadline=None)
@given(
    interval=st.sampled_from([0.0, 10.0, 30 * MIN]),
    land_after=st.floats(min_value=0, max_value=20 * MIN),
    gaps=st.lists(st.floats(min_value=0, max_value=90 * MIN), max_size=30),
)
def test_every_signal_is_covered_fires_never_overlap_and_keep_their_distance(
    interval: float, land_after: float, gaps: list[float]
) -> None:
    sim = Sim(interval=interval, land_after=land_after)
    sim.start(0)
    now = 0.0
    signals = []
    for gap in gaps:
        now += gap
        sim.signal(now)
        signals.append(now)
    sim.advance(now + 10 * interval + 100 * land_after + 1)
    fires = sim.fires
    # every signal is covered by a fire that began at or after it, or by the one in flight
    # (its follow-up comes after)
    for at in signals:
        assert any(f >= at for f in fires), (at, fires)
    for a, b in zip(fires, fires[1:], strict=False):
        assert b - a >= land_after - 1e-9  # never two in flight at once
        assert b - a >= interval - 1e-9  # at most one per interval after the first
