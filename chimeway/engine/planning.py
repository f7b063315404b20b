"""Planning: THE one place a delivery is planned (design §2, §13).

A trigger's fan-out and a run's next step both plan their deliveries here, in the caller's
transaction: the rows, their ``planned`` history and the jobs that will send them. This is
where the recipient's profile, preferences, quiet hours, caps, throttles and batching decide
whether a delivery is sent now, later or not at all, so no path can skip them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chimeway.db import Conn
from chimeway.engine import recipients
from chimeway.engine.context import Engine
from chimeway.store import deliveries
from chimeway.store.deliveries import PlannedDelivery, PlannedRow
from chimeway.types import DeliveryReason


@dataclass(frozen=True)
class DeliveryPlan:
    """A delivery to plan: a notification on a channel, or the delivery of a run's step."""

    notification_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    #: The content to send; ``None`` takes what the notification rendered for the channel
    #: when it was triggered (a workflow's later steps).
    render_data: dict[str, Any] | None
    workflow_run_id: uuid.UUID | None = None
    workflow_step_id: uuid.UUID | None = None


def plan(engine: Engine, conn: Conn, plans: Sequence[DeliveryPlan]) -> list[PlannedRow]:
    """Plan the deliveries and defer the jobs that send them, in ``conn``'s transaction.
    A delivery that exists already (same notification and channel, or same run step) is
    skipped: planning twice plans once. The planned rows, in input order, each with its
    status: ``pending`` (a job will send it) or already terminal (``suppressed``, with its
    reason and evidence in the row and its history), which the caller acts on.

    Decisions made here: a channel whose adapter needs an address (``adapter.address``:
    ``"email"`` or ``"phone"``) that the recipient's profile lacks is ``suppressed``
    (``no_address``)."""
    lacking = _lacking_address(engine, conn, plans)
    rows = deliveries.insert_many(
        conn,
        [
            PlannedDelivery(
                notification_id=p.notification_id,
                tenant_id=p.tenant_id,
                recipient_id=p.recipient_id,
                channel=p.channel,
                render_data=p.render_data,
                max_attempts=engine.retry_policy(p.channel).max_attempts,
                workflow_run_id=p.workflow_run_id,
                workflow_step_id=p.workflow_step_id,
                suppressed=DeliveryReason.NO_ADDRESS if i in lacking else None,
                context={"needs": lacking[i]} if i in lacking else None,
            )
            for i, p in enumerate(plans)
        ],
        # The jobs of the pending ones, in the same statement.
        jobs=engine.deferrer.plan_spec(len(plans) - len(lacking)),
    )
    return rows


def _lacking_address(engine: Engine, conn: Conn, plans: Sequence[DeliveryPlan]) -> dict[int, str]:
    """Index of each plan whose channel needs an address its recipient has not -> the
    address field it needs. One read of the directory, only when some channel needs one."""
    needs = {channel: engine.address_for(channel) for channel in {p.channel for p in plans}}
    wanted = {(p.tenant_id, p.recipient_id) for p in plans if needs[p.channel]}
    if not wanted:
        return {}
    have = recipients.addresses(conn, wanted)
    lacking: dict[int, str] = {}
    for i, p in enumerate(plans):
        need = needs[p.channel]
        if need and need not in have.get((p.tenant_id, p.recipient_id), frozenset()):
            lacking[i] = need
    return lacking
