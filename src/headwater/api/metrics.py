"""`/metrics` in Prometheus' text format (prometheus-client).

Two sources in one scrape:
- the store, read at scrape time (`StoreCollector`): runs started and ended by job and
  outcome, run durations and schedule delays as histograms, queue depth and the age of
  the oldest pending run, active runs. The database is shared, so whichever process
  answers speaks for the whole server;
- instruments of the processes themselves: API latency by route, trigger rejections. With
  several API processes or a separate worker, `headwater up` points
  `PROMETHEUS_MULTIPROC_DIR` at a folder of the server, prometheus-client keeps each
  process's values there, and `MultiProcessCollector` sums them at scrape.

The API's port answers a read (or admin) key sent as a Bearer token (Prometheus'
`authorization` setting); `up --metrics-address HOST:PORT` also serves it without a key on
an address of its own (for a private network).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from headwater.core.states import TERMINAL, RunStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_registry = CollectorRegistry(auto_describe=True)
API_LATENCY = Histogram(
    "headwater_api_request_duration_seconds",
    "Time to answer an API request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    registry=_registry,
)
TRIGGER_REJECTIONS = Counter(
    "headwater_trigger_rejections_total",
    "Triggers asked over the API that made no run, by job and status (skipped_paused, ...).",
    ["job", "status"],
    registry=_registry,
)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class LatencyMiddleware:
    """ASGI middleware timing each request under its route template (never the raw path:
    ids would make a series per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            API_LATENCY.labels(path, scope.get("method", ""), str(status)).observe(
                time.perf_counter() - started
            )


class StoreCollector(Collector):
    """The server's runs, read from the store at each scrape."""

    def __init__(self, store: Any, ws_id: str) -> None:
        self.store = store
        self.ws_id = ws_id

    def collect(self) -> Iterator[Metric]:
        from headwater.store.metrics import DELAY_BUCKETS, DURATION_BUCKETS

        started = CounterMetricFamily(
            "headwater_runs_started", "Runs that started, by job.", labels=["job"]
        )
        ended = CounterMetricFamily(
            "headwater_runs_ended",
            "Runs that ended, by job and outcome (completed, failed, cancelled, skipped).",
            labels=["job", "outcome"],
        )
        active = GaugeMetricFamily(
            "headwater_active_runs", "Runs starting, running or cancelling, by job.", labels=["job"]
        )
        started_by_job: dict[str, int] = {}
        for row in self.store.run_counts(self.ws_id):
            started_by_job[row["job_ref"]] = started_by_job.get(row["job_ref"], 0) + row["started"]
            if RunStatus(row["status"]) in TERMINAL:
                ended.add_metric([row["job_ref"], row["status"]], row["n"])
        for job, n in started_by_job.items():
            started.add_metric([job], n)
        for row in self.store.live_counts(self.ws_id):
            active.add_metric([row["job_ref"]], row["n"])
        yield started
        yield ended
        yield active
        yield self._histogram(
            "headwater_run_duration_seconds",
            "Time from a run's start to its end, by job.",
            "duration",
            DURATION_BUCKETS,
        )
        yield self._histogram(
            "headwater_schedule_delay_seconds",
            "Time from a schedule's tick to the start of its run (lateness), by job.",
            "schedule_delay",
            DELAY_BUCKETS,
        )
        depth, oldest = self.store.queue(self.ws_id)
        yield GaugeMetricFamily("headwater_queue_depth", "Pending runs.", value=depth)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "headwater_oldest_pending_age_seconds",
            "How long the oldest pending run has waited (0: none waits).",
            value=max(0.0, age),
        )

    def _histogram(
        self, name: str, doc: str, what: str, bounds: tuple[float, ...]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=["job"])
        for row in self.store.histogram(self.ws_id, what, bounds):
            buckets = [(_le(b), float(row[f"le_{i}"] or 0)) for i, b in enumerate(bounds)]
            buckets.append(("+Inf", float(row["count"])))
            family.add_metric([row["job_ref"]], buckets, float(row["sum"] or 0.0))
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


def registry(store: Any, ws_id: str) -> CollectorRegistry:
    """What one scrape reads: the store, and every process's own instruments."""
    reg = CollectorRegistry()
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.MultiProcessCollector(reg)
    else:
        reg.register(API_LATENCY)
        reg.register(TRIGGER_REJECTIONS)
    reg.register(StoreCollector(store, ws_id))
    return reg


def render(store: Any, ws_id: str) -> bytes:
    return generate_latest(registry(store, ws_id))
