"""Recording sends: each one's attempt appended, its delivery moved (succeeded, retry
scheduled, cancelled) and its run progressed, set-wise in one transaction (design §5, §6).

Once a send happened its outcome exists only in this process until it is recorded, so the
record is the one thing that must not be lost:

* a lost connection or a database that is away is retried, with backoff, for as long as it
  takes (the delivery stays ``dispatched`` and held by this process, which goes on beating,
  so no other process takes it over meanwhile: see :mod:`chimeway.engine.liveness`);
* a batch that fails for another reason is recorded send by send, and a send whose record
  still fails is recorded with a last-resort attempt (``unknown``, no provider data), which
  retries it like a temporary failure: never an unrecorded send, never one resent forever;
* log lines of the moves are written after the transaction commits
  (:mod:`chimeway.engine.logbook`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg_pool import PoolTimeout

from chimeway import logs, telemetry
from chimeway.db import Conn
from chimeway.engine import logbook, planning
from chimeway.engine.context import Engine
from chimeway.engine.progression import drive
from chimeway.engine.progression.drive import Held
from chimeway.engine.sending import Outcome, unknown_failure
from chimeway.errors import DatabaseUnavailable
from chimeway.results import DeliverResult, Delivery
from chimeway.store import clock, deliveries, runs, sessions
from chimeway.types import AttemptOutcome, DeliveryReason, DeliveryStatus, ErrorClass

logger = logging.getLogger(__name__)

S = DeliveryStatus

#: Backoff between tries of a record while the database is away: doubling, capped.
RETRY_FIRST = 0.05
RETRY_CAP = 2.0
#: Errors that say the database (or the way to it) is away, not that the rows are wrong.
AWAY = (psycopg.OperationalError, PoolTimeout, DatabaseUnavailable)


@dataclass(frozen=True)
class Sent:
    """A send that happened: the claimed delivery, the attempt number its claim gave, and
    what its adapter said. The attempt starts when the delivery was claimed
    (``status_changed_at``, the claim's transaction time on the database's clock; in a chunk
    the adapter call may start later, when a send thread is free)."""

    delivery: Delivery
    number: int
    outcome: Outcome


class Chain(Protocol):
    """Called in a record's transaction with the step deliveries its runs' advance planned
    for now (no job was deferred for them; none: an empty list), to claim them or defer
    their jobs; each try of the record calls it again. ``abandon`` forgets what an earlier
    try claimed (the record went on without it)."""

    def __call__(self, conn: Conn, delivery_ids: list[uuid.UUID]) -> None: ...

    def abandon(self) -> None: ...


def record(
    engine: Engine,
    sent: Sequence[Sent],
    sleep: Callable[[float], None] = time.sleep,
    *,
    chain: Chain | None = None,
) -> list[DeliverResult]:
    """Record the sends in one transaction if possible; one result per send, in order. If
    even a send's last-resort record is refused, the others are still recorded, the send is
    released (another process may try it again after ``stuck_after``) and the error raised.
    With ``chain``, the runs' next steps planned for now are handed to ``chain`` in the same
    transaction, each time the record is tried."""
    with telemetry.span("chimeway.record", deliveries=len(sent)):
        return _record(engine, sent, sleep, chain)


def _record(
    engine: Engine,
    sent: Sequence[Sent],
    sleep: Callable[[float], None],
    chain: Chain | None,
) -> list[DeliverResult]:
    try:
        return _record_while_away(engine, sent, sleep, chain)
    except Exception as exc:
        if chain is not None:
            chain.abandon()
        if len(sent) > 1:
            logger.warning(
                "recording a batch of attempts failed; recording them one by one",
                extra={
                    "action": "delivery.batch_record_failed",
                    "deliveries": len(sent),
                    **logs.error_fields(exc),
                },
            )
    results = []
    refused: Exception | None = None
    for one in sent:
        try:
            results.extend(_record_while_away(engine, [one], sleep))
        except Exception as exc:
            try:
                results.append(_last_resort(engine, one, sleep, exc))
            except Exception as unrecorded:
                refused = unrecorded
                _release(engine, one)
    if refused is not None:
        raise refused
    return results


def _release(engine: Engine, one: Sent) -> None:
    """Give up the hold on a send that could not be recorded at all (best effort)."""
    logger.error(
        "a send could not be recorded at all; releasing it for a later takeover",
        extra={"action": "delivery.record_refused", "delivery_id": str(one.delivery.id)},
    )
    try:
        with engine.pool.connection() as conn, conn.transaction():
            deliveries.release(conn, [one.delivery.id], engine.liveness.id)
    except Exception as exc:
        logger.warning(
            "releasing the send failed",
            extra={"action": "delivery.release_failed", **logs.error_fields(exc)},
        )


def _record_while_away(
    engine: Engine,
    sent: Sequence[Sent],
    sleep: Callable[[float], None],
    chain: Chain | None = None,
) -> list[DeliverResult]:
    """One transaction recording ``sent`` and progressing their runs, tried again for as
    long as the database is away. If progressing them together fails otherwise, the sends
    are recorded again with each run progressed in a savepoint of its own, and a run that
    fails again gets a ``progress`` job: the record is never lost to a run that cannot be
    moved now, nor are the other runs held back (no savepoint is paid for that on every
    send)."""
    wait, tries = RETRY_FIRST, 0
    each = False
    stale = 0
    while True:
        try:
            with logbook.held(), engine.deliver_pool.connection() as conn, conn.transaction():
                return record_attempts(engine, conn, sent, each=each, chain=chain)
        except psycopg.errors.FeatureNotSupported as exc:
            # A migration changed the columns a statement prepared on that connection
            # returns. The rollback made psycopg forget the connection's statements, but the
            # next try may take another connection of the pool that still holds them: each
            # fails once. Never left to the job's retry, which would send again.
            stale += 1
            if not sessions.stale_plan(exc) or stale > engine.deliver_pool.max_size:
                raise
        except AWAY as away:
            tries += 1
            if tries == 1 or tries % 20 == 0:
                logger.warning(
                    "recording attempts failed: the database is away; trying again",
                    extra={
                        "action": "delivery.record_retry",
                        "delivery_ids": [str(s.delivery.id) for s in sent],
                        "tries": tries,
                    },
                    exc_info=logs.withheld(away) if tries == 1 else None,
                )
            sleep(wait)
            wait = min(wait * 2, RETRY_CAP)
        except _ProgressFailed as failed:
            if each:
                raise
            _log_deferred(failed)
            each = True


def record_in(engine: Engine, conn: Conn, sent: Sequence[Sent]) -> list[DeliverResult]:
    """:func:`record_attempts` in a savepoint of the caller's transaction, falling back as
    a send's own record does (``chimeway.testing.drain(cw, conn=...)``)."""
    try:
        with logbook.held(), conn.transaction():
            return record_attempts(engine, conn, sent)
    except _ProgressFailed as failed:
        _log_deferred(failed)
    with logbook.held(), conn.transaction():
        return record_attempts(engine, conn, sent, each=True)


