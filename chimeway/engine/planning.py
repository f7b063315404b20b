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
from chimeway.engine.context import Engine
from chimeway.store import deliveries
from chimeway.store.deliveries import PlannedDelivery, PlannedRow


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
    skipped: planning twice plans once. The planned rows, in input order."""
    rows = deliveries.insert_many(conn, prepare(engine, plans))
    engine.deferrer.deliver(conn, [r.id for r in rows])
    return rows


def prepare(engine: Engine, plans: Sequence[DeliveryPlan]) -> list[PlannedDelivery]:
    """The delivery rows to write for these plans, in order (what :func:`plan` inserts; a
    trigger that plans one delivery writes it in the same statement as its event)."""
    return [
        PlannedDelivery(
            notification_id=p.notification_id,
            tenant_id=p.tenant_id,
            recipient_id=p.recipient_id,
            channel=p.channel,
            render_data=p.render_data,
            max_attempts=engine.retry_policy(p.channel).max_attempts,
            workflow_run_id=p.workflow_run_id,
            workflow_step_id=p.workflow_step_id,
        )
        for p in plans
    ]
