"""The transactions that progress runs: one run, a chunk's runs, a timer, the due sweep.

Each driver locks the runs (then their step deliveries: lock order run, then delivery),
reads the evidence the rules need, asks :mod:`.decide` what to do and has :mod:`.apply`
write it. :func:`progress_in` is the one seam through which a run moves in a caller's
transaction; re-entry is always a Noop, so concurrent or repeated calls never plan a second
delivery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from chimeway import logs, telemetry
from chimeway.db import Conn
from chimeway.engine import digests, logbook
from chimeway.engine.context import Engine
from chimeway.engine.progression import apply, decide
from chimeway.engine.progression.decide import Decision, ElapseWait
from chimeway.results import Advanced, Delivery, Noop, ProgressResult
from chimeway.store import clock, deliveries, jobs, runs, traces
from chimeway.store.deliveries import LatestAttempt, PlannedRow
from chimeway.store.runs import Run
from chimeway.types import DeliveryStatus, DigestState, RunState

logger = logging.getLogger(__name__)

#: How many other due waits a timer that fires takes along (one set-wise batch).
TAKE_ALONG = 200


@dataclass(frozen=True)
class Held:
    """What the caller already holds in this transaction, so it is not read again: the
    locked run, and the step delivery it just locked and moved, with its latest attempt."""

    run: Run
    delivery: Delivery | None = None
    attempt: LatestAttempt | None = None


def progress_run(
    engine: Engine, run_id: uuid.UUID, now: dt.datetime | None = None
) -> ProgressResult:
    """Evaluate one run in its own transaction."""
    with logbook.held(), engine.pool.connection() as conn, conn.transaction():
        return progress_in(engine, conn, run_id, now)


def progress_in(
    engine: Engine,
    conn: Conn,
    run_id: uuid.UUID,
    now: dt.datetime | None = None,
    held: Held | None = None,
) -> ProgressResult:
    """Evaluate one run in the caller's transaction (which may already hold its lock)."""
    run = held.run if held is not None else runs.lock_run(conn, run_id)
    if run is None:
        return Noop(run_id, "run_not_found")
    if run.state == RunState.WAITING:
        return _elapse(engine, conn, [run], now or clock.now(conn))[0]
    if run.state != RunState.ACTIVE:
        return Noop(run.id, "run_not_active")
    return apply.apply(engine, conn, [_decide_active(engine, conn, run, held)])[0]


def progress_recorded(engine: Engine, conn: Conn, held: Sequence[Held]) -> list[ProgressResult]:
    """Progress the runs whose step deliveries the caller just recorded, in its transaction
    (each run locked, then its delivery): every run is decided as :func:`progress_in`
    would, and the decisions are written set-wise, so a job that sent many deliveries moves
    their runs at the cost of a few statements. One result per run, in order."""
    with telemetry.span("chimeway.progress", runs=len(held), cause="recorded"):
        decisions: list[Decision] = []
        for h in held:
            if h.run.state == RunState.ACTIVE:
                decisions.append(_decide_active(engine, conn, h.run, h))
            else:  # waiting (a stale step's send) or finished: the one-run path decides
                decisions.append(progress_in(engine, conn, h.run.id, held=h))
        return apply.apply(engine, conn, decisions)


def progress_planned(
    engine: Engine, conn: Conn, rows: Sequence[PlannedRow]
) -> dict[uuid.UUID, ProgressResult]:
    """The runs whose step delivery planning just settled (suppressed it) are decided at
    once, in the caller's transaction: a step that will never be sent must not leave its run
    waiting for a send. Results by run id, for those runs only."""
    settled = [
        r.workflow_run_id for r in rows if r.workflow_run_id and DeliveryStatus(r.status).terminal
    ]
    if not settled:
        return {}
    with telemetry.span("chimeway.progress", runs=len(settled), cause="planned"):
        locked = runs.lock_runs(conn, settled)
        return apply.settle(engine, conn, locked, rows)


