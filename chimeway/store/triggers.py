"""A trigger that plans one delivery, written in one statement: the common case of an app
notifying one user. Larger triggers write through the per-table batches of
:mod:`chimeway.store.events`, :mod:`~chimeway.store.runs` and
:mod:`~chimeway.store.deliveries`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.store import jobs
from chimeway.store.definitions import StepRow
from chimeway.store.deliveries import PlannedDelivery


@dataclass(frozen=True)
class NewEvent:
    tenant_id: str
    notification_key: str
    notification_version: int
    idempotency_key: str
    correlation_id: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class OneNotification:
    """The notification (its id chosen by the caller), and its run's definition and first
    step when it has a workflow (the delivery names the run's id)."""

    id: uuid.UUID
    recipient_type: str
    category: str | None
    assigns: dict[str, Any]
    contents: dict[str, dict[str, Any]]
    definition_id: uuid.UUID | None
    first_step: StepRow | None


@dataclass(frozen=True)
class WrittenOne:
    event_id: uuid.UUID
    delivery_id: uuid.UUID


def write_one(
    conn: Conn, event: NewEvent, notification: OneNotification, delivery: PlannedDelivery
) -> WrittenOne | None:
    """Write the event, its one notification, its run (``delivery.workflow_run_id``, if
    any), the planned delivery and its ``deliver`` job; ``None`` when (tenant, idempotency
    key) exists already."""
    step = notification.first_step
    with conn.cursor(row_factory=db.dataclass_row(WrittenOne)) as cur:
        return cur.execute(
            db.query("trigger_write_one"),
            {
                "tenant_id": event.tenant_id,
                "notification_key": event.notification_key,
                "notification_version": event.notification_version,
                "idempotency_key": event.idempotency_key,
                "correlation_id": event.correlation_id,
                "payload": Jsonb(event.payload),
                "notification_id": notification.id,
                "recipient_id": delivery.recipient_id,
                "recipient_type": notification.recipient_type,
                "category": notification.category,
                "assigns": Jsonb(notification.assigns),
                "contents": Jsonb(notification.contents),
                "definition_id": notification.definition_id,
                "run_id": delivery.workflow_run_id,
                "step_id": None if step is None else step.id,
                "step_key": None if step is None else step.step_key,
                "channel": delivery.channel,
                "render_data": Jsonb(delivery.render_data or {}),
                "max_attempts": delivery.max_attempts,
                "queue": jobs.QUEUES["deliver"],
                "task": jobs.TASKS["deliver"],
                "lock_prefix": jobs.DELIVER_LOCK,
            },
        ).fetchone()
