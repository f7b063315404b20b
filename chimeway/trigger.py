"""``trigger``: event -> notifications -> (runs) -> deliveries -> jobs, in one transaction.

Everything the notifier computes (recipients, assigns, channels, rendered and validated
content, workflows) is resolved before the first write, so bad input raises a
:class:`ChimewayError` and writes nothing. The writes then run in the caller's transaction
(inside a savepoint) or in a transaction of their own, in batches, and end with one batch
defer of the delivery jobs on the same connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from chimeway import db, deliveries, workflows
from chimeway.deliveries import PlannedDelivery
from chimeway.errors import InvalidTrigger
from chimeway.inputs import json_object, non_blank
from chimeway.notifiers import (
    Notifier,
    PlannedNotification,
    plan_notification,
    resolve_notifier,
    resolve_recipients,
)
from chimeway.redaction import redact
from chimeway.results import Duplicate, Triggered

if TYPE_CHECKING:
    from chimeway.app import Chimeway

Conn = psycopg.Connection[Any]
BATCH_SIZE = 1000


def trigger(
    cw: Chimeway,
    notifier: type[Notifier] | Notifier,
    params: Mapping[str, Any],
    *,
    tenant_id: str,
    idempotency_key: str,
    correlation_id: str | None = None,
    conn: Conn | None = None,
) -> Triggered | Duplicate:
    tenant_id = non_blank("tenant_id", tenant_id, InvalidTrigger)
    idempotency_key = non_blank("idempotency_key", idempotency_key, InvalidTrigger)
    if correlation_id is not None:
        non_blank("correlation_id", correlation_id, InvalidTrigger)
    payload = json_object("params", params, InvalidTrigger)
    resolved = resolve_notifier(notifier)
    plans = [
        plan_notification(resolved, payload, recipient, cw.content_schemas)
        for recipient in resolve_recipients(resolved, payload)
    ]
    with cw.transaction(conn) as tx:
        row = tx.execute(
            db.query("event_insert"),
            {
                "tenant_id": tenant_id,
                "notification_key": resolved.key,
                "notification_version": resolved.version,
                "idempotency_key": idempotency_key,
                "correlation_id": correlation_id,
                "payload": Jsonb(redact(payload)),
            },
        ).fetchone()
        if row is None:
            found = tx.execute(
                db.query("event_find"),
                {"tenant_id": tenant_id, "idempotency_key": idempotency_key},
            ).fetchone()
            if found is None:
                # Committed after this transaction's snapshot (REPEATABLE READ callers).
                raise InvalidTrigger(
                    f"an event with idempotency key {idempotency_key!r} was written "
                    "concurrently and is not visible to this transaction; it is a duplicate"
                )
            return Duplicate(found[0])
        event_id: uuid.UUID = row[0]
        return _write(cw, tx, resolved, plans, event_id, tenant_id)


def _write(
    cw: Chimeway,
    tx: Conn,
    notifier: Notifier,
    plans: list[PlannedNotification],
    event_id: uuid.UUID,
    tenant_id: str,
) -> Triggered:
    notification_ids = _insert_notifications(tx, notifier, plans, event_id, tenant_id)
    # One lookup per distinct workflow, in (key, version) order so that concurrent triggers
    # storing new definitions take their unique-key locks in the same order.
    distinct = {id(p.workflow): p.workflow for p in plans if p.workflow is not None}
    stored = {
        wid: cw.ensure_definition(tx, notifier.key, workflow)
        for wid, workflow in sorted(distinct.items(), key=lambda i: (i[1].key, i[1].version))
    }
    definitions = {id(p): stored[id(p.workflow)] for p in plans if p.workflow is not None}
    runs = workflows.create_initial_runs(
        tx,
        tenant_id,
        [
            workflows.NewRun(notification_ids[i], plan.recipient.id, definitions[id(plan)])
            for i, plan in enumerate(plans)
            if plan.workflow is not None
        ],
    )
    planned: list[PlannedDelivery] = []
    for i, plan in enumerate(plans):
        notification_id = notification_ids[i]
        targets: list[tuple[str, uuid.UUID | None, uuid.UUID | None]]
        if plan.workflow is not None:
            first = definitions[id(plan)].first_step
            targets = [(first.channel, runs[notification_id], first.id)]
        else:
            targets = [(channel, None, None) for channel in plan.channels]
        planned.extend(
            PlannedDelivery(
                notification_id=notification_id,
                tenant_id=tenant_id,
                recipient_id=plan.recipient.id,
                channel=channel,
                render_data=plan.contents.get(channel, {}),
                max_attempts=cw.retry_policy(channel).max_attempts,
                workflow_run_id=run_id,
                workflow_step_id=step_id,
            )
            for channel, run_id, step_id in targets
        )
    rows = deliveries.insert_many(tx, planned)
    delivery_ids = [r.id for r in rows]
    cw.jobs.deliver(tx, delivery_ids)
    return Triggered(
        event_id=event_id,
        notification_ids=notification_ids,
        delivery_ids=delivery_ids,
        run_ids=[runs[n] for n in notification_ids if n in runs],
    )


def _insert_notifications(
    tx: Conn,
    notifier: Notifier,
    plans: list[PlannedNotification],
    event_id: uuid.UUID,
    tenant_id: str,
) -> list[uuid.UUID]:
    """Insert in batches; ids come back in the order of ``plans``."""
    by_recipient: dict[str, uuid.UUID] = {}
    for start in range(0, len(plans), BATCH_SIZE):
        chunk = plans[start : start + BATCH_SIZE]
        rows = tx.execute(
            db.query("notification_insert_batch"),
            {
                "event_id": event_id,
                "tenant_id": tenant_id,
                "category": notifier.category,
                "recipient_ids": [p.recipient.id for p in chunk],
                "recipient_types": [p.recipient.type for p in chunk],
                "assigns": [Jsonb(p.assigns) for p in chunk],
                "contents": [Jsonb(p.contents) for p in chunk],
            },
        ).fetchall()
        by_recipient.update({recipient_id: nid for nid, recipient_id in rows})
    return [by_recipient[p.recipient.id] for p in plans]
