"""Operator reads: where a run is and why, its trace, a tenant's runs, and a delivery's whole
story with the answer to "why did / didn't it send?". Every read is tenant-scoped: another
tenant's row is reported exactly like a missing one (NotFound)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from chimeway.db import Conn
from chimeway.engine.operations import REDRIVEN, RUN_CANCELLED
from chimeway.errors import InvalidArgument, NotFound
from chimeway.inputs import identifier, limit
from chimeway.policy import sentences
from chimeway.policy.decision import QUIET_HOURS, THROTTLED
from chimeway.results import (
    Attempt,
    Delivery,
    DeliveryExplanation,
    DeliveryTransition,
    DigestExplanation,
    RunExplanation,
    TimelineEntry,
    Transition,
)
from chimeway.store import deliveries, digests, runs, webhooks
from chimeway.store.deliveries import Header
from chimeway.store.webhooks import Received
from chimeway.types import DeliveryReason, DeliveryStatus, RunState

#: The most rows one list read returns.
MAX_LIMIT = 10_000
#: Suppression reasons policy gives (their sentences come from the decision's evidence).
POLICY_REASONS = frozenset(
    {
        DeliveryReason.CHANNEL_DISABLED,
        DeliveryReason.CATEGORY_DISABLED,
        DeliveryReason.WORKFLOW_DISABLED,
        DeliveryReason.DELIVERY_CAP_REACHED,
    }
)


def explain_run(conn: Conn, tenant_id: str, run_id: uuid.UUID) -> RunExplanation:
    return runs.explain(conn, _tenant(tenant_id), run_id)


def list_traces(
    conn: Conn, tenant_id: str, run_id: uuid.UUID, limit: int | None = None
) -> list[Transition]:
    """The run's transitions, oldest first (at most ``limit``)."""
    return runs.list_traces(
        conn, _tenant(tenant_id), run_id, None if limit is None else _limit(limit)
    )


def list_runs(
    conn: Conn,
    tenant_id: str,
    *,
    state: RunState | str | None = None,
    workflow_key: str | None = None,
    limit: int = 50,
) -> list[RunExplanation]:
    """A tenant's runs, newest first."""
    if workflow_key is not None:
        identifier("workflow_key", workflow_key, InvalidArgument)
    return runs.list_runs(
        conn, _tenant(tenant_id), state=state, workflow_key=workflow_key, limit=_limit(limit)
    )


