"""Retention: the prune of finished work older than its age (:class:`~chimeway.Retention`).

What goes, kind by kind: finished Procrastinate jobs with their events, and the bookkeeping
rows of periodic tasks no longer deferred; events whose deliveries and runs are all finished
and untouched for the age, with everything under them; routed signals; webhook events no
longer queued; processes that stopped beating. A live run or delivery, and so its event, is
never removed.

Each kind goes in batches of ``batch_size`` rows, each batch a short transaction of its own
that locks only the rows it removes and skips those another transaction holds (``FOR UPDATE
SKIP LOCKED``): pruning never makes a worker wait. A dry run counts what would go, under the
same rules, and removes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict

from chimeway.db import Conn
from chimeway.engine.context import Engine
from chimeway.results import PruneReport
from chimeway.store import processes, retention

logger = logging.getLogger(__name__)

_Delete = Callable[[Conn, dt.timedelta, int], int]


def prune(
    engine: Engine, *, dry_run: bool = False, report: Callable[[str], None] | None = None
) -> PruneReport:
    """Remove (with ``dry_run``, count) everything older than its retention age."""
    say = report or (lambda _msg: None)
    rules = engine.settings.retention
    if dry_run:
        return _count(engine)
    say("pruning finished jobs and periodic-defer rows")
    jobs, job_events = _delete_jobs(engine, rules.jobs)
    defers = _batches(engine, rules.jobs, retention.delete_periodic_defers)
    say("pruning finished events with their notifications, deliveries and runs")
    events = _batches(engine, rules.history, retention.delete_events)
    say("pruning routed signals, processed webhook events and silent processes")
    result = PruneReport(
        dry_run=False,
        jobs=jobs,
        job_events=job_events,
        periodic_defers=defers,
        events=events,
        signals=_batches(engine, rules.signals, retention.delete_signals),
        webhooks=_batches(engine, rules.webhooks, retention.delete_webhooks),
        processes=_silent(engine, rules.processes),
    )
    if result.total:
        logger.info(
            "pruned old history",
            extra={"action": "maintenance.prune", **asdict(result)},
        )
    return result


def _count(engine: Engine) -> PruneReport:
    rules = engine.settings.retention

    def count(age: dt.timedelta | None, how: Callable[[Conn, dt.timedelta], int]) -> int:
        return 0 if age is None else how(conn, age)

    with engine.pool.connection() as conn, conn.transaction():
        jobs, job_events = (0, 0) if rules.jobs is None else retention.count_jobs(conn, rules.jobs)
        return PruneReport(
            dry_run=True,
            jobs=jobs,
            job_events=job_events,
            periodic_defers=count(rules.jobs, retention.count_periodic_defers),
            events=count(rules.history, retention.count_events),
            signals=count(rules.signals, retention.count_signals),
            webhooks=count(rules.webhooks, retention.count_webhooks),
            processes=count(rules.processes, retention.count_processes),
        )


def _delete_jobs(engine: Engine, age: dt.timedelta | None) -> tuple[int, int]:
    if age is None:
        return 0, 0
    limit = engine.settings.retention.batch_size
    jobs = events = 0
    while True:
        with engine.pool.connection() as conn, conn.transaction():
            batch, batch_events = retention.delete_jobs(conn, age, limit)
        jobs, events = jobs + batch, events + batch_events
        if batch < limit:
            return jobs, events


def _batches(engine: Engine, age: dt.timedelta | None, delete: _Delete) -> int:
    """Run ``delete`` batch by batch, each in its own transaction, until a batch comes back
    short (what is left is held by others, or newer): how many rows went."""
    if age is None:
        return 0
    limit = engine.settings.retention.batch_size
    removed = 0
    while True:
        with engine.pool.connection() as conn, conn.transaction():
            batch = delete(conn, age, limit)
        removed += batch
        if batch < limit:
            return removed


def _silent(engine: Engine, age: dt.timedelta | None) -> int:
    """Processes silent for ``age``: a handful of rows, removed in one statement."""
    if age is None:
        return 0
    with engine.pool.connection() as conn, conn.transaction():
        return processes.prune(conn, age)
