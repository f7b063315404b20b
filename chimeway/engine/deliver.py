"""Sending deliveries: claim them, call their adapters, record the attempts (design §5).

Three steps, and the adapter calls between two short transactions, so no transaction or
row lock is held while a provider is slow. A ``deliver`` job carries one delivery or a
chunk of a fan-out; either way one statement claims them, the adapter calls run side by
side, and one transaction records them (one per group of finished sends, when some are
slow): it locks the runs (if any) before the deliveries, appends the attempts, moves the
statuses, schedules retries and progresses the runs, each step set-wise through the same
guarded functions as one delivery.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psycopg

from chimeway.adapters import DeliveryFailure, DeliveryRequest, RecipientProfile, Sent
from chimeway.db import Conn
from chimeway.engine import recipients
from chimeway.engine.context import Engine
from chimeway.engine.progression import drive
from chimeway.engine.progression.drive import Held
from chimeway.redaction import clean_text, redact
from chimeway.results import DeliverResult, Delivery
from chimeway.store import clock, deliveries, runs
from chimeway.store.deliveries import LatestAttempt
from chimeway.types import (
    AttemptOutcome,
    DeliveryReason,
    DeliveryStatus,
    ErrorClass,
    OrchestrationState,
)

logger = logging.getLogger(__name__)

S = DeliveryStatus


@dataclass(frozen=True)
class _Outcome:
    attempt_outcome: AttemptOutcome
    error_class: ErrorClass | None
    error: str | None
    provider_message_id: str | None
    response: dict[str, Any]


def _claim(
    engine: Engine, delivery_ids: Sequence[uuid.UUID]
) -> tuple[list[tuple[Delivery, int]], dict[uuid.UUID, str]]:
    """Move the deliveries that may be sent now to ``dispatched`` (with their attempt
    numbers), and say why each other one may not. One statement in autocommit: no
    transaction is left open around the sends."""
    with engine.pool.connection() as conn:
        conn.autocommit = True
        try:
            return _claim_in(engine, conn, delivery_ids)
        finally:
            with suppress(psycopg.Error):  # a broken connection is dropped by the pool
                conn.autocommit = False


def _claim_in(
    engine: Engine, conn: Conn, delivery_ids: Sequence[uuid.UUID]
) -> tuple[list[tuple[Delivery, int]], dict[uuid.UUID, str]]:
    found = deliveries.claim_many(conn, delivery_ids, engine.settings.stuck_after)
    why_not = {
        delivery_id: _not_sendable(engine, conn, delivery_id, claim)
        for delivery_id, claim in found.items()
        if claim.dispatched is None
    }
    claimed = []
    for delivery_id in delivery_ids:
        claim = found.get(delivery_id)
        if claim is None:
            why_not[delivery_id] = "missing"
        elif claim.dispatched is not None:
            claimed.append((claim.dispatched, claim.attempts + 1))
            _log("delivery.dispatched", claim.dispatched, attempt_number=claim.attempts + 1)
    return claimed, why_not


def _not_sendable(
    engine: Engine, conn: Conn, delivery_id: uuid.UUID, found: deliveries.Claim
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
            engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=found.was_retry_at)
        return "retry not due yet"
    if status == S.DISPATCHED:
        with conn.transaction():
            engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=found.takeover_at)
        return "being sent by another worker"
    return f"cannot be dispatched from {status}"


Profiles = dict[tuple[str, str], RecipientProfile]


def _profiles(conn: Conn, claimed: Sequence[tuple[Delivery, int]]) -> Profiles:
    """The recipients' profiles, as the directory holds them now: one query per chunk."""
    return recipients.profiles_for(conn, {(d.tenant_id, d.recipient_id) for d, _ in claimed})


def _send(engine: Engine, delivery: Delivery, attempt_number: int, profiles: Profiles) -> _Outcome:
    """What the adapter said, as an outcome to record; never raises an ``Exception``: the
    other sends of its chunk must be recorded whatever this one does."""
    try:
        profile = profiles.get((delivery.tenant_id, delivery.recipient_id))
        return _call_adapter(engine, delivery, attempt_number, profile)
    except Exception as exc:  # past the adapter's own errors (a DeliveryFailure without meta,
        # meta that cannot be redacted): still a failed attempt, retried like any other
        return _unknown_failure(exc)


