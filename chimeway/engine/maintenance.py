"""Periodic maintenance: small units Procrastinate schedules (deduplicated across workers),
each also callable once, from tests or from ``chimeway sweep``.

* :func:`sweep` finds from the rows the work whose job was lost: due waits, due deferred
  deliveries, and deliveries stuck before a send.
* :func:`retry_stalled_jobs` puts back the jobs of workers that died mid-job (detected by
  Procrastinate's heartbeats).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued

from chimeway.engine import logbook
from chimeway.engine.context import Engine
from chimeway.engine.progression import progress_due_runs
from chimeway.results import SweepReport
from chimeway.store import deliveries, runs

logger = logging.getLogger(__name__)


def sweep(
    engine: Engine, now: dt.datetime | None = None, report: Callable[[str], None] | None = None
) -> SweepReport:
    say = report or (lambda _msg: None)
    settings = engine.settings.maintenance
    say("sweeping due waits")
    progressed = progress_due_runs(engine, now)
    say(f"{len(progressed)} due run(s) progressed; arming timers of waits due soon")
    armed = arm_timers(engine)
    say(f"{armed} timer(s) armed; resuming due deferred deliveries")
    resumed = 0
    while True:
        with logbook.held(), engine.pool.connection() as conn, conn.transaction():
            ids = deliveries.resume_deferred(conn, settings.batch_size)
            try:
                with conn.transaction():
                    engine.deferrer.deliver(conn, ids)
            except AlreadyEnqueued:  # a lone one's job is queued already: pulled forward
                for delivery_id in ids:
                    engine.deferrer.deliver_if_not_queued(conn, delivery_id)
        resumed += len(ids)
        if len(ids) < settings.batch_size:
            break
    say(f"{resumed} deferred delivery(ies) resumed; re-driving stuck deliveries")
    with engine.pool.connection() as conn, conn.transaction():
        stuck = deliveries.stuck(
            conn,
            pending_after=settings.redrive_after,
            dispatched_after=engine.settings.stuck_after,
            limit=settings.batch_size,
        )
        redriven = sum(engine.deferrer.deliver_if_not_queued(conn, d) for d in stuck)
    result = SweepReport(len(progressed), resumed, redriven, armed)
    if result.runs_progressed or result.deferred_resumed or result.deliveries_redriven:
        logger.info(
            "sweep found lost work",
            extra={
                "action": "maintenance.sweep",
                "runs_progressed": result.runs_progressed,
                "deferred_resumed": result.deferred_resumed,
                "deliveries_redriven": result.deliveries_redriven,
            },
        )
    return result


def arm_timers(engine: Engine) -> int:
    """Defer the timer job of every wait that comes due within the horizon and has none."""
    settings = engine.settings.maintenance
    armed = 0
    while True:
        with engine.pool.connection() as conn, conn.transaction():
            due = runs.to_arm(conn, settings.timer_horizon, settings.batch_size)
            # Another sweeper may have armed some meanwhile: timers() copes.
            engine.deferrer.timers(conn, [(d.id, d.suspended_until) for d in due])
        armed += len(due)
        if len(due) < settings.batch_size:
            return armed


async def retry_stalled_jobs(app: procrastinate.App, stalled_after: dt.timedelta) -> list[int]:
    """Put the ``doing`` jobs of dead workers back to ``todo``; their tasks are idempotent."""
    stalled = await app.job_manager.get_stalled_jobs(
        seconds_since_heartbeat=stalled_after.total_seconds()
    )
    retried = []
    for job in stalled:
        await app.job_manager.retry_job(job)
        assert job.id is not None
        retried.append(job.id)
    if retried:
        logger.warning(
            "retried jobs of dead workers",
            extra={"action": "maintenance.stalled_jobs_retried", "job_ids": retried},
        )
    return retried
