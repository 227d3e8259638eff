"""Several servers on one PostgreSQL database, for availability: one runs the engine.

Every server answers the API (it is the database's); the engine (scheduler, interval
planner, event dispatcher, debouncer, dbt Cloud monitor, automations, run dispatch) runs
in the one server holding the `engine` leader lease, renewed three times per lease
period. The others try to take it at the same pace and start the engine the moment the
holder's lease runs out (it died, froze or lost the database). A holder that cannot
renew in time stops its server: it no longer knows that no other holds the lease, and a
process manager starts it again as a standby. So a schedule tick, a chain, a dbt Cloud
watch each has one owner at a time.

Wiring, like `topology`: `app.py` decides what the engine is, this module when it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from headwater.core import leases
from headwater.loops import SupervisedLoop, TimerWake
from headwater.store.store import Store

log = logging.getLogger(__name__)

ENGINE_LEASE = "engine"


class Leadership:
    def __init__(
        self,
        store: Store,
        *,
        on_acquired: Callable[[], None],
        lease_s: float = leases.LEASE_S,
        holder: str | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.on_acquired = on_acquired
        self.on_lost = on_lost or _stop_this_server
        self.lease_s = lease_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.leading = False
        self._renewed = 0.0
        self._loop = SupervisedLoop(
            "leadership",
            self.run_once,
            time.monotonic,
            TimerWake(),
            period=leases.heartbeat_every(lease_s),
            error_wait=1.0,
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        """Stop renewing (the engine still runs: stop it, then `release`)."""
        self._loop.stop()

    def release(self) -> None:
        """A clean stop hands the engine over at once, not a lease period later."""
        if self.leading:
            self.leading = False
            self.store.release_lease(ENGINE_LEASE, self.holder)

    def run_once(self, now: float) -> float:
        try:
            held: bool | None = self.store.hold_lease(ENGINE_LEASE, self.holder, self.lease_s)
        except Exception:
            held = None  # the database did not answer: the lease may still be ours
            log.exception("could not renew the engine lease")
        if held:
            self._renewed = now
            if not self.leading:
                self.leading = True
                log.info("this server (%s) runs the engine", self.holder)
                self.on_acquired()
        elif self.leading and (held is False or now - self._renewed > self.lease_s * 2 / 3):
            # another holds it, or may take it a third of a lease from now: stop first
            log.error("the engine lease was lost; stopping so that one server runs the engine")
            self.leading = False
            self.on_lost()
        return leases.heartbeat_every(self.lease_s)


def _stop_this_server() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
