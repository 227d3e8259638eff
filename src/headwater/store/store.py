"""`Store`: the one handle callers hold on the database, composed of one part per concept.

Each part is a mixin over `StoreBase` (engine, read-only engine, notifier, events) in
its own module, with its statements named in `sql.py`:

- `workspaces`: the workspace row, archiving it
- `jobs`: manifest versions, deploying and reading jobs, pause/archive/publish
- `runs`: creating runs (trigger decisions), reads, guarded transitions, claims
- `combiner`: concurrent triggers recorded in one transaction per batch (sync and async)
- `logs`, `events` (with cursors and schedule cursors), `keys`, `idempotency`
- `debounce`: the debouncer of each job with a `run_interval`
- `watches`: the dbt Cloud runs the monitors drive
- `outbox`: automations' deliveries, and the last good headwater.toml they follow
- `attempts`: retries of runs
- `intervals`: runs covering intervals, refreshes, backfills, freshness waits, deadlines
- `metrics`: what `/metrics` reads at each scrape
- `views`: what the web pages read that the API does not
- `artifacts`: files runs leave for people (dbt's run_results.json, manifest.json)
- `workers`: remote workers, their heartbeats, and the leases of the runs they hold
- `leaders`: which server runs the engine when several share the database

Mixins rather than delegation: a call on `Store` is a plain method call, with no
forwarding layer on the trigger path (bench/RESULTS.md), and one part calls another's
method (`self.get_run`, `self._event`) as before.
"""

from __future__ import annotations

from sqlalchemy import Engine

from headwater.core.specs import JobSpec, LogLine, RunRequest, TriggerResult
from headwater.store import notify
from headwater.store.artifacts import Artifacts
from headwater.store.attempts import Attempts
from headwater.store.combiner import Combiner
from headwater.store.debounce import Debounces
from headwater.store.events import Events
from headwater.store.idempotency import Idempotency
from headwater.store.intervals import Intervals
from headwater.store.jobs import DeployedJob, Jobs
from headwater.store.keys import AmbiguousKeyError, Keys
from headwater.store.leaders import Leaders
from headwater.store.logs import Logs
from headwater.store.metrics import Metrics
from headwater.store.outbox import Outbox
from headwater.store.views import Views
from headwater.store.watches import Watches
from headwater.store.workers import Workers
from headwater.store.workspaces import Workspaces

# re-exported: callers outside the store import these names from here
__all__ = [
    "AmbiguousKeyError",
    "DeployedJob",
    "JobSpec",
    "LogLine",
    "RunRequest",
    "Store",
    "TriggerResult",
]


class Store(
    Workspaces,
    Jobs,
    Combiner,
    Logs,
    Events,
    Keys,
    Idempotency,
    Artifacts,
    Debounces,
    Watches,
    Outbox,
    Attempts,
    Intervals,
    Metrics,
    Views,
    Workers,
    Leaders,
):
    """The database as one handle: every part of the store on one engine and notifier."""

    def __init__(self, engine: Engine, notifier: notify.Notifier | None = None) -> None:
        self.engine = engine
        self.reader = engine.execution_options(readonly=True)
        self.notifier = notifier or notify.Notifier()
        self._init_jobs()
        self._init_combiner()