def _log_deferred(failed: _ProgressFailed) -> None:
    logger.error(
        "progressing runs after their attempts failed; recording the attempts again with "
        "each run on its own (one that fails again gets a progress job)",
        extra={
            "action": "runs.progress_deferred",
            "run_ids": [str(run_id) for run_id in failed.run_ids],
            **({} if failed.__cause__ is None else logs.error_fields(failed.__cause__)),
        },
    )


def _last_resort(
    engine: Engine, one: Sent, sleep: Callable[[float], None], error: Exception
) -> DeliverResult:
    """The send's record failed (with ``error``) for a reason other than the database being
    away (a bug, a row the database refuses): record it without any provider data, as an
    ``unknown`` failure, so that it is retried like a temporary one and is never left
    unrecorded. The log line names the error but not its text, which may quote the refused
    row (PostgreSQL's ``DETAIL: Failing row contains (...)``)."""
    logger.error(
        "recording an attempt failed; recording it as an unknown failure",
        extra={
            "action": "delivery.record_failed",
            "delivery_id": str(one.delivery.id),
            **logs.error_fields(error),
        },
    )
    bare = Sent(
        one.delivery,
        one.number,
        unknown_failure(RuntimeError("the provider's answer could not be recorded")),
    )
    return _record_while_away(engine, [bare], sleep)[0]


