"""Procrastinate's job table as Chimeway writes and reads it: the deferrer and queue reads.

Jobs carry ids only (design §1.1), and every defer goes through the caller's connection,
inside the caller's transaction (§1.2), so a state change and the job that must follow it
commit or roll back together. Every defer is built in the database, through
Procrastinate's own ``procrastinate_defer_jobs_v1``, in one round trip (a sync ``.defer``
through the App fails inside a worker, where the App is opened async).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.manager import QUEUEING_LOCK_CONSTRAINT

from chimeway import db
from chimeway.db import Conn

NAMESPACE = "chimeway"
QUEUES = {
    "deliver": "chimeway_delivery",
    "deliver_many": "chimeway_delivery",
    "progress": "chimeway_progress",
    "route_signal": "chimeway_signals",
    # Provider feedback resumes and redirects runs like a signal does.
    "process_webhook": "chimeway_signals",
    "sweep": "chimeway_maintenance",
    "retry_stalled_jobs": "chimeway_maintenance",
    "prune": "chimeway_maintenance",
}
TASKS = {name: f"{NAMESPACE}:{name}" for name in QUEUES}
# Timers and signal routing go ahead of a delivery backlog (Procrastinate fetches by
# priority, then id): a wait due now must not queue behind thousands of sends.
AHEAD = 1


DELIVER_LOCK = "chimeway:deliver:"
PROGRESS_LOCK = "chimeway:progress:"
WEBHOOK_LOCK = "chimeway:webhook:"
ROUTE_LOCK = "chimeway:route_signal:"


def deliver_lock(delivery_id: uuid.UUID) -> str:
    return f"{DELIVER_LOCK}{delivery_id}"


def progress_lock(run_id: uuid.UUID) -> str:
    return f"{PROGRESS_LOCK}{run_id}"


def _pull_earlier(conn: Conn, queueing_lock: str, schedule_at: dt.datetime | None) -> None:
    conn.execute(
        db.query("job_pull_earlier"),
        {"queueing_lock": queueing_lock, "scheduled_at": schedule_at},
    )


@dataclass(frozen=True)
class JobSpec:
    """How a statement that plans deliveries defers their jobs itself (``delivery_plan``):
    the queue, the tasks, the queueing-lock prefix of lone deliveries, how many deliveries
    share a ``deliver_many`` job (1: a ``deliver`` job each), and whether to defer at all."""

    queue: str
    task_one: str
    task_many: str
    lock_prefix: str
    chunk: int
    defer: bool = True


NO_JOBS = JobSpec("", "", "", "", 1, defer=False)


class Deferrer:
    def __init__(self, delivery_batch_size: int = 1) -> None:
        self.delivery_batch_size = delivery_batch_size

    def deliver(
        self,
        conn: Conn,
        delivery_ids: Sequence[uuid.UUID],
        *,
        schedule_at: dt.datetime | None = None,
    ) -> list[int]:
        """Jobs that send these deliveries, in one round trip.

        Planned together (a fan-out, runs advancing together), they share ``deliver_many``
        jobs of up to ``delivery_batch_size`` ids each, so the queue's cost per job is paid
        once per chunk. Alone (or with a batch size of 1), a delivery gets a ``deliver`` job
        with the queueing lock ``chimeway:deliver:<id>``: at most one such job per delivery
        waits in the queue, so a sweep that re-drives a delivery whose job is still queued
        gets ``AlreadyEnqueued`` instead of a second job (the sweep also skips deliveries a
        queued chunk holds). A delivery sent twice is still sent once: the claim is guarded.
        """
        if len(delivery_ids) > 1 and self.delivery_batch_size > 1:
            return _defer_chunks(
                conn, delivery_ids, chunk=self.delivery_batch_size, scheduled_at=schedule_at
            )
        return _defer_per_id(
            conn,
            "deliver",
            arg="delivery_id",
            lock_prefix=DELIVER_LOCK,
            ids=delivery_ids,
            scheduled_at=[schedule_at] * len(delivery_ids),
        )

    def plan_spec(self, count: int) -> JobSpec:
        """How the plan statement defers the jobs of ``count`` deliveries planned together,
        the way :meth:`deliver` would."""
        return JobSpec(
            queue=QUEUES["deliver"],
            task_one=TASKS["deliver"],
            task_many=TASKS["deliver_many"],
            lock_prefix=DELIVER_LOCK,
            chunk=self.delivery_batch_size if count > 1 else 1,
        )

    def deliver_if_not_queued(
        self,
        conn: Conn,
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

    def progress(self, conn: Conn, run_id: uuid.UUID, *, schedule_at: dt.datetime) -> int | None:
        """A timer for a waiting run; at most one waits per run (queueing lock).

        The defer runs in a savepoint: a duplicate (``AlreadyEnqueued``) must not abort the
        caller's transaction; the timer already queued does the same work.
        """
        try:
            with conn.transaction():
                return self.progress_many(conn, [(run_id, schedule_at)])[0]
        except AlreadyEnqueued:
            # A timer is already queued for this run: make sure it fires no later than this.
            _pull_earlier(conn, progress_lock(run_id), schedule_at)
            return None

    def timers(self, conn: Conn, runs: Sequence[tuple[uuid.UUID, dt.datetime]]) -> None:
        """A timer for each run, in one round trip when none is queued yet; otherwise run by
        run, pulling a queued one earlier where needed (:meth:`progress`). Savepoints keep
        the caller's transaction alive either way."""
        if not runs:
            return
        try:
            with conn.transaction():
                self.progress_many(conn, runs)
        except AlreadyEnqueued:
            for run_id, due_at in runs:
                self.progress(conn, run_id, schedule_at=due_at)

    def progress_many(self, conn: Conn, runs: Sequence[tuple[uuid.UUID, dt.datetime]]) -> list[int]:
        """Timers for runs known to have none queued, in one round trip."""
        return _defer_per_id(
            conn,
            "progress",
            arg="run_id",
            lock_prefix=PROGRESS_LOCK,
            ids=[run_id for run_id, _ in runs],
            scheduled_at=[due_at for _, due_at in runs],
            priority=AHEAD,
        )

    def route_signals(self, conn: Conn, signal_ids: Sequence[uuid.UUID]) -> list[int]:
        """A ``route_signal`` job per new signal, in one round trip."""
        return _defer_per_id(
            conn,
            "route_signal",
            arg="signal_id",
            lock_prefix=ROUTE_LOCK,
            ids=signal_ids,
            scheduled_at=[None] * len(signal_ids),
            priority=AHEAD,
        )


