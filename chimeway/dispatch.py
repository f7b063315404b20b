"""Sending one delivery: claim it, call its adapter, record the attempt (design §5).

Three steps, and the adapter call between two short transactions, so no transaction or row
lock is held while a provider is slow. The record step locks the run (if any) before the
delivery, appends the attempt, moves the status, schedules a retry or progresses the run,
all in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import traceback
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import psycopg

from chimeway import db, deliveries, progression, workflows
from chimeway.adapters import DeliveryFailure, DeliveryRequest, Sent
from chimeway.deliveries import Delivery
from chimeway.redaction import clean_text, redact
from chimeway.types import (
    AttemptOutcome,
    DeliveryReason,
    DeliveryStatus,
    ErrorClass,
    OrchestrationState,
)

if TYPE_CHECKING:
    from chimeway.app import Chimeway

logger = logging.getLogger(__name__)

S = DeliveryStatus


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a channel's temporary failures are retried."""

    max_attempts: int = 5
    base_delay: dt.timedelta = dt.timedelta(seconds=5)
    max_delay: dt.timedelta = dt.timedelta(hours=1)
    jitter: float = 0.5  # up to this fraction of each delay is removed at random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt_number: int) -> dt.timedelta:
        """Wait before the attempt after ``attempt_number``: exponential, capped, jittered."""
        exponential = self.base_delay * (2 ** (attempt_number - 1))
        capped: dt.timedelta = min(exponential, self.max_delay)
        return capped * (1 - self.jitter * random.random())


Action = Literal["skipped", "succeeded", "retry_scheduled", "cancelled", "recorded"]


@dataclass(frozen=True)
class DispatchResult:
    delivery_id: uuid.UUID
    action: Action
    detail: str = ""


@dataclass(frozen=True)
class _Outcome:
    attempt_outcome: AttemptOutcome
    error_class: ErrorClass | None
    error: str | None
    provider_message_id: str | None
    response: dict[str, Any]


@dataclass(frozen=True)
class _Claim:
    delivery: Delivery | None
    attempt_number: int = 0
    why_not: str = ""


def _claim(cw: Chimeway, delivery_id: uuid.UUID) -> _Claim:
    """Move the delivery to ``dispatched`` if it may be sent now; else say why not. One
    statement in autocommit: no transaction is left open around it."""
    with cw.pool.connection() as conn:
        conn.autocommit = True
        try:
            found = deliveries.claim(conn, delivery_id, cw.stuck_after)
            if found is not None and found.dispatched is None:
                return _Claim(None, why_not=_not_sendable(cw, conn, delivery_id, found))
        finally:
            with suppress(psycopg.Error):  # a broken connection is dropped by the pool
                conn.autocommit = False
    if found is None:
        return _Claim(None, why_not="missing")
    claimed = found.dispatched
    attempt_number = found.attempts + 1
    _log("delivery.dispatched", claimed, attempt_number=attempt_number)
    return _Claim(claimed, attempt_number)


def _not_sendable(
    cw: Chimeway, conn: psycopg.Connection[Any], delivery_id: uuid.UUID, found: deliveries.Claim
) -> str:
    """Why a claim did not move the delivery. One sent too early (a re-drive, a job run
    before its time) makes sure a job comes back when it is due, then steps aside."""
    status = found.was_status
    if status in (S.SUCCEEDED, S.SUPPRESSED, S.CANCELLED, S.DIGESTED):
        return f"terminal ({status})"
    if found.was_orchestration_state != OrchestrationState.READY:
        return f"not ready ({found.was_orchestration_state})"
    if status == S.FAILED and found.was_retry_at is not None:
        with conn.transaction():
            cw.jobs.deliver_if_not_queued(conn, delivery_id, schedule_at=found.was_retry_at)
        return "retry not due yet"
    if status == S.DISPATCHED:
        with conn.transaction():
            cw.jobs.deliver_if_not_queued(conn, delivery_id, schedule_at=found.takeover_at)
        return "being sent by another worker"
    return f"cannot be dispatched from {status}"


