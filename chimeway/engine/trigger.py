"""``trigger``: event -> notifications -> (runs) -> deliveries -> jobs, in one transaction.

Everything the notifier computes (recipients, assigns, channels, rendered and validated
content, workflows) is resolved before the first write, so bad input raises a
:class:`~chimeway.ChimewayError` and writes nothing. The writes then run in the caller's
transaction (inside a savepoint) or in a transaction of their own, in batches, and the
deliveries are planned through :mod:`chimeway.engine.planning`, which defers their jobs on the
same connection.

A trigger that plans one delivery (one recipient, a workflow or one channel: an app
notifying a user) is written in one statement (:func:`chimeway.store.triggers.write_one`):
the rows it writes are the batches' rows for one recipient, and the delivery is still what
:func:`planning.prepare` makes of its plan. Without the caller's connection that statement
runs on its own in autocommit (it is atomic): one round trip instead of eight.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from chimeway.db import Conn
from chimeway.engine import planning
from chimeway.engine.context import Engine
from chimeway.errors import InvalidTrigger, translated
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
from chimeway.store import events, runs, triggers
from chimeway.store.events import NewNotification


def trigger(
    engine: Engine,
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
        plan_notification(resolved, payload, recipient, engine.content_schemas)
        for recipient in resolve_recipients(resolved, payload)
    ]
    event = triggers.NewEvent(
        tenant_id=tenant_id,
        notification_key=resolved.key,
        notification_version=resolved.version,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        payload=redact(payload),
    )
    if len(plans) == 1 and (plans[0].workflow is not None or len(plans[0].channels) == 1):
        with _one_statement(engine, conn) as tx:
            return _write_one(engine, tx, resolved, plans[0], event)
    with engine.transaction(conn) as tx:
        event_id = events.insert(
            tx,
            tenant_id=tenant_id,
            notification_key=event.notification_key,
            notification_version=event.notification_version,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            payload=event.payload,
        )
        if event_id is None:
            return _duplicate(tx, tenant_id, idempotency_key)
        return _write(engine, tx, resolved, plans, event_id, tenant_id)


def _duplicate(tx: Conn, tenant_id: str, idempotency_key: str) -> Duplicate:
    found = events.find(tx, tenant_id, idempotency_key)
    if found is None:
        # Committed after this transaction's snapshot (REPEATABLE READ callers).
        raise InvalidTrigger(
            f"an event with idempotency key {idempotency_key!r} was written "
            "concurrently and is not visible to this transaction; it is a duplicate"
        )
    return Duplicate(found)


@contextmanager
def _one_statement(engine: Engine, conn: Conn | None) -> Iterator[Conn]:
    """Where a write of one statement runs: the caller's transaction (as
    :meth:`Engine.transaction` joins it), or a pool connection in autocommit, where the
    statement is its own transaction (no BEGIN, no COMMIT)."""
    if conn is not None:
        with engine.transaction(conn) as tx:
            yield tx
        return
    with translated(), engine.pool.connection() as own:
        own.autocommit = True
        try:
            yield own
        finally:
            with suppress(psycopg.Error):  # a broken connection is dropped by the pool
                own.autocommit = False


def _write_one(
    engine: Engine,
    tx: Conn,
    notifier: Notifier,
    plan: PlannedNotification,
    event: triggers.NewEvent,
) -> Triggered | Duplicate:
    """One notification and the one delivery it plans, in one statement."""
    notification_id = uuid.uuid4()
    definition = None
    if plan.workflow is not None:
        definition = engine.catalog.cached(plan.workflow)
        if definition is None and tx.autocommit:
            # A definition and its steps are two statements: never apart, even here (a
            # concurrent trigger would see the definition without its steps).
            with tx.transaction():
                definition = engine.catalog.ensure_definition(tx, notifier.key, plan.workflow)
        elif definition is None:  # in the caller's transaction, with the rest
            definition = engine.catalog.ensure_definition(tx, notifier.key, plan.workflow)
    run_id = None if definition is None else uuid.uuid4()
    first = None if definition is None else definition.first_step
    channel = plan.channels[0] if first is None else first.channel
    [delivery] = planning.prepare(
        engine,
        [
            planning.DeliveryPlan(
                notification_id=notification_id,
                tenant_id=event.tenant_id,
                recipient_id=plan.recipient.id,
                channel=channel,
                render_data=plan.contents.get(channel, {}),
                workflow_run_id=run_id,
                workflow_step_id=None if first is None else first.id,
            )
        ],
    )
    written = triggers.write_one(
        tx,
        event,
        triggers.OneNotification(
            id=notification_id,
            recipient_type=plan.recipient.type,
            category=notifier.category,
            assigns=plan.assigns,
            contents=plan.contents,
            definition_id=None if definition is None else definition.id,
            first_step=first,
        ),
        delivery,
    )
    if written is None:
        return _duplicate(tx, event.tenant_id, event.idempotency_key)
    return Triggered(
        event_id=written.event_id,
        notification_ids=[notification_id],
        delivery_ids=[written.delivery_id],
        run_ids=[] if run_id is None else [run_id],
    )


def _write(
    engine: Engine,
    tx: Conn,
    notifier: Notifier,
    plans: list[PlannedNotification],
    event_id: uuid.UUID,
    tenant_id: str,
) -> Triggered:
    notification_ids = events.insert_notifications(
        tx,
        event_id,
        tenant_id,
        notifier.category,
        [NewNotification(p.recipient.id, p.recipient.type, p.assigns, p.contents) for p in plans],
    )
    # One lookup per distinct workflow, in (key, version) order so that concurrent triggers
    # storing new definitions take their unique-key locks in the same order.
    distinct = {id(p.workflow): p.workflow for p in plans if p.workflow is not None}
    stored = {
        wid: engine.catalog.ensure_definition(tx, notifier.key, workflow)
        for wid, workflow in sorted(distinct.items(), key=lambda i: (i[1].key, i[1].version))
    }
    definitions = {id(p): stored[id(p.workflow)] for p in plans if p.workflow is not None}
    run_ids = runs.create_initial_runs(
        tx,
        tenant_id,
        [
            runs.NewRun(notification_ids[i], plan.recipient.id, definitions[id(plan)])
            for i, plan in enumerate(plans)
            if plan.workflow is not None
        ],
    )
    wanted: list[planning.DeliveryPlan] = []
    for notification_id, plan in zip(notification_ids, plans, strict=True):
        targets: list[tuple[str, uuid.UUID | None, uuid.UUID | None]]
        if plan.workflow is not None:
            first = definitions[id(plan)].first_step
            targets = [(first.channel, run_ids[notification_id], first.id)]
        else:
            targets = [(channel, None, None) for channel in plan.channels]
        wanted.extend(
            planning.DeliveryPlan(
                notification_id=notification_id,
                tenant_id=tenant_id,
                recipient_id=plan.recipient.id,
                channel=channel,
                render_data=plan.contents.get(channel, {}),
                workflow_run_id=run_id,
                workflow_step_id=step_id,
            )
            for channel, run_id, step_id in targets
        )
    planned = planning.plan(engine, tx, wanted)
    return Triggered(
        event_id=event_id,
        notification_ids=notification_ids,
        delivery_ids=[r.id for r in planned],
        run_ids=[run_ids[n] for n in notification_ids if n in run_ids],
    )