def _defer_per_id(
    conn: Conn,
    task: str,
    *,
    arg: str,
    lock_prefix: str,
    ids: Sequence[uuid.UUID],
    scheduled_at: Sequence[dt.datetime | None],
    priority: int = 0,
) -> list[int]:
    """One ``task`` job per id with a queueing lock each, built in the database in one
    round trip (a fan-out of 10,000 deliveries spent a quarter of its time dumping job rows
    client-side). A queued job holding one of the locks raises ``AlreadyEnqueued``, as
    Procrastinate's own defer does, and the whole batch is not deferred."""
    if not ids:
        return []
    try:
        rows = conn.execute(
            db.query("jobs_defer_per_id"),
            {
                "queue": QUEUES[task],
                "task": TASKS[task],
                "priority": priority,
                "lock_prefix": lock_prefix,
                "arg": arg,
                "ids": list(ids),
                "scheduled_at": list(scheduled_at),
            },
        ).fetchall()
    except psycopg.errors.UniqueViolation as exc:
        raise already_enqueued(exc, task) from exc
    return [row[0] for row in rows]


def already_enqueued(exc: psycopg.errors.UniqueViolation, task: str) -> Exception:
    """What a unique violation raised by a defer means: ``AlreadyEnqueued`` when a queued
    job holds the queueing lock (as Procrastinate's own defer says), else the violation."""
    if exc.diag.constraint_name == QUEUEING_LOCK_CONSTRAINT:
        return AlreadyEnqueued(f"a {TASKS[task]} job is already queued for one of these ids")
    return exc


