"""Wake-ups across hosts: two notifiers, each with a `PgWakeBridge`, on the real PostgreSQL.

Each test listens on a channel of its own, so test sessions sharing the server never
wake each other. These tests fail, not skip, without PostgreSQL: nothing else tests it.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from headwater.store.db import make_engine, sqlite_url
from headwater.store.notify import (
    EVENTS,
    JOBS,
    KEYS,
    RUNS,
    TOPICS,
    Notifier,
    PgWakeBridge,
    WakeBridge,
)
from tests.store.conftest import _admin_dsn, require_postgres

pytestmark = pytest.mark.postgres
WAIT_S = 10.0
"""Longest a test waits for a wake-up it expects (they take milliseconds)."""


@pytest.fixture
def bridge() -> Iterator[Callable[[Notifier], PgWakeBridge]]:
    """Makes a bridge on this test's channel; every bridge made is closed at the end."""
    require_postgres(strict=True)
    channel = f"hw_wake_{uuid.uuid4().hex[:12]}"
    made: list[PgWakeBridge] = []

    def make(notifier: Notifier) -> PgWakeBridge:
        made.append(PgWakeBridge(notifier, _admin_dsn(), channel))
        return made[-1]

    yield make
    for b in made:
        b.close()


def woken(notifier: Notifier, topic: str, seen: int) -> bool:
    return notifier.wait(topic, seen, WAIT_S) != seen


def terminate(pid: int | None) -> None:
    assert pid is not None
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_notify_in_one_process_wakes_a_waiter_in_another(bridge) -> None:
    here, there = Notifier(), Notifier()
    bridge(here), bridge(there)
    seen = there.version(RUNS)
    here.notify(RUNS)
    assert woken(there, RUNS, seen)
    assert there.version(EVENTS) == 0  # only the topic sent


def test_own_notifications_are_not_echoed(bridge) -> None:
    here, there = Notifier(), Notifier()
    bridge(here), bridge(there)
    here.notify(RUNS)
    assert woken(there, RUNS, 0)
    # the answer is sent after `here`'s NOTIFY was delivered, so an echo of it would
    # reach `here` first: once the answer is in, no echo came
    there.notify(EVENTS)
    assert woken(here, EVENTS, 0)
    assert here.version(RUNS) == 1


def test_a_burst_of_notifications_is_sent_as_a_few_notifies(bridge) -> None:
    here, there = Notifier(), Notifier()
    sender = bridge(here)
    bridge(there)
    seen = there.version(KEYS)
    for i in range(10_000):
        here.notify(TOPICS[i % 3])
    here.notify(KEYS)
    assert woken(there, KEYS, seen)
    assert there.version(RUNS) >= 1
    assert sender.sent < 1000  # about ten, measured (bench/notify_pg.py)


def test_listener_reconnects_after_its_backend_is_terminated(bridge) -> None:
    here, there = Notifier(), Notifier()
    bridge(here)
    listener = bridge(there)
    first = listener.backend_pid
    seen = there.version(KEYS)
    terminate(first)
    # after a reconnect every topic is woken once: what was sent meanwhile is lost
    assert woken(there, KEYS, seen)
    assert listener.connects == 2
    assert listener.backend_pid not in (None, first)
    seen = there.version(RUNS)
    here.notify(RUNS)
    assert woken(there, RUNS, seen)


def test_listener_retries_until_postgresql_answers_again(bridge) -> None:
    here, there = Notifier(), Notifier()
    bridge(here)
    listener = bridge(there)
    reachable = listener.conninfo
    listener.conninfo = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens there
    connect = listener._connect
    refused = threading.Event()

    def connect_after_a_refusal() -> psycopg.Connection:
        try:
            return connect()
        except psycopg.OperationalError:
            listener.conninfo = reachable  # the next attempt, after a pause, succeeds
            refused.set()
            raise

    listener._connect = connect_after_a_refusal  # type: ignore[method-assign]
    seen = there.version(KEYS)
    terminate(listener.backend_pid)
    assert woken(there, KEYS, seen)
    assert refused.is_set()
    seen = there.version(EVENTS)
    here.notify(EVENTS)
    assert woken(there, EVENTS, seen)


def test_sender_delivers_after_its_backend_is_terminated(bridge) -> None:
    here, there = Notifier(), Notifier()
    sender = bridge(here)
    bridge(there)
    terminate(sender.backend_pid)
    here.notify(JOBS)
    assert woken(there, JOBS, 0)


def test_close_stops_the_thread_and_the_connection(bridge) -> None:
    here, there = Notifier(), Notifier()
    b = bridge(here)
    bridge(there)
    b.close()
    assert not b.thread.is_alive()
    assert b.backend_pid is None
    assert here.bridges == ()
    here.notify(RUNS)  # no bridge left: local only, and no error
    b.close()  # twice is harmless


def test_one_notifier_carries_the_local_and_the_postgresql_bridge(bridge, tmp_path: Path) -> None:
    """A server process on PostgreSQL wakes its siblings over datagrams and other hosts
    over NOTIFY, from one notify."""
    here, other_host = Notifier(), Notifier()
    local = WakeBridge(here, tmp_path / "peers")
    # a sibling process on this machine, as the datagrams see it: its pid and its socket
    sibling_pid = 2**22 + 1
    (tmp_path / "peers" / str(sibling_pid)).touch()
    sibling = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sibling.bind(local._address(sibling_pid))
    sibling.settimeout(WAIT_S)
    try:
        bridge(here)
        bridge(other_host)
        here.notify(RUNS)
        assert woken(other_host, RUNS, 0)
        assert sibling.recv(65536) == b'{"topics": ["runs"]}'
    finally:
        local.close()
        sibling.close()


def test_no_postgresql_bridge_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "headwater.db"))
    assert PgWakeBridge.for_engine(Notifier(), engine) is None