def progress_on_feedback(
    engine: Engine, conn: Conn, run: Run, delivery: Delivery, context: dict[str, Any]
) -> ProgressResult | None:
    """Provider feedback just moved ``delivery`` (locked after ``run``, also locked by the
    caller): decide the run again if it is still on that step. An active run is progressed
    as after a send; a waiting run whose rules now lead elsewhere (``OnOutcome("bounced")``)
    is reactivated with a transition carrying ``context`` and then decided. ``None`` when
    the run moved on or keeps waiting: the feedback is then recorded and explained only."""
    step = engine.catalog.current_step(conn, run)
    if delivery.workflow_step_id != step.id:
        return None
    attempt = deliveries.latest_attempt(conn, delivery.id)
    if run.state == RunState.ACTIVE:
        return progress_in(engine, conn, run.id, held=Held(run, delivery, attempt))
    if run.state != RunState.WAITING:
        return None
    steps = engine.catalog.steps(conn, run.definition_id)
    if not decide.wait_overturned(run, step, steps, delivery, attempt):
        return None
    [active] = runs.update_runs(conn, [decide.feedback_reactivation(run, delivery.id, context)])
    apply.log("run.reactivated_on_feedback", active, delivery_id=str(delivery.id))
    return apply.apply(engine, conn, [decide.active(active, step, steps, delivery, attempt)])[0]


def resume_on_signal(
    engine: Engine, conn: Conn, run: Run, event_name: str, delivery_id: uuid.UUID | None
) -> ProgressResult:
    """A signal the waiting ``run`` (locked by the caller) listens for arrived."""
    return apply.resume(engine, conn, run, event_name, delivery_id)


def _decide_active(engine: Engine, conn: Conn, run: Run, held: Held | None) -> Decision:
    """Read what the rules need about the active run, then decide."""
    step = engine.catalog.current_step(conn, run)
    steps = engine.catalog.steps(conn, run.definition_id)
    if decide.after_a_signal(run):
        return decide.after_signal(run, step, steps)
    delivery: Delivery | None
    attempt: LatestAttempt | None = None
    if held is not None and held.delivery is not None and held.delivery.workflow_step_id == step.id:
        delivery, attempt = held.delivery, held.attempt  # locked and moved by the caller
    else:
        delivery = deliveries.lock_step_delivery(conn, run.id, step.id)
    if delivery is not None and attempt is None and decide.converged(delivery):
        attempt = deliveries.latest_attempt(conn, delivery.id)
    return decide.active(run, step, steps, delivery, attempt)


def _elapse(
    engine: Engine,
    conn: Conn,
    locked: Sequence[Run],
    now: dt.datetime,
    *,
    timers_deleted: bool = False,
) -> list[ProgressResult]:
    """Waiting runs (locked by the caller) whose wait is due move to the step the wait
    leads to, set-wise: a timer passes one run, the due sweep a batch. A run collecting a
    batch (design §15) is due when its window ended or the batch filled up: the batch is
    closed (locked after the runs) and its digest rendered here, for the step to send.
    ``timers_deleted``: the caller took the runs with their timer jobs (the due sweep)."""
    batches = digests.lock_for(conn, [run for run in locked if decide.in_batch(run)])
    decisions: list[Decision] = [
        decide.waiting(
            run,
            engine.catalog.current_step(conn, run),
            engine.catalog.steps(conn, run.definition_id),
            now,
            batch_closed=run.id in batches and batches[run.id].state == DigestState.CLOSED,
        )
        for run in locked
    ]
    due = [
        (d.run, batches[d.run.id])
        for d in decisions
        if isinstance(d, ElapseWait) and d.batch and d.run.id in batches
    ]
    closed = digests.close(engine, conn, due, now)
    decisions = [_with_digest(d, closed) for d in decisions]
    if len(locked) > 1 and not timers_deleted:
        # Taken along by a timer or the sweep: their own timers, still queued, would only
        # find them moved on (and, set ahead of deliveries, delay the sends just planned).
        # Removed before the moves, which may queue new ones under the same locks.
        jobs.delete_queued(
            conn, [jobs.progress_lock(d.run.id) for d in decisions if isinstance(d, ElapseWait)]
        )
    return apply.apply(engine, conn, decisions)