def record_attempts(
    engine: Engine,
    conn: Conn,
    sent: Sequence[Sent],
    *,
    each: bool = False,
    chain: Chain | None = None,
) -> list[DeliverResult]:
    """Append each send's attempt and move its delivery (and its run) on, in the caller's
    transaction: a few statements for any number of sends. One result per send, in order.
    The runs are progressed together with no savepoint, which fails as
    :class:`_ProgressFailed` (the transaction is then lost: record again with ``each``,
    which progresses each run in a savepoint and gives one that fails a ``progress`` job).
    With ``chain``, the runs' advance plans their next steps' deliveries due now without jobs and
    hands them to ``chain`` (always called, with no id when there is none)."""
    # Lock order: runs, then deliveries (each set in id order, the record locks those).
    locked = runs.lock_runs(
        conn, [s.delivery.workflow_run_id for s in sent if s.delivery.workflow_run_id]
    )
    records = deliveries.record_many(conn, [_record_of(engine, s) for s in sent])
    results: list[DeliverResult] = []
    retries: list[Delivery] = []
    held: list[Held] = []
    for s, done in zip(sent, records, strict=True):
        results.append(_result(s, done))
        moved = done.moved
        if moved is None:
            continue
        if moved.status == S.FAILED:
            retries.append(moved)
        _log_move(s, moved)
        run = locked.get(s.delivery.workflow_run_id) if s.delivery.workflow_run_id else None
        if run is not None:
            held.append(Held(run, moved, done.attempt))
    for moved in retries:
        # A re-driven job may already be queued for this delivery: then it is pulled to the
        # retry time instead (a savepoint keeps this transaction alive).
        engine.deferrer.deliver_if_not_queued(conn, moved.id, schedule_at=moved.retry_at)
    chained: list[uuid.UUID] = []
    if chain is not None and held:
        with planning.chaining() as chained:
            _progress_after_record(engine, conn, held, each=each)
    else:
        _progress_after_record(engine, conn, held, each=each)
    if chain is not None:
        chain(conn, chained)
    return results


def _record_of(engine: Engine, s: Sent) -> deliveries.NewRecord:
    """The move a send's outcome makes of its delivery (if it is still dispatched for it)."""
    outcome, number = s.outcome, s.number
    context = {"attempt_number": number}
    to, reason, why, delay, exhausted = S.FAILED, "temporary_failure", None, None, False
    if outcome.attempt_outcome == AttemptOutcome.SUCCEEDED:
        to, reason = S.SUCCEEDED, "sent"
    elif outcome.error_class in (ErrorClass.PERMANENT, ErrorClass.BOUNCED):
        why = (
            DeliveryReason.BOUNCED
            if outcome.error_class == ErrorClass.BOUNCED
            else DeliveryReason.PERMANENT_FAILURE
        )
        to, reason = S.CANCELLED, str(why)
    elif number >= s.delivery.max_attempts:
        why = DeliveryReason.RETRIES_EXHAUSTED
        to, reason, exhausted = S.CANCELLED, str(why), True
    else:
        delay = engine.retry_policy(s.delivery.channel).delay(number)
        if outcome.retry_after is not None:  # the provider said when to come back
            delay = max(delay, dt.timedelta(seconds=outcome.retry_after))
    return deliveries.NewRecord(
        delivery_id=s.delivery.id,
        number=number,
        outcome=outcome.attempt_outcome,
        started_at=s.delivery.status_changed_at,
        error_class=outcome.error_class,
        error=outcome.error,
        provider_message_id=outcome.provider_message_id,
        response=outcome.response,
        to=to,
        reason=reason,
        suppression_reason=why,
        retry_delay=delay,
        exhausted=exhausted,
        context=context,
    )


