"""Provider feedback (design §12): a provider's webhook becomes ingress rows, and each row,
processed by its ``process_webhook`` job, becomes evidence and decisions.

:func:`process` verifies the webhook on its raw body, parses it into events, and writes one
ingress row per new event with its job, in one transaction; an event the provider sent
before is inert, and a request that is not authentic or not understood writes nothing.
Without a caller's connection, webhooks arriving at once share that transaction (group
commit, :mod:`chimeway.engine.batching`): one commit for many single-event requests.
:func:`process_ingress` then, in one transaction per row (lock order: the run, then the
delivery), finds the delivery the event is about and acts on it:

* ``delivered`` confirms the send: the row is the evidence, shown by ``explain_delivery``;
* ``bounced`` cancels the delivery (``bounced``), even after it ``succeeded``; ``failed``
  cancels it (``permanent_failure``) when the provider says it is permanent, else moves it
  to ``failed`` and schedules a retry on its retry policy (or cancels it,
  ``retries_exhausted``, when no attempt is left). A run still on that step is decided
  again with the new outcome, so ``OnOutcome("bounced")`` fires; after the run moved on,
  the feedback is recorded and explained only;
* ``opened`` / ``clicked`` become the signals ``chimeway.notification.opened`` /
  ``clicked`` of the recipient, which can end a wait;
* ``complained`` / ``unsubscribed`` turn the delivery's channel off for that recipient, for
  the notification's category (else its workflow): the preference row the message's own
  unsubscribe link writes (:func:`chimeway.policy.unsubscribe_scope`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from chimeway import telemetry
from chimeway.db import Conn
from chimeway.engine import signals
from chimeway.engine.context import Engine
from chimeway.engine.progression import progress_on_feedback
from chimeway.errors import InvalidArgument
from chimeway.feedback import FeedbackEvent
from chimeway.policy import unsubscribe_scope
from chimeway.results import Delivery, FeedbackProcessed, ProgressResult, WebhookResult
from chimeway.store import clock, deliveries, preferences, runs, webhooks
from chimeway.store.webhooks import Ingress
from chimeway.types import DeliveryReason, DeliveryStatus, FeedbackStatus, IngressState

logger = logging.getLogger(__name__)

S = DeliveryStatus
K = FeedbackStatus
#: What a provider's report of failure may overturn: a send it accepted, one still being
#: recorded, or one already retrying.
SENT = (S.DISPATCHED, S.SUCCEEDED, S.FAILED)
SIGNALS = {K.OPENED: "chimeway.notification.opened", K.CLICKED: "chimeway.notification.clicked"}


def process(
    engine: Engine,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str | None = None,
    conn: Conn | None = None,
) -> WebhookResult:
    """Verify, parse and store one webhook request (see the module)."""
    with telemetry.span("chimeway.webhook", provider=provider) as span:
        result = _process(engine, provider, body, headers, url, conn)
        span.set(events=result.events, duplicates=result.duplicates)
    telemetry.add("chimeway.webhook.events", result.events, provider=provider)
    return result


def _process(
    engine: Engine,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    url: str | None,
    conn: Conn | None,
) -> WebhookResult:
    verifier = engine.feedback_provider(provider)
    if not isinstance(body, bytes | bytearray):
        raise InvalidArgument(f"body must be the raw request bytes, got {type(body).__name__}")
    if not isinstance(headers, Mapping):
        raise InvalidArgument(f"headers must be a mapping, got {type(headers).__name__}")
    raw = bytes(body)
    verifier.verify(raw, headers, url)
    events = [dataclasses.replace(e, provider=verifier.name) for e in verifier.parse(raw, headers)]
    if not events:
        return WebhookResult(provider, 0)
    if conn is None:  # concurrent webhooks share a commit (group commit)
        stored = engine.webhook_ingress.submit(events, lambda batch: _store(engine, None, batch))
    else:
        [stored] = _store(engine, conn, [events])
    logger.info(
        "webhook stored",
        extra={
            "action": "webhook.stored",
            "provider": provider,
            "events": len(events),
            "stored": len(stored),
        },
    )
    return WebhookResult(provider, len(events), stored, len(events) - len(stored))


def _store(
    engine: Engine, conn: Conn | None, webhooks_events: Sequence[list[FeedbackEvent]]
) -> list[list[uuid.UUID]]:
    """Store the events of one or more webhooks with their jobs, in one transaction; for
    each webhook, the ids of its rows that are new."""
    given = [[(uuid.uuid4(), e) for e in events] for events in webhooks_events]
    with engine.transaction(conn) as tx:
        new = webhooks.insert(tx, [pair for pairs in given for pair in pairs])
        stored = [[i for i, _ in pairs if i in new] for pairs in given]
        engine.deferrer.process_webhooks(tx, [i for ids in stored for i in ids])
    return stored


def process_ingress(engine: Engine, conn: Conn, ingress_id: uuid.UUID) -> FeedbackProcessed:
    """Act on one ingress row, in the caller's transaction; processing twice does nothing."""
    row = webhooks.lock(conn, ingress_id)
    if row is None:
        return FeedbackProcessed(ingress_id, "ignored", detail="missing")
    if row.ingress_state != IngressState.QUEUED:
        return FeedbackProcessed(
            ingress_id, row.outcome or str(row.ingress_state), row.delivery_id, "already processed"
        )
    found = webhooks.target(conn, row.delivery_ref, row.provider_message_id)
    if found is None:
        why = "delivery_not_found" if row.delivery_ref else "provider_message_id_not_found"
        webhooks.finish(conn, ingress_id, IngressState.IGNORED, ignored_reason=why)
        _log(row, "webhook.ignored", None, reason=why)
        return FeedbackProcessed(ingress_id, "ignored", detail=why)
    # Lock order: the run, then the delivery.
    run = runs.lock_run(conn, found.workflow_run_id) if found.workflow_run_id else None
    delivery = deliveries.lock_many(conn, [found.id])[found.id]
    outcome, moved = _act(engine, conn, row, delivery)
    run_result: ProgressResult | None = None
    if moved is not None and run is not None:
        run_result = progress_on_feedback(engine, conn, run, moved, _context(row, moved))
    webhooks.finish(
        conn, ingress_id, IngressState.PROCESSED, delivery_id=delivery.id, outcome=outcome
    )
    _log(row, "webhook.processed", delivery, outcome=outcome)
    return FeedbackProcessed(ingress_id, outcome, delivery.id, run_result=run_result)