def _with_digest(decision: Decision, closed: dict[uuid.UUID, digests.Closed]) -> Decision:
    if not isinstance(decision, ElapseWait) or not decision.batch:
        return decision
    digest = closed.get(decision.run.id)
    if digest is None:
        return Noop(decision.run.id, "batch_not_found")
    return dataclasses.replace(
        decision,
        render_data=digest.render_data,
        digest_id=digest.digest_id,
        details=digest.details,
    )


def start_batches(engine: Engine, conn: Conn, opened: Sequence[Opened]) -> list[Run]:
    """Runs that just opened a batch (created by the caller's trigger) wait on their first
    step until it closes, with a timer at that instant (beyond the timer horizon, the
    sweep arms it later)."""
    if not opened:
        return []
    locked = runs.lock_runs(conn, [o.run_id for o in opened])
    waiting = runs.update_runs(
        conn,
        [
            decide.batch_open(locked[o.run_id], o.digest_id, o.closes_at, **o.details)
            for o in opened
        ],
    )
    horizon = clock.now(conn) + engine.settings.maintenance.timer_horizon
    engine.deferrer.timers(
        conn, [(o.run_id, o.closes_at) for o in opened if o.closes_at <= horizon]
    )
    for run, o in zip(waiting, opened, strict=True):
        apply.log("run.batch_opened", run, digest_id=str(o.digest_id))
    return waiting


@dataclass(frozen=True)
class Opened:
    """A run that opened batch ``digest_id``, closing at ``closes_at``; ``details`` go in
    its status context (what closing it needs: notifier, channel, policy facts)."""

    run_id: uuid.UUID
    digest_id: uuid.UUID
    closes_at: dt.datetime
    details: dict[str, Any]


def progress_timer(
    engine: Engine, run_id: uuid.UUID, now: dt.datetime | None = None
) -> ProgressResult:
    """What a ``progress`` job does: fire every wait due by now (up to :data:`TAKE_ALONG`,
    its own among them), set-wise in one transaction as the due sweep does, then its own run
    alone if that batch did not take it (not due yet, or another transaction holds it). Waits
    fall due in bursts (a fan-out's runs all waited the same delay); one transaction per
    timer job would queue them behind each other, and the first of them moving its own run
    before taking the others along made those others late by that transaction (traced at
    ``bench.timers --rate 1000``: the runs fired late were those a burst's first timer jobs
    moved one by one). Their own timers, when they run, find their runs moved on. A timer
    that fired early (a newer wait, a clock skew) is queued again at the due time."""
    parent = None
    if telemetry.tracing():  # the timer continues the trace of the run's trigger
        with engine.pool.connection() as conn:
            parent = traces.for_run(conn, run_id)
    with telemetry.span("chimeway.progress", parent=parent, run_id=run_id, cause="timer") as span:
        fired = progress_due_runs(engine, now, limit=TAKE_ALONG, batch_size=TAKE_ALONG)
        result = next((r for r in fired if r.run_id == run_id), None)
        if result is None:
            result = progress_run(engine, run_id, now)
            if isinstance(result, Noop) and result.reason == "wait_not_due":
                with logbook.held(), engine.pool.connection() as conn, conn.transaction():
                    _rearm_timer(engine, conn, run_id)
        span.set(result=type(result).__name__)
    return result


