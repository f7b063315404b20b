"""Signals: app events, provider feedback and inbox reads that resume waiting runs (design §7).

:func:`track_signal` writes the signal and defers ``route_signal`` in one transaction (its
NOTIFY wakes a worker at commit). :func:`route_signal` resumes, in one transaction, the same
tenant's waiting runs of the actor that listen for the event, and progresses each: an
``OnSignal`` rule advances it, otherwise the cancelled wait completes it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from chimeway import db, progression
from chimeway.errors import InvalidSignal
from chimeway.inputs import json_object, non_blank
from chimeway.redaction import redact
from chimeway.results import Routed, SignalTracked
from chimeway.workflows import Run

if TYPE_CHECKING:
    from chimeway.app import Chimeway

logger = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]

MAX_EVENT_NAME = 200


def validate(
    tenant_id: Any, actor_id: Any, event_name: Any, payload: Any, idempotency_key: Any
) -> dict[str, Any]:
    non_blank("tenant_id", tenant_id, InvalidSignal)
    non_blank("actor_id", actor_id, InvalidSignal)
    non_blank("event_name", event_name, InvalidSignal)
    if len(event_name) > MAX_EVENT_NAME:
        raise InvalidSignal(
            f"event_name is {len(event_name)} characters long; at most {MAX_EVENT_NAME} allowed"
        )
    if idempotency_key is not None:
        non_blank("idempotency_key", idempotency_key, InvalidSignal)
    return {} if payload is None else json_object("payload", payload, InvalidSignal)


def track_signal(
    cw: Chimeway,
    tenant_id: str,
    actor_id: str,
    event_name: str,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    conn: Conn | None = None,
) -> SignalTracked:
    body = validate(tenant_id, actor_id, event_name, payload, idempotency_key)
    with cw.transaction(conn) as tx:
        row = tx.execute(
            db.query("signal_insert"),
            {
                "tenant_id": tenant_id,
                "actor_id": actor_id,
                "event_name": event_name,
                "payload": Jsonb(redact(body)),
                "idempotency_key": idempotency_key,
            },
        ).fetchone()
        if row is None:
            found = tx.execute(
                db.query("signal_find_by_key"),
                {"tenant_id": tenant_id, "idempotency_key": idempotency_key},
            ).fetchone()
            assert found is not None
            return SignalTracked(found[0], duplicate=True)
        signal_id: uuid.UUID = row[0]
        cw.jobs.route_signal(tx, signal_id)
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


def route_signal(cw: Chimeway, signal_id: uuid.UUID) -> Routed:
    """Resume and progress the runs waiting for this signal; routing twice does nothing."""
    with cw.pool.connection() as conn, conn.transaction():
        signal = conn.execute(db.query("signal_lock"), {"id": signal_id}).fetchone()
        if signal is None:
            return Routed(signal_id, skipped="missing")
        _, tenant_id, actor_id, event_name, payload, routed_at = signal
        if routed_at is not None:
            return Routed(signal_id, skipped="already routed")
        with conn.cursor(row_factory=db.dataclass_row(Run)) as cur:
            runs = cur.execute(
                db.query("runs_waiting_for_signal_lock"),
                {"tenant_id": tenant_id, "actor_id": actor_id, "event_name": event_name},
            ).fetchall()
        delivery_id = _delivery_id(conn, tenant_id, payload)
        results = []
        for run in runs:
            results.append(progression.resume_on_signal(cw, conn, run, event_name, delivery_id))
        conn.execute(db.query("signal_mark_routed"), {"id": signal_id})
    return Routed(signal_id, [r.id for r in runs], results)


def _delivery_id(conn: Conn, tenant_id: str, payload: dict[str, Any]) -> uuid.UUID | None:
    """The payload's ``delivery_id``, when it names a delivery of this tenant."""
    try:
        candidate = uuid.UUID(str(payload.get("delivery_id")))
    except ValueError:
        return None
    row = conn.execute(
        db.query("delivery_id_for_tenant"), {"id": candidate, "tenant_id": tenant_id}
    ).fetchone()
    return row[0] if row else None
