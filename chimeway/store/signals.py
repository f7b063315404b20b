"""Signals: app events, provider feedback and inbox reads that resume waiting runs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.store import jobs
from chimeway.store.runs import Run


@dataclass(frozen=True)
class Signal:
    id: uuid.UUID
    tenant_id: str
    actor_id: str
    event_name: str
    payload: dict[str, Any]
    routed_at: dt.datetime | None
    created_at: dt.datetime | None = None  # None: written in this transaction just now


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


def send_with_job(
    conn: Conn,
    *,
    tenant_id: str,
    actor_id: str,
    event_name: str,
    payload: dict[str, Any],
    idempotency_key: str | None,
) -> psycopg.Cursor[Any]:
    """:func:`insert`, and defer the ``route_signal`` job of the new signal (queueing lock
    :data:`~chimeway.store.jobs.ROUTE_LOCK` + id, ahead of deliveries) in the same statement:
    sent (in pipeline mode, queued); the id, read by :func:`read_id`, comes when its results
    do."""
    return conn.execute(
        db.query("signal_insert_with_job"),
        {
            "tenant_id": tenant_id,
            "actor_id": actor_id,
            "event_name": event_name,
            "payload": Jsonb(payload),
            "idempotency_key": idempotency_key,
            "queue": jobs.QUEUES["route_signal"],
            "task": jobs.TASKS["route_signal"],
            "priority": jobs.AHEAD,
            "lock_prefix": jobs.ROUTE_LOCK,
        },
    )


def read_id(cur: psycopg.Cursor[Any]) -> uuid.UUID | None:
    """The new signal's id from :func:`send_with_job`'s cursor; ``None``: its idempotency
    key was seen."""
    with cur:
        row = cur.fetchone()
    return None if row is None else row[0]


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


def lock_pending(conn: Conn, besides: uuid.UUID, limit: int) -> list[Signal]:
    """Up to ``limit`` other unrouted signals, oldest first, that no other router holds,
    locked ``FOR UPDATE``."""
    with conn.cursor(row_factory=db.dataclass_row(Signal)) as cur:
        return cur.execute(
            db.query("signals_pending_lock"), {"id": besides, "limit": limit}
        ).fetchall()


def lock_waiting_runs(
    conn: Conn, actors: Sequence[tuple[str, str]], events: Sequence[str]
) -> list[Run]:
    """Lock the waiting runs of these (tenant, actor) pairs that listen for any of
    ``events``, in id order."""
    with conn.cursor(row_factory=db.dataclass_row(Run)) as cur:
        return cur.execute(
            db.query("signals_waiting_runs_lock"),
            {
                "tenant_ids": [tenant for tenant, _ in actors],
                "actor_ids": [actor for _, actor in actors],
                "events": sorted(set(events)),
            },
        ).fetchall()


def existing_deliveries(
    conn: Conn, named: Sequence[tuple[str, uuid.UUID]]
) -> set[tuple[str, uuid.UUID]]:
    """Of the (tenant, delivery id) pairs, those naming a delivery of that tenant."""
    if not named:
        return set()
    rows = conn.execute(
        db.query("signals_delivery_ids"),
        {"tenant_ids": [t for t, _ in named], "ids": [d for _, d in named]},
    ).fetchall()
    return {(row[0], row[1]) for row in rows}


def mark_routed(conn: Conn, signal_ids: Sequence[uuid.UUID]) -> None:
    conn.execute(db.query("signals_mark_routed"), {"ids": list(signal_ids)})


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