def progress_timer_in(
    engine: Engine,
    conn: Conn,
    run_id: uuid.UUID,
    now: dt.datetime | None = None,
    *,
    take_along: bool = True,
) -> ProgressResult:
    """:func:`progress_timer` in the caller's transaction (``chimeway.testing.drain``);
    without ``take_along``, only this run (a drain scoped to a tenant or to events)."""
    result = progress_in(engine, conn, run_id, now)
    if isinstance(result, Advanced) and take_along:
        claimed, fired_at = runs.fire_due(conn, now, TAKE_ALONG, timer_lock=jobs.PROGRESS_LOCK)
        if fired_at is not None:
            _elapse(engine, conn, claimed, fired_at, timers_deleted=True)
    elif isinstance(result, Noop) and result.reason == "wait_not_due":
        _rearm_timer(engine, conn, run_id)
    return result


def _rearm_timer(engine: Engine, conn: Conn, run_id: uuid.UUID) -> None:
    run = runs.get(conn, run_id)
    if run.suspended_until is not None:
        engine.deferrer.progress(conn, run_id, schedule_at=run.suspended_until)


def progress_due_runs(
    engine: Engine,
    now: dt.datetime | None = None,
    limit: int = 10_000,
    batch_size: int = 200,
    *,
    conn: Conn | None = None,
    claimed_hook: Callable[[], None] | None = None,
) -> list[ProgressResult]:
    """Progress waiting runs whose wait is due: batches claimed with SKIP LOCKED, so any
    number of sweepers can run at once; one transaction per batch, moved set-wise by the
    same code that moves one run on its timer. Their timer jobs still queued are deleted in
    that transaction (they would find their runs moved on and do nothing). If a batch fails,
    it is rolled back and its runs are retried one by one, each in a transaction of its
    own: a run that fails is logged and left for the next sweep; the others go on. (No
    savepoint around the batch: two round trips fewer per batch on the path that fires
    timers.) ``conn``: the batches run on it (a firing worker's own connection, so it never
    waits for the pool), each committing on its own when it is idle; otherwise each on a
    pool connection. ``claimed_hook`` is called after each claim, its runs locked and their
    timer jobs deleted (not yet committed): a firing worker then starts another firing, on
    another connection, for the waits that come due meanwhile (SKIP LOCKED keeps them
    apart)."""
    results: list[ProgressResult] = []
    tried: list[uuid.UUID] = []
    while len(results) < limit:
        size = min(batch_size, limit - len(results))
        claimed: list[Run] = []
        fired_at: dt.datetime | None = None
        with _connection(engine, conn) as tx:
            try:
                with logbook.held(), tx.transaction():
                    # With their timer jobs, before the runs move: a wait their advance
                    # starts queues a timer of its own.
                    claimed, fired_at = runs.fire_due(
                        tx, now, size, tried, timer_lock=jobs.PROGRESS_LOCK
                    )
                    tried.extend(run.id for run in claimed)
                    if claimed_hook is not None:
                        claimed_hook()
                    moved = (
                        _elapse(engine, tx, claimed, fired_at, timers_deleted=True)
                        if fired_at is not None
                        else []
                    )
            except Exception as exc:
                if fired_at is None:  # the claim itself failed: nothing was taken
                    raise
                logger.warning(
                    "progressing a batch of due runs failed; retrying them one by one",
                    exc_info=logs.withheld(exc),
                    extra={"action": "runs.batch_failed", "runs": len(claimed)},
                )
                moved = _one_by_one(engine, tx, claimed, fired_at)
        results.extend(moved)
        if len(claimed) < size:
            break
    return results


def _connection(engine: Engine, conn: Conn | None) -> AbstractContextManager[Conn]:
    return engine.pool.connection() if conn is None else contextlib.nullcontext(conn)


def _one_by_one(
    engine: Engine, conn: Conn, claimed: Sequence[Run], now: dt.datetime
) -> list[ProgressResult]:
    results: list[ProgressResult] = []
    for run in claimed:
        try:
            with logbook.held(), conn.transaction():
                result = progress_in(engine, conn, run.id, now)
        except Exception as exc:
            logger.error(
                "progressing a due run failed; the next sweep tries again",
                extra={"action": "run.progress_failed", "run_id": str(run.id)},
                exc_info=logs.withheld(exc),
            )
        else:
            results.append(result)
    return results