def _send(cw: Chimeway, delivery: Delivery, attempt_number: int) -> _Outcome:
    request = DeliveryRequest(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        recipient_id=delivery.recipient_id,
        channel=delivery.channel,
        content=delivery.render_data,
        attempt_number=attempt_number,
    )
    adapter = cw.adapter_for(delivery.channel)
    try:
        result = adapter.deliver(request)
        if isinstance(result, DeliveryFailure):
            raise result
        if not isinstance(result, Sent):
            raise TypeError(f"adapter returned {type(result).__name__}, expected Sent")
    except DeliveryFailure as failure:
        outcome = {
            ErrorClass.PERMANENT: AttemptOutcome.REJECTED,
            ErrorClass.BOUNCED: AttemptOutcome.BOUNCED,
        }.get(failure.error_class, AttemptOutcome.FAILED)
        return _Outcome(
            outcome,
            failure.error_class,
            clean_text(str(failure))[:2000],
            failure.provider_message_id,
            redact(failure.meta),
        )
    except Exception as exc:  # an adapter bug or an unclassified error: retry it
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return _Outcome(
            AttemptOutcome.FAILED, ErrorClass.UNKNOWN, clean_text(detail)[:2000], None, {}
        )
    return _Outcome(
        AttemptOutcome.SUCCEEDED, None, None, result.provider_message_id, redact(result.meta)
    )


RECORD_TRIES = 3


def _record(
    cw: Chimeway, delivery: Delivery, outcome: _Outcome, started_at: dt.datetime
) -> DispatchResult:
    """Record the outcome of a send that happened. The outcome exists only in this process
    now, so a lost connection is retried here rather than by re-sending."""
    for tries in range(1, RECORD_TRIES + 1):
        try:
            with cw.pool.connection() as conn, conn.transaction():
                return record_attempt(cw, conn, delivery, outcome, started_at)
        except psycopg.OperationalError:
            if tries == RECORD_TRIES:
                raise
            logger.warning(
                "recording an attempt failed; trying again",
                extra={"action": "delivery.record_retry", "delivery_id": str(delivery.id)},
                exc_info=True,
            )
            time.sleep(0.5 * tries)
    raise AssertionError("unreachable")


def record_attempt(
    cw: Chimeway,
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    outcome: _Outcome,
    started_at: dt.datetime,
) -> DispatchResult:
    """Append the attempt and move the delivery (and its run) on, in the caller's transaction."""
    run_id = delivery.workflow_run_id
    # Lock order: run, then delivery.
    run = workflows.lock_run(conn, run_id) if run_id is not None else None
    current = deliveries.lock(conn, delivery.id)
    if current is None:  # deleted while the adapter ran (retention): nothing to record on
        return DispatchResult(delivery.id, "recorded", "delivery no longer exists")
    attempt = deliveries.append_attempt(
        conn,
        delivery.id,
        outcome=outcome.attempt_outcome,
        error_class=outcome.error_class,
        error=outcome.error,
        provider_message_id=outcome.provider_message_id,
        provider_response=outcome.response,
        started_at=started_at,
    )
    context = {"attempt_number": attempt.attempt_number}
    moved: Delivery | None = None
    if current.status != S.DISPATCHED:
        # Moved on while the adapter ran (an operator, a takeover): keep the attempt as
        # evidence, change nothing else.
        result = DispatchResult(delivery.id, "recorded", f"status was {current.status}")
    elif outcome.attempt_outcome == AttemptOutcome.SUCCEEDED:
        moved = deliveries.transition(
            conn,
            delivery.id,
            S.SUCCEEDED,
            reason="sent",
            context=context,
            provider_message_id=outcome.provider_message_id,
        )
        _log("delivery.succeeded", moved, attempt_number=attempt.attempt_number)
        result = DispatchResult(delivery.id, "succeeded")
    elif outcome.error_class in (ErrorClass.PERMANENT, ErrorClass.BOUNCED):
        reason = (
            DeliveryReason.BOUNCED
            if outcome.error_class == ErrorClass.BOUNCED
            else DeliveryReason.PERMANENT_FAILURE
        )
        moved = deliveries.transition(
            conn,
            delivery.id,
            S.CANCELLED,
            reason=reason,
            suppression_reason=reason,
            context=context,
        )
        _log("delivery.cancelled", moved, reason=reason)
        result = DispatchResult(delivery.id, "cancelled", reason)
    else:
        result, moved = _temporary_failure(cw, conn, current, attempt.attempt_number, context)
    if run is not None:
        known = progression.Known(run, moved, (attempt.outcome, attempt.error_class))
        _progress_after_record(cw, conn, run.id, known)
    return result


