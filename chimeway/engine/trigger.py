"""``trigger``: event -> notifications -> (runs) -> deliveries -> jobs, in one transaction.

Everything the notifier computes (recipients, assigns, channels, rendered and validated
content, workflows) is resolved before the first write, so bad input raises a
:class:`~chimeway.ChimewayError` and writes nothing. The writes then run in the caller's
transaction (inside a savepoint) or in a transaction of their own, in batches, and the
deliveries are planned through :mod:`chimeway.engine.planning`, which defers their jobs on the
same connection. The profile fields the recipients carry are merged into the recipient
directory first, so planning (and every send) reads them.

A trigger that plans one delivery (one recipient; a workflow that does not start with a
batch, or one channel) is first tried in one statement
(:func:`chimeway.store.triggers.write_one`), guarded by ``chimeway_policy_scope`` and the
address check: when no opt-out rule, quiet hours or cap can apply to the delivery and
its channel needs no address the recipient lacks, planning could only say "send now", and
the statement writes the rows and the job planning would have written. Otherwise it writes
nothing and the trigger is planned as above. Without the caller's connection that
statement runs on its own in autocommit (it is atomic): one round trip. In the caller's
transaction it is sent with the savepoint it runs in, also in one round trip
(:func:`chimeway.engine.connections.together`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import psycopg

from chimeway import telemetry
from chimeway.db import Conn
from chimeway.engine import connections, planning, recipients
from chimeway.engine.context import Engine
from chimeway.engine.progression import Opened, progress_planned, start_batches
from chimeway.errors import InvalidTrigger, translated
from chimeway.inputs import identifier, json_object
from chimeway.notifiers import (
    Notifier,
    PlannedNotification,
    plan_notification,
    resolve_notifier,
    resolve_recipients,
)
from chimeway.redaction import redact
from chimeway.results import Duplicate, Triggered
from chimeway.store import digests, events, runs, triggers
from chimeway.store.definitions import Definition
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
    tenant_id = identifier("tenant_id", tenant_id, InvalidTrigger)
    idempotency_key = identifier("idempotency_key", idempotency_key, InvalidTrigger)
    if correlation_id is not None:
        identifier("correlation_id", correlation_id, InvalidTrigger)
    payload = json_object("params", params, InvalidTrigger)
    resolved = resolve_notifier(notifier)
    plans = [
        plan_notification(resolved, payload, recipient, engine.content_schemas)
        for recipient in resolve_recipients(resolved, payload)
    ]
    telemetry.add("chimeway.triggers", notification=resolved.key)
    with telemetry.span(
        "chimeway.trigger",
        tenant_id=tenant_id,
        notification=resolved.key,
        recipients=len(plans),
    ) as span:
        traceparent = telemetry.traceparent() if span.recording else None
        one = _one(
            engine,
            resolved,
            plans,
            tenant_id,
            idempotency_key,
            correlation_id,
            payload,
            traceparent,
        )
        if one is not None and conn is None:
            # One statement in autocommit: it is a transaction of its own.
            with translated(), engine.pool.connection() as own:
                own.autocommit = True
                try:
                    done = _write_one(own, span, one)
                finally:
                    with suppress(psycopg.Error):  # a broken connection is dropped anyway
                        own.autocommit = False
            if done is not None:
                return done
        if one is not None and conn is not None:
            # The caller's open transaction: the statement and its savepoint in one round
            # trip. Not written (some policy can apply): planned below, in a savepoint of
            # its own.
            lone = one
            sent = connections.sent_together(conn, lambda c: triggers.send(c, lone))
            if sent is not None:
                written = triggers.read(sent)
                if written.free and written.event_id is None:
                    with engine.transaction(conn) as tx:
                        return _duplicate(tx, span, lone.tenant_id, lone.idempotency_key)
                if written.free:
                    return _triggered(span, written)
                one = None
        with engine.transaction(conn) as tx:
            if one is not None and conn is not None:
                done = _write_one(tx, span, one)
                if done is not None:
                    return done
            return _planned(
                engine,
                tx,
                conn is not None,
                span,
                resolved,
                plans,
                payload,
                tenant_id,
                idempotency_key,
                correlation_id,
                traceparent,
            )


def _planned(
    engine: Engine,
    tx: Conn,
    caller_conn: bool,
    span: telemetry.Span,
    resolved: Notifier,
    plans: list[PlannedNotification],
    payload: dict[str, Any],
    tenant_id: str,
    idempotency_key: str,
    correlation_id: str | None,
    traceparent: str | None,
) -> Triggered | Duplicate:
    """The trigger written through the batches and planned by planning; for a few
    recipients on generic plans (:func:`~chimeway.engine.connections.few_rows`), set back
    after it on the caller's connection (``caller_conn``)."""
    event_id = events.insert(
        tx,
        tenant_id=tenant_id,
        notification_key=resolved.key,
        notification_version=resolved.version,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        payload=redact(payload),
        # The sends in the workers continue this trace (chimeway.telemetry).
        traceparent=traceparent,
    )
    if event_id is None:
        return _duplicate(tx, span, tenant_id, idempotency_key)
    span.set(event_id=event_id, duplicate=False)
    with connections.few_rows(tx, len(plans), callers=caller_conn):
        return _write(engine, tx, resolved, plans, event_id, tenant_id)


