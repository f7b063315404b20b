"""Chimeway's Procrastinate tasks, bound to one :class:`~chimeway.engine.context.Engine`.

A Blueprint is built per engine (Procrastinate binds a blueprint's tasks to the App they are
added to). Work tasks are sync: they run in the worker's threads and use the engine's
connection pool. Every task is idempotent: Procrastinate finishes a job in a separate
transaction, so a crash can run one twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import procrastinate

from chimeway import logs
from chimeway.engine import deliver, maintenance, retention, signals, webhooks
from chimeway.engine.context import Engine
from chimeway.engine.progression import progress_timer
from chimeway.store.jobs import QUEUES

# Infrastructure errors (database gone mid-task) are retried by Procrastinate; provider
# failures are not errors here, they are recorded attempts with their own retry ladder.
INFRA_RETRY = procrastinate.RetryStrategy(max_attempts=10, exponential_wait=2)

logger = logging.getLogger(__name__)


@contextmanager
def reported(task: str, **ids: str) -> Iterator[None]:
    """A job that raises is logged at WARNING, then raised for Procrastinate to retry: its
    own line for that is at INFO, where the worker's logs leave it out with every other
    job's (chimeway/logs.py). The line names the error (:func:`chimeway.logs.error_fields`)
    and the job's ids; ``--log-level DEBUG`` brings Procrastinate's own, traceback and all."""
    try:
        yield
    except Exception as exc:
        logger.warning(
            "a %s job failed; Procrastinate runs it again (up to its retry limit)",
            task,
            extra={"action": "job.failed", "task": task, **ids, **logs.error_fields(exc)},
        )
        raise


def build_blueprint(engine: Engine) -> procrastinate.Blueprint:
    blueprint = procrastinate.Blueprint()
    settings = engine.settings.maintenance

    @blueprint.task(name="deliver", queue=QUEUES["deliver"], retry=INFRA_RETRY)
    def deliver_one(delivery_id: str) -> str:
        with reported("deliver", delivery_id=delivery_id):
            return deliver.deliver(engine, uuid.UUID(delivery_id), chain=True).action

    @blueprint.task(name="deliver_many", queue=QUEUES["deliver_many"], retry=INFRA_RETRY)
    def deliver_many(delivery_ids: list[str]) -> dict[str, int]:
        with reported("deliver_many", deliveries=str(len(delivery_ids))):
            results = deliver.deliver_many(engine, [uuid.UUID(d) for d in delivery_ids])
        return dict(Counter(r.action for r in results))

    @blueprint.task(name="progress", queue=QUEUES["progress"], retry=INFRA_RETRY)
    def progress(run_id: str) -> str:
        with reported("progress", run_id=run_id):
            return type(progress_timer(engine, uuid.UUID(run_id))).__name__

    @blueprint.task(name="route_signal", queue=QUEUES["route_signal"], retry=INFRA_RETRY)
    def route_signal(signal_id: str) -> int:
        with reported("route_signal", signal_id=signal_id):
            return len(signals.route_pending_now(engine, uuid.UUID(signal_id)))

    @blueprint.task(name="process_webhook", queue=QUEUES["process_webhook"], retry=INFRA_RETRY)
    def process_webhook(ingress_id: str) -> str:
        with reported("process_webhook", ingress_id=ingress_id):
            return webhooks.process_ingress_now(engine, uuid.UUID(ingress_id)).outcome

    @blueprint.periodic(cron=settings.sweep_cron)
    @blueprint.task(
        name="sweep", queue=QUEUES["sweep"], queueing_lock="chimeway:sweep", pass_context=False
    )
    def sweep(timestamp: int) -> str:
        with reported("sweep"):
            return str(maintenance.sweep(engine))

    def prune(timestamp: int) -> str:
        with reported("prune"):
            return str(retention.prune(engine))

    prune_cron = engine.settings.retention.cron
    prune_task = blueprint.task(
        name="prune", queue=QUEUES["prune"], queueing_lock="chimeway:prune", pass_context=False
    )(prune)
    if prune_cron is not None:
        blueprint.periodic(cron=prune_cron)(prune_task)

    @blueprint.periodic(cron=settings.stalled_cron)
    @blueprint.task(
        name="retry_stalled_jobs",
        queue=QUEUES["retry_stalled_jobs"],
        queueing_lock="chimeway:retry_stalled_jobs",
        pass_context=True,
    )
    async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> int:
        return len(await maintenance.retry_stalled_jobs(context.app, settings.stalled_after))

    return blueprint
