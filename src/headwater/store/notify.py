"""Wake-ups between the components that meet in the store.

A writer bumps a topic after its transaction commits; a loop waiting on that
topic wakes at once instead of polling. Waits always carry a timeout, so a
lost wake-up only costs latency, never a stuck loop. Between the processes
of one machine the topics ride Unix datagrams (`WakeBridge`); across machines
they can ride PostgreSQL `LISTEN/NOTIFY`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PEERS_REFRESH_S = 1.0

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


class Notifier:
    """One condition per topic: a log line wakes log followers, not the scheduler."""

    def __init__(self) -> None:
        self._topics = {t: _Topic() for t in TOPICS}
        self.bridge: WakeBridge | None = None
        """Carries each notification to this machine's other Headwater processes, if set."""

    def version(self, topic: str) -> int:
        return self._topics[topic].version

    def notify(self, *topics: str) -> None:
        self.notify_local(*topics)
        if self.bridge is not None:
            self.bridge.send_topics(topics)

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
        notifier.bridge = self
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
        (self.peers_dir / str(self.pid)).unlink(missing_ok=True)
        self._sock.close()
        self._out.close()
