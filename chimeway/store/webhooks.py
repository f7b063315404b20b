"""Provider feedback: webhook ingress rows (one per verified event) and the reads that
process them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chimeway import db
from chimeway.db import AsyncConn, Conn
from chimeway.feedback import FeedbackEvent
from chimeway.store.jobs import QUEUES, TASKS, WEBHOOK_LOCK
from chimeway.types import FeedbackStatus, IngressState

#: The task that processes an ingress row (chimeway.jobs), one job per row.
WEBHOOK_TASK = "process_webhook"


def insert(conn: Conn, events: Sequence[tuple[uuid.UUID, FeedbackEvent]]) -> set[uuid.UUID]:
    """One queued row per (id, event) and the ``process_webhook`` job of each, in one
    statement (on an autocommit connection, one transaction of its own); events their
    provider sent before (same provider event id), in an earlier statement or earlier in
    this one, get neither. The ids inserted."""
    if not events:
        return set()
    row = conn.execute(db.query("ingress_insert_and_defer"), _params(events)).fetchone()
    return _inserted(row)


async def insert_async(
    conn: AsyncConn, events: Sequence[tuple[uuid.UUID, FeedbackEvent]]
) -> set[uuid.UUID]:
    """:func:`insert` on an asyncio connection."""
    if not events:
        return set()
    cur = await conn.execute(db.query("ingress_insert_and_defer"), _params(events))
    return _inserted(await cur.fetchone())


def _params(events: Sequence[tuple[uuid.UUID, FeedbackEvent]]) -> dict[str, Any]:
    rows = [
        {
            "id": str(i),
            "provider": e.provider,
            "event_id": e.provider_event_id,
            "kind": str(e.kind),
            "delivery_ref": None if e.delivery_id is None else str(e.delivery_id),
            "message_id": e.provider_message_id,
            "occurred_at": None if e.occurred_at is None else e.occurred_at.isoformat(),
            "permanent": e.permanent,
            "evidence": e.evidence,
        }
        for i, e in events
    ]
    return {
        "events": json.dumps(rows),
        "queue": QUEUES[WEBHOOK_TASK],
        "task": TASKS[WEBHOOK_TASK],
        "priority": 0,
        "lock_prefix": WEBHOOK_LOCK,
    }


def _inserted(row: Any) -> set[uuid.UUID]:
    if row is None:  # every event was a duplicate
        return set()
    ids, jobs = row
    if jobs != len(ids):
        raise RuntimeError(f"{len(ids)} ingress rows but {jobs} process_webhook jobs")
    return set(ids)


@dataclass(frozen=True)
class Ingress:
    id: uuid.UUID
    provider: str
    provider_event_id: str | None
    kind: FeedbackStatus
    delivery_ref: uuid.UUID | None
    delivery_id: uuid.UUID | None
    provider_message_id: str | None
    occurred_at: dt.datetime | None
    permanent: bool | None
    evidence: dict[str, Any]
    ingress_state: IngressState
    outcome: str | None
    ignored_reason: str | None
    created_at: dt.datetime


def lock(conn: Conn, ingress_id: uuid.UUID) -> Ingress | None:
    with conn.cursor(row_factory=db.dataclass_row(Ingress)) as cur:
        return cur.execute(db.query("ingress_lock"), {"id": ingress_id}).fetchone()


def finish(
    conn: Conn,
    ingress_id: uuid.UUID,
    state: IngressState,
    *,
    delivery_id: uuid.UUID | None = None,
    outcome: str | None = None,
    ignored_reason: str | None = None,
) -> None:
    """Record what processing did: ``processed`` (with its ``outcome``) or ``ignored``."""
    conn.execute(
        db.query("ingress_finish"),
        {
            "id": ingress_id,
            "state": state,
            "delivery_id": delivery_id,
            "outcome": outcome,
            "ignored_reason": ignored_reason,
        },
    )


@dataclass(frozen=True)
class Target:
    id: uuid.UUID
    workflow_run_id: uuid.UUID | None


def target(conn: Conn, delivery_ref: uuid.UUID | None, message_id: str | None) -> Target | None:
    """The delivery the feedback names: by our delivery id, else by provider message id."""
    with conn.cursor(row_factory=db.dataclass_row(Target)) as cur:
        return cur.execute(
            db.query("feedback_target"), {"delivery_ref": delivery_ref, "message_id": message_id}
        ).fetchone()


def category(conn: Conn, delivery_id: uuid.UUID) -> str | None:
    """The category of the delivery's notification."""
    row = conn.execute(db.query("feedback_context"), {"delivery_id": delivery_id}).fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class Received:
    """Feedback processed for a delivery, as explain_delivery shows it."""

    id: uuid.UUID
    provider: str
    provider_event_id: str | None
    kind: FeedbackStatus
    occurred_at: dt.datetime | None
    permanent: bool | None
    evidence: dict[str, Any]
    outcome: str | None
    created_at: dt.datetime
    processed_at: dt.datetime | None


def for_delivery(conn: Conn, delivery_id: uuid.UUID) -> list[Received]:
    with conn.cursor(row_factory=db.dataclass_row(Received)) as cur:
        return cur.execute(
            db.query("feedback_for_delivery"), {"delivery_id": delivery_id}
        ).fetchall()
