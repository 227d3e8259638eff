"""Wake-ups between the components that meet in the store.

A writer bumps a topic after its transaction commits; a loop waiting on that
topic wakes at once instead of polling. Waits always carry a timeout, so a
lost wake-up only costs latency, never a stuck loop. Between the processes
of one machine the topics ride Unix datagrams (`WakeBridge`); across machines
they ride PostgreSQL `LISTEN/NOTIFY` (`PgWakeBridge`). A notifier carries any number of
bridges: a server on PostgreSQL with several processes has both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine

log = logging.getLogger(__name__)
PEERS_REFRESH_S = 1.0
PG_CHANNEL = "headwater_wake"
"""The channel every Headwater process on one PostgreSQL database listens on."""
PG_KEEPALIVE_S = 30.0
"""How long the LISTEN connection may stay quiet before it is checked with a query."""
PG_RETRY_S = (0.1, 5.0)
"""First and longest wait between attempts to reconnect a lost LISTEN connection."""

RUNS = "runs"  # a run was created or became claimable
CANCELS = "cancels"  # a live run was asked to stop
EVENTS = "events"  # an event was appended
LOGS = "logs"  # log lines were appended or a run ended
JOBS = "jobs"  # jobs changed: deploy, pause, resume
KEYS = "keys"  # an API key was revoked
TOPICS = (RUNS, CANCELS, EVENTS, LOGS, JOBS, KEYS)


class _Topic:
    __slots__ = ("cond", "version")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0


class Bridge(Protocol):
    """Carries a notifier's topics to other processes (`WakeBridge`, `PgWakeBridge`)."""

    def send_topics(self, topics: tuple[str, ...]) -> None:
        """Pass `topics` on; never blocks on the other side, may drop them."""

    def close(self) -> None: ...


class Notifier:
    """One condition per topic: a log line wakes log followers, not the scheduler."""

    def __init__(self) -> None:
        self._topics = {t: _Topic() for t in TOPICS}
        self.bridges: tuple[Bridge, ...] = ()
        """Carry each notification to other Headwater processes. A tuple, replaced whole,
        so `notify` reads it without a lock while a bridge is added or closed."""

        self._bridges_lock = threading.Lock()

    def add_bridge(self, bridge: Bridge) -> None:
        with self._bridges_lock:
            self.bridges = (*self.bridges, bridge)

    def remove_bridge(self, bridge: Bridge) -> None:
        with self._bridges_lock:
            self.bridges = tuple(b for b in self.bridges if b is not bridge)

    def version(self, topic: str) -> int:
        return self._topics[topic].version

    def notify(self, *topics: str) -> None:
        self.notify_local(*topics)
        for bridge in self.bridges:
            bridge.send_topics(topics)

    def notify_local(self, *topics: str) -> None:
        for name in topics:
            topic = self._topics[name]
            with topic.cond:
                topic.version += 1
                topic.cond.notify_all()

    def wait(self, topic: str, seen: int, timeout: float) -> int:
        """Block until `topic` moves past `seen` or `timeout` passes; answers the version."""
        t = self._topics[topic]
        with t.cond:
            t.cond.wait_for(lambda: t.version != seen, timeout=timeout)
            return t.version