def run_delivery_ids(conn: Conn, tenant_id: str, run_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of a run's deliveries, in step order."""
    return runs.delivery_ids(conn, _tenant(tenant_id), run_id)


def delivery(conn: Conn, tenant_id: str, delivery_id: uuid.UUID) -> Delivery:
    return deliveries.get_for_tenant(conn, _tenant(tenant_id), delivery_id)


def _limit(value: Any) -> int:
    return limit("limit", value, InvalidArgument, maximum=MAX_LIMIT)


def _tenant(value: Any) -> str:
    return identifier("tenant_id", value, InvalidArgument)


def explain_delivery(conn: Conn, tenant_id: str, delivery_id: uuid.UUID) -> DeliveryExplanation:
    head = deliveries.explain_header(conn, _tenant(tenant_id), delivery_id)
    if head is None:
        raise NotFound(f"delivery {delivery_id} not found")
    attempts = deliveries.attempts(conn, delivery_id)
    feedback = webhooks.for_delivery(conn, delivery_id)
    moves = deliveries.transitions(conn, delivery_id)
    timeline = _timeline(conn, head, attempts, feedback, moves)
    digest = _digest(conn, head.tenant_id, delivery_id)
    reason = why(head, attempts, feedback, moves)
    return DeliveryExplanation(
        delivery_id=head.id,
        tenant_id=head.tenant_id,
        event_id=head.event_id,
        notification_id=head.notification_id,
        notification_key=head.notification_key,
        correlation_id=head.correlation_id,
        recipient_id=head.recipient_id,
        channel=head.channel,
        status=DeliveryStatus(head.status),
        suppression_reason=head.suppression_reason,
        workflow_run_id=head.workflow_run_id,
        workflow_step=head.step_key,
        attempts=attempts,
        timeline=timeline,
        why=reason if digest is None else digest_why(digest, head.status, reason),
        decisions=policy_decisions(head, moves),
        digest=digest,
    )


def _digest(conn: Conn, tenant_id: str, delivery_id: uuid.UUID) -> DigestExplanation | None:
    found = digests.for_delivery(conn, tenant_id, delivery_id)
    if found is None:
        return None
    return DigestExplanation(
        digest_id=found.id,
        role=found.role,
        position=found.position,
        state=str(found.state),
        members=found.member_count,
        opened_at=found.opened_at,
        closes_at=found.closes_at,
        closed_at=found.closed_at,
        close_reason=found.close_reason,
        run_id=found.run_id,
        delivery_id=found.delivery_id,
        delivery_status=None
        if found.delivery_status is None
        else DeliveryStatus(found.delivery_status),
        notification_ids=[m.notification_id for m in digests.members(conn, [found.id])[found.id]],
    )


_CLOSED_BY = {
    "window_elapsed": "its window ended",
    "max_items": "it reached max_items",
    "run_cancelled": "its run was cancelled",
}


def digest_why(digest: DigestExplanation, status: str, said: str) -> str:
    """Why, for a delivery of a batch: a member's is folded into (or held for) the digest;
    the digest's own says what it collected, then what became of it."""
    closed = (
        f"closed at {digest.closed_at:%Y-%m-%d %H:%M:%S %Z} "
        f"({_CLOSED_BY.get(digest.close_reason or '', digest.close_reason)})"
        if digest.closed_at
        else f"closes at {digest.closes_at:%Y-%m-%d %H:%M:%S %Z}"
    )
    if digest.role == "digest":
        return f"The digest of {digest.members} notifications, {closed}. {said}"
    if status == DeliveryStatus.DIGESTED:
        sent = (
            "sent"
            if digest.delivery_status == DeliveryStatus.SUCCEEDED
            else f"now {digest.delivery_status}"
        )
        return (
            f"Not sent on its own: folded, as item {digest.position} of {digest.members}, "
            f"into the digest delivery {digest.delivery_id} ({sent}); the batch {closed}."
        )
    return (
        f"Not sent yet: held as item {digest.position} of a batch that {closed}; "
        "it is then folded into one digest."
    )


def policy_decisions(head: Header, moves: Sequence[DeliveryTransition]) -> list[str]:
    """Each policy decision in the delivery's history, in one sentence, oldest first."""
    said = []
    for move in moves:
        context = move.context
        if move.to_status == DeliveryStatus.SUPPRESSED and _evidence(move.reason, context):
            said.append(_describe(head, move.reason, context))
        elif move.reason == "deferred" and isinstance(context.get("rule"), str):
            said.append(_describe(head, context["rule"], context))
        elif isinstance(context.get("critical_bypass"), dict):
            said.append(
                sentences.bypassed(context["critical_bypass"], recipient_id=head.recipient_id)
            )
    return said


def _evidence(reason: str, context: dict[str, Any]) -> bool:
    """Whether a suppression was policy's, with the evidence a sentence needs (an operator's
    own move with a policy reason has none)."""
    if reason == DeliveryReason.NO_ADDRESS:
        return "needs" in context
    return reason in POLICY_REASONS and context.get("rule") == reason


def _describe(head: Header, reason: str, context: dict[str, Any]) -> str:
    return sentences.describe(reason, context, recipient_id=head.recipient_id, channel=head.channel)


def _timeline(
    conn: Conn,
    head: Header,
    attempts: list[Attempt],
    feedback: list[Received],
    moves: Sequence[DeliveryTransition],
) -> list[TimelineEntry]:
    # (time, rank) orders entries; within one transaction's timestamp an attempt comes before
    # the status move it caused, and that before the workflow decision it led to.
    entries: list[tuple[dt.datetime, int, TimelineEntry]] = [
        (
            head.event_created_at,
            0,
            TimelineEntry(
                head.event_created_at,
                "event_created",
                {
                    "notification_key": head.notification_key,
                    "idempotency_key": head.idempotency_key,
                    "correlation_id": head.correlation_id,
                },
            ),
        ),
        (
            head.notification_created_at,
            1,
            TimelineEntry(
                head.notification_created_at,
                "notification_created",
                {"recipient_id": head.recipient_id},
            ),
        ),
    ]
    for attempt in attempts:
        entries.append(
            (
                attempt.finished_at,
                2,
                TimelineEntry(
                    attempt.finished_at,
                    "attempt_recorded",
                    {
                        "attempt_number": attempt.attempt_number,
                        "outcome": attempt.outcome,
                        "error_class": attempt.error_class,
                        "error": attempt.error,
                        "provider_message_id": attempt.provider_message_id,
                    },
                ),
            )
        )
    for received in feedback:  # provider feedback, when it was processed (before its effects)
        at = received.processed_at or received.created_at
        entries.append(
            (
                at,
                2,
                TimelineEntry(
                    at,
                    "feedback_received",
                    {
                        "provider": received.provider,
                        "kind": str(received.kind),
                        "provider_event_id": received.provider_event_id,
                        "occurred_at": received.occurred_at,
                        "permanent": received.permanent,
                        "evidence": received.evidence,
                        "outcome": received.outcome,
                    },
                ),
            )
        )
    for move in moves:
        event = "delivery_planned" if move.from_status is None else f"delivery_{move.to_status}"
        detail: dict[str, Any] = {
            "from": move.from_status,
            "to": move.to_status,
            "reason": move.reason,
            **move.context,
        }
        entries.append((move.created_at, 3, TimelineEntry(move.created_at, event, detail)))
    for row in runs.transitions_for_delivery(conn, head.tenant_id, head.id):
        entries.append(
            (
                row.created_at,
                4,
                TimelineEntry(
                    row.created_at,
                    f"workflow_{row.reason}",
                    {"from": row.from_state, "to": row.to_state, **row.context},
                ),
            )
        )
    entries.sort(key=lambda e: (e[0], e[1]))
    return [entry for _, _, entry in entries]


def why(
    head: Header,
    attempts: list[Attempt],
    feedback: Sequence[Received] = (),
    moves: Sequence[DeliveryTransition] = (),
) -> str:
    """One sentence: why this delivery did or did not send."""
    reported = next(
        (f for f in reversed(feedback) if f.outcome and f.outcome.startswith("cancelled_")), None
    )
    if head.status == DeliveryStatus.CANCELLED and reported is not None:
        what = "a bounce" if reported.kind == "bounced" else "a failure"
        return (
            f"Not delivered: the provider reported {what} ({reported.provider}) after it "
            f"accepted the message on attempt {len(attempts)}."
        )
    last = attempts[-1] if attempts else None
    n = len(attempts)
    error = f": {last.error}" if last and last.error else ""
    status = DeliveryStatus(head.status)
    reason = head.suppression_reason
    if status == DeliveryStatus.SUCCEEDED:
        pmid = (
            f" (provider message id {head.provider_message_id})" if head.provider_message_id else ""
        )
        return f"Sent: the {head.channel} adapter accepted it on attempt {n}{pmid}."
    if status == DeliveryStatus.SUPPRESSED and reason == DeliveryReason.NO_ADDRESS:
        return (
            f"Not sent: suppressed (no_address): the {head.channel} adapter needs the "
            "recipient's address, which their profile lacks."
        )
    move = next((m for m in reversed(moves) if m.to_status == status), None)
    if status == DeliveryStatus.SUPPRESSED and move and _evidence(move.reason, move.context):
        return _describe(head, move.reason, move.context)
    if status == DeliveryStatus.SUPPRESSED:
        return f"Not sent: suppressed ({reason}) before any attempt."
    if status == DeliveryStatus.CANCELLED:
        if reason == DeliveryReason.RETRIES_EXHAUSTED:
            return f"Not sent: all {n} attempts failed temporarily; the last error was{error}."
        if reason == DeliveryReason.PERMANENT_FAILURE:
            return f"Not sent: the provider rejected it permanently on attempt {n}{error}."
        if reason == DeliveryReason.BOUNCED:
            return f"Not delivered: it bounced on attempt {n}{error}."
        if reason == DeliveryReason.ABANDONED:
            lost = sum(1 for a in attempts if (a.error or "").startswith("interrupted"))
            return (
                f"Not sent for sure: {lost} sends were interrupted (their process stopped "
                "before it recorded an outcome, so each may or may not have reached the "
                f"provider); abandoned after {lost - 1} takeovers."
            )
        if move is not None and move.reason == RUN_CANCELLED:
            return f"Not sent: {_by(move.context, 'cancelled_by')} cancelled its run" + (
                f" ({move.context['reason']})." if move.context.get("reason") else "."
            )
        return f"Not sent: cancelled ({reason or 'manual'})."
    if status == DeliveryStatus.FAILED:
        return (
            f"Not sent yet: attempt {n} of {head.max_attempts} failed temporarily{error}; "
            f"the next attempt is due at {head.retry_at:%Y-%m-%d %H:%M:%S %Z}."
            if head.retry_at
            else f"Not sent yet: attempt {n} failed temporarily{error}."
        )
    if status == DeliveryStatus.DISPATCHED:
        return f"Being sent: a worker claimed it at {head.status_changed_at:%Y-%m-%d %H:%M:%S %Z}."
    if status == DeliveryStatus.DIGESTED:
        return "Not sent on its own: it was included in a digest."
    if head.orchestration_state == "deferred" and head.next_eligible_at:
        if head.planning_reason in (QUIET_HOURS, THROTTLED):
            return f"Not sent yet: {_describe(head, head.planning_reason, head.planning_context)}"
        return (
            f"Not sent yet: deferred until {head.next_eligible_at:%Y-%m-%d %H:%M:%S %Z}"
            f" ({head.planning_reason})."
        )
    if move is not None and move.reason == REDRIVEN:
        return (
            f"Not sent yet: {_by(move.context, 'redriven_by')} redrove it; its delivery job "
            "is waiting for a worker."
        )
    return "Not sent yet: its delivery job is waiting for a worker."


def _by(context: dict[str, Any], key: str) -> str:
    who = context.get(key)
    return f"{who} (an operator)" if who else "an operator"