def _result(s: Sent, done: deliveries.Recorded) -> DeliverResult:
    delivery_id = s.delivery.id
    moved = done.moved
    if done.was_status is None:
        return DeliverResult(delivery_id, "recorded", "delivery no longer exists")
    if done.replayed:
        # The first try committed; only its reply was lost.
        return DeliverResult(delivery_id, "recorded", f"already recorded: {done.was_status}")
    if moved is None:
        # Moved on while the adapter ran (an operator, a takeover): the attempt is kept as
        # evidence, nothing else changed.
        if done.was_status == S.DISPATCHED:
            return DeliverResult(delivery_id, "recorded", "taken over by another process")
        return DeliverResult(delivery_id, "recorded", f"status was {done.was_status}")
    if moved.status == S.SUCCEEDED:
        return DeliverResult(delivery_id, "succeeded")
    if moved.status == S.FAILED:
        return DeliverResult(delivery_id, "retry_scheduled", f"retry at {moved.retry_at}")
    return DeliverResult(delivery_id, "cancelled", str(moved.suppression_reason))


def _log_move(s: Sent, moved: Delivery) -> None:
    context = {"attempt_number": s.number}
    reason = moved.suppression_reason
    if moved.status == S.SUCCEEDED:
        _log("delivery.succeeded", moved, **context)
    elif moved.status == S.FAILED:
        _log("delivery.retry_scheduled", moved, **context)
    elif reason == DeliveryReason.RETRIES_EXHAUSTED:
        _log("delivery.retries_exhausted", moved, **context, reason=reason)
    else:
        _log("delivery.cancelled", moved, **context, reason=reason)


class _ProgressFailed(Exception):
    """Progressing the runs of recorded sends failed (the cause is chained)."""

    def __init__(self, run_ids: Sequence[uuid.UUID]) -> None:
        super().__init__(f"progressing {len(run_ids)} run(s) failed")
        self.run_ids = list(run_ids)


def _run_ids(held: Sequence[Held]) -> list[uuid.UUID]:
    return list(dict.fromkeys(h.run.id for h in held))


def _progress_after_record(
    engine: Engine, conn: Conn, known: Sequence[Held], *, each: bool = False
) -> None:
    """Progress the runs with their attempts: together, set-wise and with no savepoint (two
    round trips fewer per record), where a failure other than the database being away is
    :class:`_ProgressFailed` (the record is made again with ``each``); or, with ``each``,
    run by run, each in a savepoint, a run that still fails getting a ``progress`` job
    while the others move on. A run seen twice (two of its deliveries in one batch) is
    progressed again afterwards, from the rows."""
    first: dict[uuid.UUID, Held] = {}
    again: list[uuid.UUID] = []
    for k in known:
        if k.run.id in first:
            again.append(k.run.id)
        else:
            first[k.run.id] = k
    if each:
        for k in first.values():
            _progress_one(engine, conn, k.run.id, k)
        for run_id in again:
            _progress_one(engine, conn, run_id, None)
        return
    try:
        if first:
            drive.progress_recorded(engine, conn, list(first.values()))
        for run_id in again:
            drive.progress_in(engine, conn, run_id)
    except AWAY:
        raise
    except Exception as exc:
        raise _ProgressFailed(_run_ids(known)) from exc


def _progress_one(engine: Engine, conn: Conn, run_id: uuid.UUID, known: Held | None) -> None:
    try:
        with logbook.held(), conn.transaction():
            drive.progress_in(engine, conn, run_id, held=known)
    except AWAY:
        raise
    except Exception as exc:
        logger.error(
            "progressing the run after an attempt failed; deferring it",
            extra={
                "action": "run.progress_deferred",
                "run_id": str(run_id),
                **logs.error_fields(exc),
            },
        )
        engine.deferrer.progress(conn, run_id, schedule_at=clock.now(conn))


def _log(action: str, delivery: Delivery | None, **details: Any) -> None:
    if delivery is None:
        return
    logbook.info(
        logger,
        action.replace(".", " ").replace("_", " "),
        action=action,
        tenant_id=delivery.tenant_id,
        delivery_id=str(delivery.id),
        run_id=str(delivery.workflow_run_id) if delivery.workflow_run_id else None,
        channel=delivery.channel,
        **details,
    )
