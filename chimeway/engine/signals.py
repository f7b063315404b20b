"""Signals: app events, provider feedback and inbox reads that resume waiting runs (design §7).

:func:`track_signal` writes the signal and defers ``route_signal`` in one transaction (its
NOTIFY wakes a worker at commit). :func:`route_signal` resumes, in the caller's transaction,
the same tenant's waiting runs of the actor that listen for the event, and progresses each:
an ``OnSignal`` rule advances it, otherwise the cancelled wait completes it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from chimeway.db import Conn
from chimeway.engine import logbook
from chimeway.engine.context import Engine
from chimeway.engine.progression import resume_on_signal
from chimeway.errors import InvalidSignal
from chimeway.inputs import identifier, json_object
from chimeway.redaction import redact
from chimeway.results import Routed, SignalTracked
from chimeway.store import deliveries, runs, signals

logger = logging.getLogger(__name__)

MAX_EVENT_NAME = 200


def validate(
    tenant_id: Any, actor_id: Any, event_name: Any, payload: Any, idempotency_key: Any
) -> dict[str, Any]:
    """The signal's payload once every argument is known to be valid; else InvalidSignal."""
    identifier("tenant_id", tenant_id, InvalidSignal)
    identifier("actor_id", actor_id, InvalidSignal)
    identifier("event_name", event_name, InvalidSignal, max_chars=MAX_EVENT_NAME)
    if idempotency_key is not None:
        identifier("idempotency_key", idempotency_key, InvalidSignal)
    return {} if payload is None else json_object("payload", payload, InvalidSignal)


def track_signal(
    engine: Engine,
    tenant_id: str,
    actor_id: str,
    event_name: str,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    conn: Conn | None = None,
) -> SignalTracked:
    """Record a signal and defer its routing, in one transaction (the caller's, with
    ``conn``). A repeated ``idempotency_key`` (per tenant) is inert."""
    body = validate(tenant_id, actor_id, event_name, payload, idempotency_key)
    with engine.transaction(conn) as tx:
        signal_id = signals.insert(
            tx,
            tenant_id=tenant_id,
            actor_id=actor_id,
            event_name=event_name,
            payload=redact(body),
            idempotency_key=idempotency_key,
        )
        if signal_id is None:
            assert idempotency_key is not None  # only a key makes an insert inert
            found = signals.find_by_key(tx, tenant_id, idempotency_key)
            assert found is not None
            return SignalTracked(found, duplicate=True)
        engine.deferrer.route_signal(tx, signal_id)
    logger.info(
        "signal tracked",
        extra={
            "action": "signal.tracked",
            "tenant_id": tenant_id,
            "signal_id": str(signal_id),
            "event_name": event_name,
        },
    )
    return SignalTracked(signal_id)


def route_signal(engine: Engine, conn: Conn, signal_id: uuid.UUID) -> Routed:
    """Resume and progress the runs waiting for this signal, in the caller's transaction;
    routing twice does nothing."""
    signal = signals.lock(conn, signal_id)
    if signal is None:
        return Routed(signal_id, skipped="missing")
    if signal.routed_at is not None:
        return Routed(signal_id, skipped="already routed")
    waiting = runs.lock_waiting_for(conn, signal.tenant_id, signal.actor_id, signal.event_name)
    delivery_id = _delivery_id(conn, signal.tenant_id, signal.payload)
    results = [
        resume_on_signal(engine, conn, run, signal.event_name, delivery_id) for run in waiting
    ]
    signals.mark_routed(conn, signal_id)
    return Routed(signal_id, [r.id for r in waiting], results)


def route_signal_now(engine: Engine, signal_id: uuid.UUID) -> Routed:
    """:func:`route_signal` in a transaction of its own (what the job does)."""
    with logbook.held(), engine.pool.connection() as conn, conn.transaction():
        return route_signal(engine, conn, signal_id)


def _delivery_id(conn: Conn, tenant_id: str, payload: dict[str, Any]) -> uuid.UUID | None:
    """The payload's ``delivery_id``, when it names a delivery of this tenant."""
    try:
        candidate = uuid.UUID(str(payload.get("delivery_id")))
    except ValueError:
        return None
    return deliveries.id_for_tenant(conn, tenant_id, candidate)