def _duplicate(tx: Conn, span: telemetry.Span, tenant_id: str, idempotency_key: str) -> Duplicate:
    found = events.find(tx, tenant_id, idempotency_key)
    if found is None:
        # Committed after this transaction's snapshot (REPEATABLE READ callers).
        raise InvalidTrigger(
            f"an event with idempotency key {idempotency_key!r} was written "
            "concurrently and is not visible to this transaction; it is a duplicate"
        )
    span.set(event_id=found, duplicate=True)
    return Duplicate(found)


def _one(
    engine: Engine,
    notifier: Notifier,
    plans: list[PlannedNotification],
    tenant_id: str,
    idempotency_key: str,
    correlation_id: str | None,
    payload: dict[str, Any],
    traceparent: str | None,
) -> triggers.One | None:
    """The one-statement form of a trigger whose one delivery planning can plan without
    policy (:func:`chimeway.engine.planning.lone`), or ``None``."""
    lone = planning.lone(engine, notifier, plans)
    if lone is None:
        return None
    [plan] = plans
    r = plan.recipient
    return triggers.One(
        tenant_id=tenant_id,
        notification_key=notifier.key,
        notification_version=notifier.version,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        payload=redact(payload),
        traceparent=traceparent,
        recipient_id=r.id,
        recipient_type=r.type,
        email=r.email,
        phone=r.phone,
        locale=r.locale,
        timezone=r.timezone,
        data=dict(r.data) if r.data else None,
        category=notifier.category,
        assigns=plan.assigns,
        contents=plan.contents,
        delivery=lone,
    )


def _write_one(tx: Conn, span: telemetry.Span, one: triggers.One) -> Triggered | Duplicate | None:
    """The trigger in one statement; ``None`` when some policy can apply to its delivery
    (nothing was written: the caller plans it)."""
    written = triggers.write_one(tx, one)
    if not written.free:
        return None
    if written.event_id is None:
        return _duplicate(tx, span, one.tenant_id, one.idempotency_key)
    return _triggered(span, written)


def _triggered(span: telemetry.Span, written: triggers.Written) -> Triggered:
    """What the one statement wrote (``free``, and a new event)."""
    assert written.event_id is not None
    assert written.notification_id is not None and written.delivery_id is not None
    span.set(event_id=written.event_id, duplicate=False)
    telemetry.add("chimeway.deliveries.planned", 1)
    return Triggered(
        event_id=written.event_id,
        notification_ids=[written.notification_id],
        delivery_ids=[written.delivery_id],
        run_ids=[] if written.run_id is None else [written.run_id],
    )


