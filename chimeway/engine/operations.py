"""Operator actions and lookups: cancel a run, redrive a delivery, find a tenant's deliveries
by recipient, idempotency key or correlation id (the support question: "what happened to
user X's notification about order Y?").

Every call is tenant-scoped: another tenant's run or delivery is reported exactly like a
missing one (``NotFound``), and a lookup never lists another tenant's rows. The moves go
through the two guarded transition functions (``store.runs.update_runs``,
``store.deliveries.transition_many``), with history rows that say who did it and why, so
``chimeway trace`` and ``chimeway deliveries explain`` show it; the job a move needs is
deferred in the same transaction.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from chimeway.db import Conn
from chimeway.engine.context import Engine
from chimeway.errors import InvalidArgument, InvalidTransition, NotFound
from chimeway.inputs import identifier, limit, non_blank
from chimeway.results import DeliveryRedriven, DeliverySummary, RunCancelled
from chimeway.storable import preview
from chimeway.store import deliveries, digests, runs
from chimeway.types import DeliveryReason, DeliveryStatus, RunState

logger = logging.getLogger(__name__)

#: The run's ``status_reason`` and ``terminal_reason`` after a cancel, and its transition's.
CANCELLED = "cancelled"
RUN_CANCELLED = "run_cancelled"
#: The history reason of a redriven delivery's move back to ``pending``.
REDRIVEN = "redriven"
#: Cancelled deliveries a redrive may send again: those that gave up on the provider. A
#: bounce (the address is bad), an opt-out, a superseded step or a cancelled run are not.
REDRIVABLE = frozenset(
    {
        DeliveryReason.RETRIES_EXHAUSTED,
        DeliveryReason.PERMANENT_FAILURE,
        DeliveryReason.ABANDONED,
    }
)
#: Free text an operator gives (a reason, a name) is kept this short.
MAX_NOTE_CHARS = 500
#: The most rows one lookup returns.
MAX_FIND = 1000


def _close_digest(conn: Conn, run_id: uuid.UUID) -> list[uuid.UUID]:
    """Close the run's digest if it is still open; its members' held deliveries."""
    digest = digests.lock_by_runs(conn, [run_id]).get(run_id)
    if digest is None or not digests.cancel(conn, [digest.id]):
        return []
    return [
        m.delivery_id
        for m in digests.members(conn, [digest.id]).get(digest.id, [])
        if m.delivery_id is not None
    ]


def cancel_run(
    engine: Engine,
    conn: Conn,
    tenant_id: str,
    run_id: uuid.UUID,
    reason: str,
    cancelled_by: str | None = None,
) -> RunCancelled:
    """Stop the run (``active`` or ``waiting``) and cancel its deliveries that are still to
    be sent, in the caller's transaction: the run is locked first, then its deliveries (the
    lock order of progression), so a cancel racing a progression step ends in one outcome
    (the step happens first and its new delivery is cancelled too, or the cancel happens
    first and the step finds the run stopped). A finished run is left as it is."""
    tenant = identifier("tenant_id", tenant_id, InvalidArgument)
    why = non_blank("reason", reason, InvalidArgument, max_chars=MAX_NOTE_CHARS)
    who = _who("cancelled_by", cancelled_by)
    runs.explain(conn, tenant, run_id)  # NotFound for a missing run or another tenant's
    run = runs.lock_run(conn, run_id)
    if run is None:  # removed (retention) since the read
        raise NotFound(f"workflow run {run_id} not found")
    if run.state not in (RunState.ACTIVE, RunState.WAITING):
        return RunCancelled(run.id, cancelled=False, state=RunState(run.state))
    context: dict[str, Any] = {"cancelled_by": who, "reason": why}
    # A run still collecting a digest closes it (lock order: runs, digests, deliveries), and
    # its members' held deliveries are cancelled with the run's own: nothing joins a batch
    # that will never be sent, nothing stays held for it.
    held = _close_digest(conn, run.id)
    open_ids = [
        d.id
        for d in deliveries.lock_many(
            conn, [*runs.delivery_ids(conn, tenant, run.id), *held]
        ).values()
        if d.status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
    ]
    moved = deliveries.transition_many(
        conn,
        [
            deliveries.Move(
                d, DeliveryStatus.CANCELLED, RUN_CANCELLED, DeliveryReason.MANUAL, context
            )
            for d in sorted(open_ids)
        ],
        only_from=[DeliveryStatus.PENDING, DeliveryStatus.FAILED],
    )
    runs.update_runs(
        conn,
        [
            runs.Move(
                run,
                RunState.STOPPED,
                CANCELLED,
                status_context=context,
                terminal_reason=CANCELLED,
                records=[runs.Record(RUN_CANCELLED, context, step_id=run.current_step_id)],
            )
        ],
    )
    logger.info(
        "run cancelled",
        extra={
            "action": "run.cancelled",
            "tenant_id": tenant,
            "run_id": str(run.id),
            "deliveries_cancelled": len(moved),
        },
    )
    return RunCancelled(run.id, True, RunState.STOPPED, [d.id for d in moved])


def redrive_delivery(
    engine: Engine,
    conn: Conn,
    tenant_id: str,
    delivery_id: uuid.UUID,
    redriven_by: str | None = None,
) -> DeliveryRedriven:
    """Send a failed delivery now (not at its retry time), or a delivery cancelled after its
    provider gave up (:data:`REDRIVABLE`) once more: it moves back to ``pending`` and its
    ``deliver`` job is deferred, in the caller's transaction. A redriven delivery whose
    attempts were all used gets one more attempt; policy is asked again at its claim.
    Anything else is an :class:`InvalidTransition` that says why."""
    tenant = identifier("tenant_id", tenant_id, InvalidArgument)
    who = _who("redriven_by", redriven_by)
    found = deliveries.get_for_tenant(conn, tenant, delivery_id)  # NotFound across tenants
    status = DeliveryStatus(found.status)
    reason = None if found.suppression_reason is None else DeliveryReason(found.suppression_reason)
    if not (
        status == DeliveryStatus.FAILED
        or (status == DeliveryStatus.CANCELLED and reason in REDRIVABLE)
    ):
        shown = f"{status}({reason})" if reason else str(status)
        raise InvalidTransition(
            f"delivery {delivery_id} is {shown}; only a failed delivery, or one cancelled "
            f"as {', '.join(sorted(REDRIVABLE))}, can be redriven"
        )
    context: dict[str, Any] = {"redriven_by": who, "previous_reason": reason}
    moved = deliveries.transition_many(
        conn,
        [deliveries.Move(delivery_id, DeliveryStatus.PENDING, REDRIVEN, context=context)],
        only_from=[status],
    )
    if not moved:  # a worker moved it since the read (a retry was claimed)
        raise InvalidTransition(f"delivery {delivery_id} is no longer {status}; try again")
    engine.deferrer.deliver_if_not_queued(conn, delivery_id)
    logger.info(
        "delivery redriven",
        extra={
            "action": "delivery.redriven",
            "tenant_id": tenant,
            "delivery_id": str(delivery_id),
            "previous_status": str(status),
        },
    )
    return DeliveryRedriven(delivery_id, status, reason)


def find(
    conn: Conn,
    tenant_id: str,
    *,
    recipient: str | None = None,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    status: DeliveryStatus | str | None = None,
    limit_to: int = 100,
) -> list[DeliverySummary]:
    """The tenant's deliveries to ``recipient``, of the event with ``idempotency_key``, or
    of the events with ``correlation_id`` (at most one of the three; none: all of the
    tenant's), optionally only those in ``status``, newest first."""
    tenant = identifier("tenant_id", tenant_id, InvalidArgument)
    given = [
        (key, name, value)
        for key, name, value in (
            ("recipient_id", "recipient", recipient),
            ("idempotency_key", "idempotency_key", idempotency_key),
            ("correlation_id", "correlation_id", correlation_id),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise InvalidArgument(
            "find by one of recipient, idempotency_key or correlation_id, not "
            + " and ".join(name for _, name, _ in given)
        )
    key, value = None, None
    if given:
        key, name, raw = given[0]
        value = identifier(name, raw, InvalidArgument)
    wanted = None
    if status is not None:
        if not isinstance(status, str) or status not in {s.value for s in DeliveryStatus}:
            raise InvalidArgument(
                f"unknown delivery status {preview(status)}; expected one of "
                f"{', '.join(s.value for s in DeliveryStatus)}"
            )
        wanted = DeliveryStatus(status)
    count = limit("limit", limit_to, InvalidArgument, maximum=MAX_FIND)
    return deliveries.find(conn, tenant, key=key, value=value, status=wanted, limit=count)


def _who(name: str, value: str | None) -> str | None:
    return None if value is None else non_blank(name, value, InvalidArgument, max_chars=200)