def _unknown_failure(exc: Exception) -> _Outcome:
    detail = "".join(traceback.format_exception_only(exc)).strip()
    return _Outcome(AttemptOutcome.FAILED, ErrorClass.UNKNOWN, clean_text(detail)[:2000], None, {})


def _call_adapter(
    engine: Engine, delivery: Delivery, attempt_number: int, profile: RecipientProfile | None
) -> _Outcome:
    request = DeliveryRequest(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        recipient_id=delivery.recipient_id,
        channel=delivery.channel,
        content=delivery.render_data,
        attempt_number=attempt_number,
        recipient=profile,
    )
    adapter = engine.adapter_for(delivery.channel)
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
        return _unknown_failure(exc)
    return _Outcome(
        AttemptOutcome.SUCCEEDED, None, None, result.provider_message_id, redact(result.meta)
    )


@dataclass(frozen=True)
class _Sent:
    """A send that happened: the claimed delivery and what its adapter said. The attempt
    starts when the delivery was claimed (``status_changed_at``, the claim's transaction
    time on the database's clock; in a chunk the adapter call may start later, when a send
    thread is free)."""

    delivery: Delivery
    outcome: _Outcome


RECORD_TRIES = 3
#: A chunk's finished sends are recorded at least this many times per ``stuck_after``.
RECORD_GROUPS = 10


def _record(engine: Engine, sent: Sequence[_Sent]) -> list[DeliverResult]:
    """Record the sends in one transaction. The outcomes exist only in this process now: a
    lost connection is retried here rather than by re-sending, and if the batch fails for
    another reason each send is recorded on its own, so one bad row fails alone."""
    try:
        return _record_retrying(engine, sent)
    except psycopg.OperationalError:
        raise
    except Exception:
        if len(sent) == 1:
            raise
        logger.warning(
            "recording a batch of attempts failed; recording them one by one",
            extra={"action": "delivery.batch_record_failed", "deliveries": len(sent)},
            exc_info=True,
        )
    results = []
    failed: Exception | None = None
    for one in sent:
        try:
            results.extend(_record_retrying(engine, [one]))
        except Exception as exc:
            logger.exception(
                "recording an attempt failed",
                extra={"action": "delivery.record_failed", "delivery_id": str(one.delivery.id)},
            )
            failed = exc
    if failed is not None:  # the job fails and is retried; the recorded ones are skipped
        raise failed
    return results


def _record_retrying(engine: Engine, sent: Sequence[_Sent]) -> list[DeliverResult]:
    for tries in range(1, RECORD_TRIES + 1):
        try:
            with engine.pool.connection() as conn, conn.transaction():
                return record_attempts(engine, conn, sent)
        except psycopg.OperationalError:
            if tries == RECORD_TRIES:
                raise
            logger.warning(
                "recording attempts failed; trying again",
                extra={
                    "action": "delivery.record_retry",
                    "delivery_ids": [str(s.delivery.id) for s in sent],
                },
                exc_info=True,
            )
            time.sleep(0.5 * tries)
    raise AssertionError("unreachable")