def _write(
    engine: Engine,
    tx: Conn,
    notifier: Notifier,
    plans: list[PlannedNotification],
    event_id: uuid.UUID,
    tenant_id: str,
) -> Triggered:
    recipients.upsert_inline(tx, tenant_id, [p.recipient for p in plans])
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
    batched = _join_batches(engine, tx, notifier, plans, notification_ids, definitions, tenant_id)
    run_ids = runs.create_initial_runs(
        tx,
        tenant_id,
        [
            runs.NewRun(notification_ids[i], plan.recipient.id, definitions[id(plan)])
            for i, plan in enumerate(plans)
            if plan.workflow is not None
            and (notification_ids[i] not in batched or batched[notification_ids[i]].digest.opened)
        ],
    )
    held = _start_batches(engine, tx, notifier, plans, notification_ids, batched, run_ids)
    wanted: list[planning.DeliveryPlan] = []
    for notification_id, plan in zip(notification_ids, plans, strict=True):
        targets: list[tuple[str, uuid.UUID | None, uuid.UUID | None]]
        if notification_id in batched:
            continue  # planned when its batch closes (design §15)
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
                workflow_key=plan.workflow.key if plan.workflow is not None else notifier.key,
                category=notifier.category,
                critical=notifier.critical,
                bypass_quiet_hours=notifier.bypass_quiet_hours,
            )
            for channel, run_id, step_id in targets
        )
    planned = planning.plan(engine, tx, wanted)
    # A first step planning suppressed is decided now: its outcome may lead to another step.
    settled = progress_planned(engine, tx, planned)
    later = [d for result in settled.values() for d in getattr(result, "delivery_ids", [])]
    return Triggered(
        event_id=event_id,
        notification_ids=notification_ids,
        delivery_ids=[r.id for r in planned] + later + held,
        run_ids=[run_ids[n] for n in notification_ids if n in run_ids],
    )


def _join_batches(
    engine: Engine,
    tx: Conn,
    notifier: Notifier,
    plans: list[PlannedNotification],
    notification_ids: list[uuid.UUID],
    definitions: dict[int, Definition],
    tenant_id: str,
) -> dict[uuid.UUID, planning.Batched]:
    """The notifications whose workflow starts with a Batch join (or open) their batches;
    where each went, by notification id."""
    wanted = [
        planning.BatchPlan(
            notification_id=notification_id,
            tenant_id=tenant_id,
            recipient_id=plan.recipient.id,
            workflow_key=plan.workflow.key,
            batch=plan.workflow.batch,
            batch_key=plan.batch_key or "",
            channel=definitions[id(plan)].first_step.channel,
            category=notifier.category,
            critical=notifier.critical,
            bypass_quiet_hours=notifier.bypass_quiet_hours,
        )
        for notification_id, plan in zip(notification_ids, plans, strict=True)
        if plan.workflow is not None and plan.workflow.batch is not None
    ]
    if not wanted:
        return {}
    # Closing a batch renders its digest through the notifier: this process knows it now.
    engine.notifiers.setdefault(notifier.key, notifier)
    joined = planning.join_batches(engine, tx, wanted)
    return {p.notification_id: j for p, j in zip(wanted, joined, strict=True)}


def _start_batches(
    engine: Engine,
    tx: Conn,
    notifier: Notifier,
    plans: list[PlannedNotification],
    notification_ids: list[uuid.UUID],
    batched: dict[uuid.UUID, planning.Batched],
    run_ids: dict[uuid.UUID, uuid.UUID],
) -> list[uuid.UUID]:
    """The runs of the batches this trigger opened wait for them to close; a notification
    that joined a batch is counted in that batch's run. The held deliveries of those that
    joined."""
    opened: list[Opened] = []
    for notification_id, plan in zip(notification_ids, plans, strict=True):
        where = batched.get(notification_id)
        if where is None:
            continue
        if not where.digest.opened:
            if where.digest.run_id is not None:
                run_ids[notification_id] = where.digest.run_id
            continue
        assert plan.workflow is not None and plan.workflow.batch is not None
        opened.append(
            Opened(
                run_ids[notification_id],
                where.digest.id,
                where.digest.closes_at,
                {
                    "notifier": notifier.key,
                    "channel": plan.workflow.first_step.channel,
                    "max_items": plan.workflow.batch.max_items,
                    "facts": {
                        "workflow_key": plan.workflow.key,
                        "category": notifier.category,
                        "critical": notifier.critical,
                        "bypass_quiet_hours": notifier.bypass_quiet_hours,
                    },
                },
            )
        )
    digests.set_runs(tx, [(o.digest_id, o.run_id) for o in opened])
    start_batches(engine, tx, opened)
    return [b.delivery_id for b in batched.values() if b.delivery_id is not None]
