"""Chimeway's Procrastinate tasks, bound to one :class:`~chimeway.app.Chimeway`.

A Blueprint is built per Chimeway instance (Procrastinate binds a blueprint's tasks to the
App they are added to). Work tasks are sync: they run in the worker's threads and use the
Chimeway's connection pool. Every task is idempotent: Procrastinate finishes a job in a
separate transaction, so a crash can run one twice.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING

import procrastinate

from chimeway import dispatch, maintenance, progression, signals, workflows
from chimeway.jobs.deferrer import QUEUES
from chimeway.results import Noop

if TYPE_CHECKING:
    from chimeway.app import Chimeway

# Infrastructure errors (database gone mid-task) are retried by Procrastinate; provider
# failures are not errors here, they are recorded attempts with their own retry ladder.
INFRA_RETRY = procrastinate.RetryStrategy(max_attempts=10, exponential_wait=2)


def build_blueprint(cw: Chimeway) -> procrastinate.Blueprint:
    blueprint = procrastinate.Blueprint()
    settings = cw.maintenance

    @blueprint.task(name="deliver", queue=QUEUES["deliver"], retry=INFRA_RETRY)
    def deliver(delivery_id: str) -> str:
        return dispatch.dispatch(cw, uuid.UUID(delivery_id)).action

    @blueprint.task(name="deliver_many", queue=QUEUES["deliver_many"], retry=INFRA_RETRY)
    def deliver_many(delivery_ids: list[str]) -> dict[str, int]:
        results = dispatch.dispatch_many(cw, [uuid.UUID(d) for d in delivery_ids])
        return dict(Counter(r.action for r in results))

    @blueprint.task(name="progress", queue=QUEUES["progress"], retry=INFRA_RETRY)
    def progress(run_id: str) -> str:
        result = progression.progress_timer(cw, uuid.UUID(run_id))
        if isinstance(result, Noop) and result.reason == "wait_not_due":
            _rearm_timer(cw, result.run_id)
        return type(result).__name__

    @blueprint.task(name="route_signal", queue=QUEUES["route_signal"], retry=INFRA_RETRY)
    def route_signal(signal_id: str) -> int:
        return len(signals.route_signal(cw, uuid.UUID(signal_id)).resumed)

    @blueprint.periodic(cron=settings.sweep_cron)
    @blueprint.task(
        name="sweep", queue=QUEUES["sweep"], queueing_lock="chimeway:sweep", pass_context=False
    )
    def sweep(timestamp: int) -> str:
        return str(maintenance.sweep(cw))

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


def _rearm_timer(cw: Chimeway, run_id: uuid.UUID) -> None:
    """The timer fired early (a newer wait, a clock skew): queue it again at the due time."""
    with cw.pool.connection() as conn, conn.transaction():
        run = workflows.get_run(conn, run_id)
        if run.suspended_until is not None:
            cw.jobs.progress(conn, run_id, schedule_at=run.suspended_until)