class WakeBridge:
    """Carries wake-ups and small commands to the other Headwater processes on this machine.

    Each process binds an abstract Unix datagram socket and lists its pid in
    `peers_dir`; `Notifier.notify` sends the topics to every peer, whose
    receiver thread notifies them locally. A datagram that cannot be sent is
    dropped: waits carry timeouts, so a lost wake-up costs latency only.
    """

    def __init__(self, notifier: Notifier, peers_dir: Path) -> None:
        self.notifier = notifier
        self.peers_dir = peers_dir
        peers_dir.mkdir(parents=True, exist_ok=True)
        # one namespace per server home, so two servers on one machine never meet
        self._ns = hashlib.sha1(str(peers_dir.resolve()).encode()).hexdigest()[:16]
        self.pid = os.getpid()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self._address(self.pid))
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        (peers_dir / str(self.pid)).touch()
        self._peers: list[int] = []
        self._peers_read = 0.0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._closed = False
        notifier.add_bridge(self)
        threading.Thread(target=self._receive_loop, name="wake-bridge", daemon=True).start()

    def _address(self, pid: int) -> str:
        return f"\0headwater-{self._ns}-{pid}"

    def on(self, command: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Run `handler(args)` in this process when a peer sends `command`."""
        self._handlers[command] = handler

    def command(self, command: str, **args: Any) -> None:
        self._send(json.dumps({"command": command, "args": args}).encode())

    def send_topics(self, topics: tuple[str, ...]) -> None:
        self._send(json.dumps({"topics": list(topics)}).encode())

    def _send(self, payload: bytes) -> None:
        for pid in self._peer_pids():
            try:
                self._out.sendto(payload, self._address(pid))
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(pid)
            except OSError:
                pass  # a full queue: the peer is busy and will poll

    def _peer_pids(self) -> list[int]:
        now = time.monotonic()
        if now - self._peers_read > PEERS_REFRESH_S:
            pids = []
            for entry in os.listdir(self.peers_dir):
                if entry.isdigit() and int(entry) != self.pid:
                    pids.append(int(entry))
            self._peers, self._peers_read = pids, now
        return self._peers

    def _forget(self, pid: int) -> None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            (self.peers_dir / str(pid)).unlink(missing_ok=True)
        except PermissionError:
            return
        self._peers_read = 0.0

    def _receive_loop(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if "topics" in message:
                self.notifier.notify_local(*[t for t in message["topics"] if t in TOPICS])
            handler = self._handlers.get(message.get("command", ""))
            if handler is not None:
                try:
                    handler(message.get("args") or {})
                except Exception:  # a bad command must not end the receiver
                    log.exception("wake bridge command %r failed", message.get("command"))

    def close(self) -> None:
        self._closed = True
        self.notifier.remove_bridge(self)
        (self.peers_dir / str(self.pid)).unlink(missing_ok=True)
        self._sock.close()
        self._out.close()


class PgWakeBridge:
    """Carries wake-ups to every Headwater process on one PostgreSQL database, on any host.

    One thread owns one autocommit connection that `LISTEN`s on `channel` and sends this
    process's topics with `pg_notify`. `send_topics` only adds them to a pending set and
    pokes the thread, so a burst of notifications becomes one `NOTIFY` per round trip
    (bench/notify_pg.py). Notifications sent by this connection come back to it; they are
    told apart by the sender's backend pid and skipped. A lost connection is reopened
    with a growing pause; wake-ups missed meanwhile only cost latency (waits carry
    timeouts), and after a reconnect every topic is woken once locally.

    Why not `NOTIFY` inside the writer's transaction (delivered at its commit): the store
    notifies after commit from many call sites that hold no connection by then, and one
    more statement in every trigger's transaction would cost the write path what
    coalescing here saves it.
    """

    def __init__(self, notifier: Notifier, conninfo: str, channel: str = PG_CHANNEL) -> None:
        self.notifier = notifier
        self.conninfo = conninfo
        self.channel = channel
        self.sent = 0
        """`NOTIFY`s sent so far (a burst of topics is sent as one)."""
        self.connects = 0
        """Connections opened so far: 1, plus one per reconnect."""
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._poke_r, self._poke_w = os.pipe()
        os.set_blocking(self._poke_r, False)
        os.set_blocking(self._poke_w, False)
        # connected and listening before the constructor returns: a notification sent by
        # another process after that reaches this one
        self._conn: psycopg.Connection[Any] | None = self._connect()
        notifier.add_bridge(self)
        self.thread = threading.Thread(target=self._loop, name="pg-wake-bridge", daemon=True)
        self.thread.start()

    @classmethod
    def for_engine(cls, notifier: Notifier, engine: Engine) -> PgWakeBridge | None:
        """A bridge on `engine`'s database when it is PostgreSQL; None on SQLite."""
        if engine.dialect.name != "postgresql":
            return None
        url = engine.url.set(drivername="postgresql")
        return cls(notifier, url.render_as_string(hide_password=False))

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend of the listening connection; None while reconnecting."""
        conn = self._conn
        return None if conn is None else conn.info.backend_pid

    def send_topics(self, topics: tuple[str, ...]) -> None:
        with self._lock:
            idle = not self._pending
            self._pending.update(topics)
        if idle and topics:
            self._poke()

    def close(self) -> None:
        """Stop the thread and close its connection; waits for it (a few ms)."""
        if self._closed:
            return
        self._closed = True
        self.notifier.remove_bridge(self)
        self._poke()
        if self.thread is not threading.current_thread():
            self.thread.join(10.0)
        if not self.thread.is_alive():
            os.close(self._poke_r)
            os.close(self._poke_w)

    def _poke(self) -> None:
        try:
            os.write(self._poke_w, b"!")
        except OSError:
            pass  # full: the thread has pokes to read already

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=10,
            application_name="headwater-wake",  # what an operator sees in pg_stat_activity
            # a host that vanished (no FIN, no RST) is noticed in about a minute
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        self.connects += 1
        return conn

    def _loop(self) -> None:
        import psycopg

        retry = PG_RETRY_S[0]
        while not self._closed:
            if self._conn is None:
                try:
                    self._conn = self._connect()
                except (psycopg.Error, OSError) as ex:
                    log.warning("cannot reach PostgreSQL for wake-ups (%s); retrying", ex)
                    self._pause(retry)
                    retry = min(retry * 2, PG_RETRY_S[1])
                    continue
                retry = PG_RETRY_S[0]
                log.info("PostgreSQL wake-ups reconnected")
                # what other hosts sent meanwhile is lost: every waiter looks again
                self.notifier.notify_local(*TOPICS)
            try:
                self._turn(self._conn)
            except (psycopg.Error, OSError, ValueError) as ex:
                if not self._closed:
                    log.warning("lost the PostgreSQL wake-up connection (%s)", ex)
                self._drop_connection()
        self._drop_connection()

    def _turn(self, conn: psycopg.Connection[Any]) -> None:
        """Wait for a notification, a poke or the keepalive; send what is pending, and
        wake this process's waiters for what other processes sent."""
        # topics left from a lost connection go out at once, without waiting for a poke
        wait = 0.0 if self._pending else PG_KEEPALIVE_S
        ready, _, _ = select.select([conn.fileno(), self._poke_r], [], [], wait)
        if self._poke_r in ready:
            self._drain_pokes()
        with self._lock:
            topics, self._pending = self._pending, set()
        if topics:
            try:
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, json.dumps(sorted(topics))))
            except BaseException:
                with self._lock:
                    self._pending |= topics  # sent after the reconnect
                raise
            self.sent += 1
        elif not ready and wait:
            conn.execute("SELECT 1")  # quiet for long: make sure the connection still works
        own = conn.info.backend_pid
        received: set[str] = set()
        # notifications that arrived with a query's answer wait in psycopg's backlog; this
        # yields those and whatever the socket holds, without blocking
        for note in conn.notifies(timeout=0):
            if note.pid != own:
                received.update(_topics_of(note.payload))
        if received:
            self.notifier.notify_local(*received)

    def _pause(self, seconds: float) -> None:
        """Sleep, or less if `close` pokes."""
        select.select([self._poke_r], [], [], seconds)
        self._drain_pokes()

    def _drain_pokes(self) -> None:
        try:
            while os.read(self._poke_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing to release
                pass


def _topics_of(payload: str) -> list[str]:
    try:
        topics = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(topics, list):
        return []
    return [t for t in topics if t in TOPICS]
