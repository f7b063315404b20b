"""Events and their notifications, written by a trigger."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn

#: Rows per INSERT when a fan-out writes thousands of notifications.
BATCH_SIZE = 1000


def insert(
    conn: Conn,
    *,
    tenant_id: str,
    notification_key: str,
    notification_version: int,
    idempotency_key: str,
    correlation_id: str | None,
    payload: dict[str, Any],
    traceparent: str | None = None,
) -> uuid.UUID | None:
    """The new event's id, or ``None`` when (tenant, idempotency key) exists already (even
    when a concurrent transaction wrote it). ``traceparent``: the W3C trace context of the
    trigger's span, continued by its sends."""
    row = conn.execute(
        db.query("event_insert"),
        {
            "tenant_id": tenant_id,
            "notification_key": notification_key,
            "notification_version": notification_version,
            "idempotency_key": idempotency_key,
            "correlation_id": correlation_id,
            "payload": Jsonb(payload),
            "traceparent": traceparent,
        },
    ).fetchone()
    return None if row is None else row[0]


def find(conn: Conn, tenant_id: str, idempotency_key: str) -> uuid.UUID | None:
    row = conn.execute(
        db.query("event_find"), {"tenant_id": tenant_id, "idempotency_key": idempotency_key}
    ).fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class NewNotification:
    recipient_id: str
    recipient_type: str
    assigns: dict[str, Any]
    contents: dict[str, dict[str, Any]]  # channel -> validated content


@dataclass(frozen=True)
class _Inserted:
    id: uuid.UUID
    recipient_id: str


def insert_notifications(
    conn: Conn,
    event_id: uuid.UUID,
    tenant_id: str,
    category: str | None,
    new: Sequence[NewNotification],
) -> list[uuid.UUID]:
    """Insert one notification per recipient, in batches; ids come back in input order."""
    by_recipient: dict[str, uuid.UUID] = {}
    with conn.cursor(row_factory=db.dataclass_row(_Inserted)) as cur:
        for start in range(0, len(new), BATCH_SIZE):
            chunk = new[start : start + BATCH_SIZE]
            cur.execute(
                db.query("notification_insert_batch"),
                {
                    "event_id": event_id,
                    "tenant_id": tenant_id,
                    "category": category,
                    "recipient_ids": [n.recipient_id for n in chunk],
                    "recipient_types": [n.recipient_type for n in chunk],
                    "assigns": [Jsonb(n.assigns) for n in chunk],
                    "contents": [Jsonb(n.contents) for n in chunk],
                },
            )
            by_recipient.update((row.recipient_id, row.id) for row in cur.fetchall())
    return [by_recipient[n.recipient_id] for n in new]
