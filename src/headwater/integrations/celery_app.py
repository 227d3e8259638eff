"""The Celery app that carries runs from the server to remote workers.

A message is only a pointer: `headwater.run(run_id, attempt)` on the queue of the run's
pool. The store stays the truth (`store/workers.py`): the worker takes the attempt with a
guarded update, so a message delivered twice starts one run, and a message lost is sent
again when the run's dispatch lease runs out.

Acknowledgement, on purpose: early (`task_acks_late=False`), one message per slot
(`worker_prefetch_multiplier=1`, thread pool of `slots`). A task lasts as long as its run,
hours maybe; acked late, RabbitMQ would take the unacked delivery back after its
`consumer_timeout` (30 min by default) and close the channel, and Redis would deliver it
again after its `visibility_timeout`. Acked on receipt, the broker is done with it at once;
what a late ack would protect (a worker dying mid-run) the run's lease protects instead, in
the store, where the run's outcome is decided.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

RUN_TASK = "headwater.run"


def make_app(broker: str) -> Celery:
    app = Celery("headwater", broker=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="default",
        # a queue per pool, made when a worker or the server first names it
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # the server's publish must not hang the dispatcher on a broker that is down: the
        # run keeps its dispatch lease and is sent again when it runs out
        broker_connection_timeout=5,
        broker_transport_options={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        # heartbeats of AMQP: a frozen worker's connection is dropped by the broker
        broker_heartbeat=30,
    )
    return app


def send_run(app: Celery, run_id: str, attempt: int, pool: str) -> None:
    """Publish one run's dispatch on its pool's queue (raises when the broker refuses)."""
    app.send_task(RUN_TASK, args=[run_id, attempt], queue=pool, retry=False)


def register_runner(app: Celery, run: Callable[[str, int], Any]) -> None:
    """The worker's side: `run(run_id, attempt)` executes one dispatched run to its end."""

    @app.task(name=RUN_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def _run(run_id: str, attempt: int) -> None:
        run(run_id, int(attempt))