def _progress_after_record(
    cw: Chimeway, conn: psycopg.Connection[Any], run_id: uuid.UUID, known: progression.Known
) -> None:
    """Progress the run with the attempt; if that fails, the attempt still commits and a
    ``progress`` job takes the run on (never lose the record of a send)."""
    try:
        with conn.transaction():
            progression.progress_in(cw, conn, run_id, known=known)
    except Exception:
        logger.exception(
            "progressing the run after an attempt failed; deferring it",
            extra={"action": "run.progress_deferred", "run_id": str(run_id)},
        )
        cw.jobs.progress(conn, run_id, schedule_at=db.now(conn))


def _temporary_failure(
    cw: Chimeway,
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    attempt_number: int,
    context: dict[str, Any],
) -> tuple[DispatchResult, Delivery | None]:
    exhausted = attempt_number >= delivery.max_attempts
    retry_at = None
    if not exhausted:
        retry_at = db.now(conn) + cw.retry_policy(delivery.channel).delay(attempt_number)
    moved = deliveries.transition(
        conn,
        delivery.id,
        S.FAILED,
        reason="temporary_failure",
        retry_at=retry_at,
        context=context,
    )
    if exhausted:
        moved = deliveries.transition(
            conn,
            delivery.id,
            S.CANCELLED,
            reason=DeliveryReason.RETRIES_EXHAUSTED,
            suppression_reason=DeliveryReason.RETRIES_EXHAUSTED,
            context=context,
        )
        _log("delivery.retries_exhausted", moved, attempt_number=attempt_number)
        return DispatchResult(delivery.id, "cancelled", DeliveryReason.RETRIES_EXHAUSTED), moved
    # A re-driven job may already be queued for this delivery: then it is pulled to the
    # retry time instead (a savepoint keeps this transaction alive).
    cw.jobs.deliver_if_not_queued(conn, delivery.id, schedule_at=retry_at)
    _log("delivery.retry_scheduled", moved, attempt_number=attempt_number)
    return DispatchResult(delivery.id, "retry_scheduled", f"retry at {retry_at}"), moved


def dispatch(cw: Chimeway, delivery_id: uuid.UUID) -> DispatchResult:
    """Send one delivery if it is due; safe to call twice or concurrently."""
    claim = _claim(cw, delivery_id)
    if claim.delivery is None:
        logger.debug(
            "delivery skipped",
            extra={
                "action": "delivery.skipped",
                "delivery_id": str(delivery_id),
                "why": claim.why_not,
            },
        )
        return DispatchResult(delivery_id, "skipped", claim.why_not)
    outcome = _send(cw, claim.delivery, claim.attempt_number)
    # The claim's transaction time is when the send started, on the database's clock.
    return _record(cw, claim.delivery, outcome, claim.delivery.status_changed_at)


def _log(action: str, delivery: Delivery | None, **details: Any) -> None:
    if delivery is None:
        return
    logger.info(
        action.replace(".", " ").replace("_", " "),
        extra={
            "action": action,
            "tenant_id": delivery.tenant_id,
            "delivery_id": str(delivery.id),
            "run_id": str(delivery.workflow_run_id) if delivery.workflow_run_id else None,
            "channel": delivery.channel,
            **details,
        },
    )
