"""Signals: app events, provider feedback and inbox reads that resume waiting runs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn


@dataclass(frozen=True)
class Signal:
    id: uuid.UUID
    tenant_id: str
    actor_id: str
    event_name: str
    payload: dict[str, Any]
    routed_at: dt.datetime | None


def insert(
    conn: Conn,
    *,
    tenant_id: str,
    actor_id: str,
    event_name: str,
    payload: dict[str, Any],
    idempotency_key: str | None,
) -> uuid.UUID | None:
    """The new signal's id, or ``None`` when its idempotency key was seen (per tenant)."""
    row = conn.execute(
        db.query("signal_insert"),
        {
            "tenant_id": tenant_id,
            "actor_id": actor_id,
            "event_name": event_name,
            "payload": Jsonb(payload),
            "idempotency_key": idempotency_key,
        },
    ).fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class NewSignal:
    event_name: str
    payload: dict[str, Any]
    idempotency_key: str


def insert_many(
    conn: Conn, tenant_id: str, actor_id: str, new: Sequence[NewSignal]
) -> list[uuid.UUID]:
    """The ids of the signals written; those whose idempotency key was seen are left out."""
    if not new:
        return []
    rows = conn.execute(
        db.query("signals_insert_many"),
        {
            "tenant_id": tenant_id,
            "actor_id": actor_id,
            "event_names": [s.event_name for s in new],
            "payloads": [Jsonb(s.payload) for s in new],
            "idempotency_keys": [s.idempotency_key for s in new],
        },
    ).fetchall()
    return [row[0] for row in rows]


def find_by_key(conn: Conn, tenant_id: str, idempotency_key: str) -> uuid.UUID | None:
    row = conn.execute(
        db.query("signal_find_by_key"),
        {"tenant_id": tenant_id, "idempotency_key": idempotency_key},
    ).fetchone()
    return None if row is None else row[0]


def lock(conn: Conn, signal_id: uuid.UUID) -> Signal | None:
    """Lock the signal ``FOR UPDATE``; ``None`` if it does not exist."""
    with conn.cursor(row_factory=db.dataclass_row(Signal)) as cur:
        return cur.execute(db.query("signal_lock"), {"id": signal_id}).fetchone()


def mark_routed(conn: Conn, signal_id: uuid.UUID) -> None:
    conn.execute(db.query("signal_mark_routed"), {"id": signal_id})


@dataclass(frozen=True)
class Listening:
    """A run about to wait, and the events it listens for from its recipient."""

    tenant_id: str
    actor_id: str
    events: Sequence[str]
    since: dt.datetime


@dataclass(frozen=True)
class _Seen:
    n: int
    event_name: str


def seen_since(conn: Conn, listening: Sequence[Listening | None]) -> dict[int, str]:
    """For each entry (by position) the earliest matching signal from its actor since
    ``since``, in one statement; ``None`` entries and entries with none are left out."""
    present = [(i, w) for i, w in enumerate(listening) if w is not None and w.events]
    if not present:
        return {}
    with conn.cursor(row_factory=db.dataclass_row(_Seen)) as cur:
        rows = cur.execute(
            db.query("signals_seen_since"),
            {
                "tenant_ids": [w.tenant_id for _, w in present],
                "actor_ids": [w.actor_id for _, w in present],
                "events": [Jsonb(list(w.events)) for _, w in present],
                "since": [w.since for _, w in present],
            },
        ).fetchall()
    return {present[row.n - 1][0]: row.event_name for row in rows}