def record_attempts(engine: Engine, conn: Conn, sent: Sequence[_Sent]) -> list[DeliverResult]:
    """Append each send's attempt and move its delivery (and its run) on, in the caller's
    transaction: a few statements for any number of sends. One result per send, in order."""
    # Lock order: runs, then deliveries (each set in id order).
    locked = runs.lock_runs(
        conn, [s.delivery.workflow_run_id for s in sent if s.delivery.workflow_run_id]
    )
    current = deliveries.lock_many(conn, [s.delivery.id for s in sent])
    present = [s for s in sent if s.delivery.id in current]
    attempts = deliveries.append_attempts(
        conn,
        [
            deliveries.NewAttempt(
                s.delivery.id,
                s.outcome.attempt_outcome,
                s.delivery.status_changed_at,
                s.outcome.error_class,
                s.outcome.error,
                s.outcome.provider_message_id,
                s.outcome.response,
            )
            for s in present
        ],
    )
    results = {
        s.delivery.id: DeliverResult(s.delivery.id, "recorded", "delivery no longer exists")
        for s in sent
        if s.delivery.id not in current
    }
    moves: list[deliveries.Move] = []
    exhausted: list[deliveries.Move] = []
    retries: dict[uuid.UUID, dt.datetime] = {}
    logs: list[tuple[uuid.UUID, str, dict[str, Any]]] = []  # once the moves are made
    now: dt.datetime | None = None
    for s, attempt in zip(present, attempts, strict=True):
        delivery_id, number = s.delivery.id, attempt.attempt_number
        context = {"attempt_number": number}
        status = current[delivery_id].status
        if status != S.DISPATCHED:
            # Moved on while the adapter ran (an operator, a takeover): keep the attempt as
            # evidence, change nothing else.
            results[delivery_id] = DeliverResult(delivery_id, "recorded", f"status was {status}")
        elif s.outcome.attempt_outcome == AttemptOutcome.SUCCEEDED:
            moves.append(
                deliveries.Move(
                    delivery_id,
                    S.SUCCEEDED,
                    "sent",
                    context=context,
                    provider_message_id=s.outcome.provider_message_id,
                )
            )
            results[delivery_id] = DeliverResult(delivery_id, "succeeded")
            logs.append((delivery_id, "delivery.succeeded", context))
        elif s.outcome.error_class in (ErrorClass.PERMANENT, ErrorClass.BOUNCED):
            reason = (
                DeliveryReason.BOUNCED
                if s.outcome.error_class == ErrorClass.BOUNCED
                else DeliveryReason.PERMANENT_FAILURE
            )
            moves.append(deliveries.Move(delivery_id, S.CANCELLED, reason, reason, context))
            results[delivery_id] = DeliverResult(delivery_id, "cancelled", reason)
            logs.append((delivery_id, "delivery.cancelled", {**context, "reason": reason}))
        elif number >= current[delivery_id].max_attempts:
            moves.append(deliveries.Move(delivery_id, S.FAILED, "temporary_failure", None, context))
            exhausted.append(
                deliveries.Move(
                    delivery_id,
                    S.CANCELLED,
                    DeliveryReason.RETRIES_EXHAUSTED,
                    DeliveryReason.RETRIES_EXHAUSTED,
                    context,
                )
            )
            results[delivery_id] = DeliverResult(
                delivery_id, "cancelled", DeliveryReason.RETRIES_EXHAUSTED
            )
            logs.append(
                (
                    delivery_id,
                    "delivery.retries_exhausted",
                    {**context, "reason": DeliveryReason.RETRIES_EXHAUSTED},
                )
            )
        else:
            now = now or clock.now(conn)
            retry_at = now + engine.retry_policy(s.delivery.channel).delay(number)
            retries[delivery_id] = retry_at
            moves.append(
                deliveries.Move(delivery_id, S.FAILED, "temporary_failure", None, context, retry_at)
            )
            results[delivery_id] = DeliverResult(
                delivery_id, "retry_scheduled", f"retry at {retry_at}"
            )
            logs.append((delivery_id, "delivery.retry_scheduled", context))
    moved = {d.id: d for d in deliveries.transition_many(conn, moves)}
    moved.update({d.id: d for d in deliveries.transition_many(conn, exhausted)})
    for delivery_id, retry_at in retries.items():
        # A re-driven job may already be queued for this delivery: then it is pulled to the
        # retry time instead (a savepoint keeps this transaction alive).
        engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=retry_at)
    for delivery_id, action, details in logs:
        _log(action, moved.get(delivery_id), **details)
    known = [
        Held(
            locked[s.delivery.workflow_run_id],
            moved.get(s.delivery.id),
            LatestAttempt(attempt.outcome, attempt.error_class),
        )
        for s, attempt in zip(present, attempts, strict=True)
        if s.delivery.workflow_run_id in locked
    ]
    _progress_after_record(engine, conn, known)
    return [results[s.delivery.id] for s in sent]