def process_ingress_now(engine: Engine, ingress_id: uuid.UUID) -> FeedbackProcessed:
    """:func:`process_ingress` in a transaction of its own (what the job does)."""
    with (
        telemetry.span("chimeway.webhook.process", ingress_id=ingress_id) as span,
        engine.pool.connection() as conn,
        conn.transaction(),
    ):
        processed = process_ingress(engine, conn, ingress_id)
        span.set(outcome=processed.outcome, delivery_id=processed.delivery_id)
        return processed


def _act(
    engine: Engine, conn: Conn, row: Ingress, delivery: Delivery
) -> tuple[str, Delivery | None]:
    """Do what the event says to the (locked) delivery: the outcome's name, and the
    delivery as moved when its status changed."""
    kind = FeedbackStatus(row.kind)
    if kind == K.DELIVERED:
        return "confirmed", None
    if kind in SIGNALS:
        signals.track_signal(
            engine,
            delivery.tenant_id,
            delivery.recipient_id,
            SIGNALS[kind],
            {"delivery_id": str(delivery.id), "channel": delivery.channel},
            idempotency_key=f"feedback:{row.id}",
            conn=conn,
        )
        return "signal_tracked", None
    if kind in (K.COMPLAINED, K.UNSUBSCRIBED):
        # The rule the message's own unsubscribe link would have set.
        scope = unsubscribe_scope(
            delivery.channel,
            category=delivery.category or webhooks.category(conn, delivery.id),
            workflow=delivery.workflow_key,
        )
        preferences.set_rule(
            conn,
            tenant_id=delivery.tenant_id,
            recipient_id=delivery.recipient_id,
            channel=scope.channel,
            category=scope.category,
            workflow=scope.workflow,
            enabled=False,
            source=f"{kind}:{row.provider}",
            set_at=row.occurred_at,
        )
        return "opted_out", None
    if delivery.status not in SENT:
        return "unchanged", None
    if kind == K.BOUNCED or row.permanent:
        reason = DeliveryReason.BOUNCED if kind == K.BOUNCED else DeliveryReason.PERMANENT_FAILURE
        moved = _move(conn, row, delivery, S.CANCELLED, reason)
        return f"cancelled_{reason}", moved
    if delivery.status == S.FAILED:  # already retrying: the retry ladder goes on
        return "unchanged", None
    return _fail(engine, conn, row, delivery)


def _fail(
    engine: Engine, conn: Conn, row: Ingress, delivery: Delivery
) -> tuple[str, Delivery | None]:
    """A temporary failure after the send: retried like a failed attempt, or cancelled when
    the delivery has no attempt left."""
    made = len(deliveries.attempts(conn, delivery.id))
    if made >= delivery.max_attempts:
        _move(conn, row, delivery, S.FAILED, None)
        moved = _move(conn, row, delivery, S.CANCELLED, DeliveryReason.RETRIES_EXHAUSTED)
        return "cancelled_retries_exhausted", moved
    retry_at = clock.now(conn) + engine.retry_policy(delivery.channel).delay(max(made, 1))
    moved = _move(conn, row, delivery, S.FAILED, None, retry_at)
    engine.deferrer.deliver_if_not_queued(conn, delivery.id, schedule_at=retry_at)
    return "failed", moved


def _move(
    conn: Conn,
    row: Ingress,
    delivery: Delivery,
    to: DeliveryStatus,
    reason: DeliveryReason | None,
    retry_at: Any = None,
) -> Delivery | None:
    return deliveries.transition(
        conn,
        delivery.id,
        to,
        reason=str(reason) if reason else "provider_feedback",
        suppression_reason=reason,
        context=_context(row, delivery),
        retry_at=retry_at,
        strict=False,
    )


def _context(row: Ingress, delivery: Delivery) -> dict[str, Any]:
    """The feedback as history and traces keep it: ids, kind and safe evidence only."""
    return {
        "source": "provider_feedback",
        "provider": row.provider,
        "feedback_kind": str(row.kind),
        "provider_event_id": row.provider_event_id,
        "ingress_id": str(row.id),
        "permanent": row.permanent,
        "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
        "evidence": row.evidence,
        "delivery_id": str(delivery.id),
    }


def _log(row: Ingress, action: str, delivery: Delivery | None, **details: Any) -> None:
    logger.info(
        action.replace(".", " "),
        extra={
            "action": action,
            "provider": row.provider,
            "ingress_id": str(row.id),
            "kind": str(row.kind),
            "tenant_id": delivery.tenant_id if delivery else None,
            "delivery_id": str(delivery.id) if delivery else None,
            **details,
        },
    )
