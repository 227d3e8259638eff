"""The supervised loop the scheduler, the dispatcher and the worker run on."""

from __future__ import annotations

import threading

from headwater.loops import SupervisedLoop, TopicWake
from headwater.store.notify import Notifier


def test_a_loop_survives_a_failed_iteration_and_stops_on_request() -> None:
    calls: list[int] = []
    third = threading.Event()

    def step(now: int) -> float:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 3:
            third.set()
        return 0.001

    loop = SupervisedLoop(
        "test", step, lambda: 7, TopicWake(Notifier(), "jobs"), period=1.0, error_wait=0.001
    )
    loop.start()
    assert third.wait(5)
    loop.stop()
    assert loop.join(5)
    assert calls[:3] == [7, 7, 7]


def test_a_wake_up_runs_the_next_iteration_before_its_period() -> None:
    notifier = Notifier()
    calls: list[None] = []
    first, second = threading.Event(), threading.Event()

    def step(_now: None) -> None:
        calls.append(None)
        (second if first.is_set() else first).set()

    loop = SupervisedLoop("test", step, lambda: None, TopicWake(notifier, "jobs"), period=60.0)
    loop.start()
    assert first.wait(5)
    notifier.notify("jobs")
    assert second.wait(5)  # long before the 60 s period
    loop.stop()


def test_a_draining_loop_turns_after_stop_until_drained() -> None:
    left = [3]

    def step(_now: None) -> float:
        left[0] = max(0, left[0] - 1)
        return 0.001

    loop = SupervisedLoop(
        "test",
        step,
        lambda: None,
        TopicWake(Notifier(), "jobs"),
        period=1.0,
        drain=lambda: left[0] > 0,
    )
    loop.stop()  # stopped before it started: it still drains
    loop.start()
    assert loop.join(5)
    assert left == [0]