def _progress_after_record(engine: Engine, conn: Conn, known: Sequence[Held]) -> None:
    """Progress the runs with their attempts, set-wise; if that fails, run by run, and a run
    that still fails gets a ``progress`` job: the attempts commit either way (never lose the
    record of a send). A run seen twice (two of its deliveries in one batch) is progressed
    again afterwards, from the rows."""
    first: dict[uuid.UUID, Held] = {}
    again: list[uuid.UUID] = []
    for k in known:
        if k.run.id in first:
            again.append(k.run.id)
        else:
            first[k.run.id] = k
    batch = list(first.values())
    if len(batch) > 1:
        try:
            with conn.transaction():
                drive.progress_recorded(engine, conn, batch)
            batch = []
        except Exception:
            logger.warning(
                "progressing a batch of runs after their attempts failed; one by one",
                extra={"action": "runs.batch_failed", "runs": len(batch)},
                exc_info=True,
            )
    for k in batch:
        _progress_one(engine, conn, k.run.id, k)
    for run_id in again:
        _progress_one(engine, conn, run_id, None)


def _progress_one(
    engine: Engine,
    conn: Conn,
    run_id: uuid.UUID,
    known: Held | None,
) -> None:
    try:
        with conn.transaction():
            drive.progress_in(engine, conn, run_id, held=known)
    except Exception:
        logger.exception(
            "progressing the run after an attempt failed; deferring it",
            extra={"action": "run.progress_deferred", "run_id": str(run_id)},
        )
        engine.deferrer.progress(conn, run_id, schedule_at=clock.now(conn))


def deliver(engine: Engine, delivery_id: uuid.UUID) -> DeliverResult:
    """Send one delivery if it is due; safe to call twice or concurrently."""
    return deliver_many(engine, [delivery_id])[0]


def deliver_many(engine: Engine, delivery_ids: Sequence[uuid.UUID]) -> list[DeliverResult]:
    """Send the deliveries that are due (what one ``deliver`` job does): one claim for all,
    the adapter calls side by side on the Chimeway's send threads, one transaction to record
    them (or one per group, if some are slow). Safe to call twice or concurrently; one result
    per distinct id, in order."""
    ids = list(dict.fromkeys(delivery_ids))
    claimed, why_not = _claim(engine, ids)
    profiles: Profiles = {}
    if claimed:
        with engine.pool.connection() as conn:
            profiles = _profiles(conn, claimed)
    for delivery_id, why in why_not.items():
        logger.debug(
            "delivery skipped",
            extra={"action": "delivery.skipped", "delivery_id": str(delivery_id), "why": why},
        )
    recorded: dict[uuid.UUID, DeliverResult] = {}
    failed: Exception | None = None
    # Sends are recorded as they finish, in groups (all at once when they are quick): a slow
    # provider call must not keep the others of its chunk unrecorded until a takeover.
    every = engine.settings.stuck_after.total_seconds() / RECORD_GROUPS
    for group in engine.senders.in_groups(
        lambda c: _send(engine, *c, profiles), claimed, every=every
    ):
        sent = [_Sent(delivery, outcome) for (delivery, _), outcome in group]
        try:
            recorded.update((r.delivery_id, r) for r in _record(engine, sent))
        except Exception as exc:  # record the later groups, then fail the job
            failed = exc
    if failed is not None:
        raise failed
    return [recorded.get(d) or DeliverResult(d, "skipped", why_not.get(d, "")) for d in ids]


def deliver_in(
    engine: Engine, conn: Conn, delivery_ids: Sequence[uuid.UUID]
) -> list[DeliverResult]:
    """What :func:`deliver_many` does, all in the caller's transaction: claim, call the
    adapters one after the other, record. The adapter calls run inside that transaction,
    so this is for tests (``chimeway.testing.drain(cw, conn=...)``), never for providers
    that may be slow. One result per distinct id, in order."""
    ids = list(dict.fromkeys(delivery_ids))
    with conn.transaction():
        claimed, why_not = _claim_in(engine, conn, ids)
        profiles = _profiles(conn, claimed)
    sent = [
        _Sent(delivery, _send(engine, delivery, number, profiles)) for delivery, number in claimed
    ]
    with conn.transaction():
        recorded = {r.delivery_id: r for r in record_attempts(engine, conn, sent)}
    return [recorded.get(d) or DeliverResult(d, "skipped", why_not.get(d, "")) for d in ids]


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
