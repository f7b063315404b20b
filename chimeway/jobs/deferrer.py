"""Defer Chimeway's jobs by name on an explicit connection.

Inside a worker the Procrastinate App is opened async, and a sync ``.defer`` through it fails;
so deferring goes through a second App built on a ``SyncPsycopgConnector`` that is never
opened and only ever writes through the connection it is given (design §2).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import procrastinate
import psycopg
from procrastinate.exceptions import AlreadyEnqueued

from chimeway import db

NAMESPACE = "chimeway"
QUEUES = {
    "deliver": "chimeway_delivery",
    "progress": "chimeway_progress",
    "route_signal": "chimeway_signals",
    "sweep": "chimeway_maintenance",
    "retry_stalled_jobs": "chimeway_maintenance",
}
TASKS = {name: f"{NAMESPACE}:{name}" for name in QUEUES}
# Timers and signal routing go ahead of a delivery backlog (Procrastinate fetches by
# priority, then id): a wait due now must not queue behind thousands of sends.
AHEAD = 1


def deliver_lock(delivery_id: uuid.UUID) -> str:
    return f"chimeway:deliver:{delivery_id}"


def progress_lock(run_id: uuid.UUID) -> str:
    return f"chimeway:progress:{run_id}"


def _pull_earlier(
    conn: psycopg.Connection[Any], queueing_lock: str, schedule_at: dt.datetime | None
) -> None:
    conn.execute(
        db.query("job_pull_earlier"),
        {"queueing_lock": queueing_lock, "scheduled_at": schedule_at},
    )


class Deferrer:
    def __init__(self) -> None:
        # Never opened: with `connection=` it writes through the caller's connection only.
        self._app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())

    def _configure(self, task: str, conn: psycopg.Connection[Any], **options: Any) -> Any:
        return self._app.configure_task(TASKS[task], queue=QUEUES[task], connection=conn, **options)

    def deliver(
        self,
        conn: psycopg.Connection[Any],
        delivery_ids: Sequence[uuid.UUID],
        *,
        schedule_at: dt.datetime | None = None,
    ) -> list[int]:
        """One ``deliver`` job per delivery, in one round trip.

        Each job carries the queueing lock ``chimeway:deliver:<id>``: at most one job per
        delivery waits in the queue, so a sweep that re-drives a delivery whose job is still
        queued gets ``AlreadyEnqueued`` instead of a second job.
        """
        if not delivery_ids:
            return []
        deferrer = self._configure("deliver", conn, schedule_at=schedule_at)
        jobs = [
            deferrer.make_new_job(delivery_id=str(d)).evolve(queueing_lock=deliver_lock(d))
            for d in delivery_ids
        ]
        deferred = self._app.job_manager.batch_defer_jobs(jobs=jobs, connection=conn)
        return [job.id for job in deferred if job.id is not None]

    def deliver_if_not_queued(
        self,
        conn: psycopg.Connection[Any],
        delivery_id: uuid.UUID,
        *,
        schedule_at: dt.datetime | None = None,
    ) -> bool:
        """Defer a ``deliver`` job unless one is queued already, in which case that one is
        pulled forward to ``schedule_at`` if it was later. A savepoint keeps the caller's
        transaction alive either way. True when a new job was deferred."""
        try:
            with conn.transaction():
                self.deliver(conn, [delivery_id], schedule_at=schedule_at)
        except AlreadyEnqueued:
            _pull_earlier(conn, deliver_lock(delivery_id), schedule_at)
            return False
        return True

    def progress(
        self, conn: psycopg.Connection[Any], run_id: uuid.UUID, *, schedule_at: dt.datetime
    ) -> int | None:
        """A timer for a waiting run; at most one waits per run (queueing lock).

        The defer runs in a savepoint: a duplicate (``AlreadyEnqueued``) must not abort the
        caller's transaction; the timer already queued does the same work.
        """
        try:
            with conn.transaction():
                job_id: int = self._configure(
                    "progress",
                    conn,
                    schedule_at=schedule_at,
                    queueing_lock=progress_lock(run_id),
                    priority=AHEAD,
                ).defer(run_id=str(run_id))
                return job_id
        except AlreadyEnqueued:
            # A timer is already queued for this run: make sure it fires no later than this.
            _pull_earlier(conn, progress_lock(run_id), schedule_at)
            return None

    def progress_many(
        self, conn: psycopg.Connection[Any], runs: Sequence[tuple[uuid.UUID, dt.datetime]]
    ) -> list[int]:
        """Timers for runs known to have none queued, in one round trip."""
        if not runs:
            return []
        template = self._configure("progress", conn, priority=AHEAD)
        jobs = [
            template.make_new_job(run_id=str(run_id)).evolve(
                queueing_lock=progress_lock(run_id), scheduled_at=due_at
            )
            for run_id, due_at in runs
        ]
        deferred = self._app.job_manager.batch_defer_jobs(jobs=jobs, connection=conn)
        return [job.id for job in deferred if job.id is not None]

    def route_signal(self, conn: psycopg.Connection[Any], signal_id: uuid.UUID) -> int:
        job_id: int = self._configure("route_signal", conn, priority=AHEAD).defer(
            signal_id=str(signal_id)
        )
        return job_id