def _defer_chunks(
    conn: Conn,
    delivery_ids: Sequence[uuid.UUID],
    *,
    chunk: int,
    scheduled_at: dt.datetime | None,
) -> list[int]:
    """``deliver_many`` jobs of up to ``chunk`` deliveries each, built in the database."""
    rows = conn.execute(
        db.query("jobs_defer_chunks"),
        {
            "queue": QUEUES["deliver_many"],
            "task": TASKS["deliver_many"],
            "priority": 0,
            "arg": "delivery_ids",
            "ids": list(delivery_ids),
            "chunk": chunk,
            "scheduled_at": scheduled_at,
        },
    ).fetchall()
    return [row[0] for row in rows]


def due_count(conn: Conn, queues: Sequence[str]) -> int:
    """How many jobs in ``queues`` are due now."""
    row = conn.execute(db.query("jobs_due_count"), {"queues": list(queues)}).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class FailingJob:
    id: int
    task_name: str
    status: str


def failing(conn: Conn, queues: Sequence[str]) -> list[FailingJob]:
    """Jobs whose task raised: failed for good, or waiting for a retry after an error."""
    with conn.cursor(row_factory=db.dataclass_row(FailingJob)) as cur:
        return cur.execute(db.query("jobs_failing_list"), {"queues": list(queues)}).fetchall()


@dataclass(frozen=True)
class QueuedJob:
    id: int
    task_name: str
    args: dict[str, Any]


def lock_due(conn: Conn, queues: Sequence[str]) -> list[QueuedJob]:
    """The due jobs of ``queues``, in the order a worker takes them, locked in ``conn``."""
    with conn.cursor(row_factory=db.dataclass_row(QueuedJob)) as cur:
        return cur.execute(db.query("jobs_due_lock"), {"queues": list(queues)}).fetchall()


def delete(conn: Conn, job_id: int) -> None:
    """Remove a job (what the worker does with a finished one, ``delete_jobs="successful"``)."""
    conn.execute(db.query("job_delete"), {"id": job_id})


def delete_queued(conn: Conn, queueing_locks: Sequence[str]) -> int:
    """Remove the jobs with these queueing locks that no worker has taken yet; how many."""
    if not queueing_locks:
        return 0
    cur = conn.execute(db.query("jobs_queued_delete"), {"locks": list(queueing_locks)})
    return cur.rowcount


def take_deliver(conn: Conn, limit: int) -> list[uuid.UUID]:
    """Delete up to ``limit`` due ``deliver`` jobs no worker has taken, oldest first (the
    fetch's order), skipping locked ones; their deliveries' ids, for the caller to claim in
    the same transaction."""
    if limit < 1:
        return []
    rows = conn.execute(
        db.query("jobs_deliver_take"),
        {"queue": QUEUES["deliver"], "task": TASKS["deliver"], "limit": limit},
    ).fetchall()
    return [row[0] for row in rows]


@dataclass(frozen=True)
class Subject:
    """The tenant and event of a row a job names (``event_id`` ``None`` for a signal)."""

    kind: str
    id: uuid.UUID
    tenant_id: str
    event_id: uuid.UUID | None


def subjects(
    conn: Conn,
    *,
    delivery_ids: Sequence[uuid.UUID] = (),
    run_ids: Sequence[uuid.UUID] = (),
    signal_ids: Sequence[uuid.UUID] = (),
    ingress_ids: Sequence[uuid.UUID] = (),
    event_ids: Sequence[uuid.UUID] = (),
) -> list[Subject]:
    """Who each of these rows belongs to; missing ones are left out."""
    with conn.cursor(row_factory=db.dataclass_row(Subject)) as cur:
        return cur.execute(
            db.query("job_subjects"),
            {
                "delivery_ids": list(delivery_ids),
                "run_ids": list(run_ids),
                "signal_ids": list(signal_ids),
                "ingress_ids": list(ingress_ids),
                "event_ids": list(event_ids),
            },
        ).fetchall()
