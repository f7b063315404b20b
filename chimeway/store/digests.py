"""Digests: the batches of workflows that start with a ``Batch`` (design §15).

A digest is open while it collects members and closed at its window's end or at
``max_items``; its run then sends one delivery for every member. The decisions are made in
:mod:`chimeway.engine.planning` (joining) and :mod:`chimeway.engine.digests` (closing).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.types import DigestState


@dataclass(frozen=True)
class Digest:
    id: uuid.UUID
    tenant_id: str
    workflow_key: str
    recipient_id: str
    batch_key: str
    run_id: uuid.UUID | None
    state: DigestState
    opened_at: dt.datetime
    closes_at: dt.datetime
    max_items: int | None
    member_count: int
    closed_at: dt.datetime | None
    close_reason: str | None
    delivery_id: uuid.UUID | None


@dataclass(frozen=True)
class Want:
    """A trigger's notification that joins (or opens) a digest."""

    tenant_id: str
    workflow_key: str
    recipient_id: str
    batch_key: str
    #: When the digest closes, should this want open it.
    closes_at: dt.datetime
    max_items: int | None


@dataclass(frozen=True)
class Joined:
    id: uuid.UUID
    tenant_id: str
    workflow_key: str
    recipient_id: str
    batch_key: str
    run_id: uuid.UUID | None
    state: DigestState
    closes_at: dt.datetime
    position: int
    opened: bool


def join(conn: Conn, wants: Sequence[Want]) -> list[Joined]:
    """Join or open a digest for each want (distinct keys), in one statement; the results
    in input order. Callers pass the wants in key order, so that concurrent triggers take
    the digests' row locks in the same order."""
    if not wants:
        return []
    with conn.cursor(row_factory=db.dataclass_row(Joined)) as cur:
        rows = cur.execute(
            db.query("digest_join"),
            {
                "tenant_ids": [w.tenant_id for w in wants],
                "workflow_keys": [w.workflow_key for w in wants],
                "recipient_ids": [w.recipient_id for w in wants],
                "batch_keys": [w.batch_key for w in wants],
                "closes_at": [w.closes_at for w in wants],
                "max_items": [w.max_items for w in wants],
            },
        ).fetchall()
    by_key = {(r.tenant_id, r.workflow_key, r.recipient_id, r.batch_key): r for r in rows}
    return [by_key[(w.tenant_id, w.workflow_key, w.recipient_id, w.batch_key)] for w in wants]


def set_runs(conn: Conn, runs: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """(digest id, run id) for the digests just opened."""
    if runs:
        conn.execute(
            db.query("digest_set_runs"),
            {"ids": [d for d, _ in runs], "run_ids": [r for _, r in runs]},
        )


@dataclass(frozen=True)
class NewMember:
    digest_id: uuid.UUID
    position: int
    notification_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    max_attempts: int
    category: str | None
    workflow_key: str | None
    critical: bool
    bypass_quiet_hours: bool


@dataclass(frozen=True)
class AddedMember:
    digest_id: uuid.UUID
    position: int
    notification_id: uuid.UUID
    delivery_id: uuid.UUID | None


def add_members(conn: Conn, members: Sequence[NewMember]) -> list[AddedMember]:
    """Record the members; those after a digest's first get a held delivery of their own."""
    if not members:
        return []
    with conn.cursor(row_factory=db.dataclass_row(AddedMember)) as cur:
        return cur.execute(
            db.query("digest_add_members"),
            {
                "digest_ids": [m.digest_id for m in members],
                "positions": [m.position for m in members],
                "notification_ids": [m.notification_id for m in members],
                "tenant_ids": [m.tenant_id for m in members],
                "recipient_ids": [m.recipient_id for m in members],
                "channels": [m.channel for m in members],
                "max_attempts": [m.max_attempts for m in members],
                "categories": [m.category for m in members],
                "workflow_keys": [m.workflow_key for m in members],
                "criticals": [m.critical for m in members],
                "bypass_quiet_hours": [m.bypass_quiet_hours for m in members],
            },
        ).fetchall()


def lock_by_runs(conn: Conn, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Digest]:
    """The digests of these runs (locked, after the runs), by run id."""
    if not run_ids:
        return {}
    with conn.cursor(row_factory=db.dataclass_row(Digest)) as cur:
        rows = cur.execute(db.query("digest_lock_by_runs"), {"run_ids": list(run_ids)}).fetchall()
    return {row.run_id: row for row in rows if row.run_id is not None}


def close(conn: Conn, digest_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Digest]:
    """Close the open ones among these digests (their window ended); the closed rows by id."""
    if not digest_ids:
        return {}
    with conn.cursor(row_factory=db.dataclass_row(Digest)) as cur:
        rows = cur.execute(db.query("digest_close"), {"ids": list(digest_ids)}).fetchall()
    return {row.id: row for row in rows}


def cancel(conn: Conn, digest_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Digest]:
    """Close the open ones among these digests because their run was cancelled; the closed
    rows by id."""
    if not digest_ids:
        return {}
    with conn.cursor(row_factory=db.dataclass_row(Digest)) as cur:
        rows = cur.execute(db.query("digest_cancel"), {"ids": list(digest_ids)}).fetchall()
    return {row.id: row for row in rows}


@dataclass(frozen=True)
class Member:
    digest_id: uuid.UUID
    position: int
    notification_id: uuid.UUID
    delivery_id: uuid.UUID | None
    joined_at: dt.datetime
    recipient_id: str
    recipient_type: str
    assigns: dict[str, Any]


def members(conn: Conn, digest_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Member]]:
    """Each digest's members in the order they joined."""
    found: dict[uuid.UUID, list[Member]] = {d: [] for d in digest_ids}
    if not digest_ids:
        return found
    with conn.cursor(row_factory=db.dataclass_row(Member)) as cur:
        for row in cur.execute(db.query("digest_members"), {"digest_ids": list(digest_ids)}):
            found[row.digest_id].append(row)
    return found


def set_deliveries(conn: Conn, sent_as: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """(digest id, delivery id): the delivery each digest is sent as."""
    if sent_as:
        conn.execute(
            db.query("digest_set_delivery"),
            {"ids": [d for d, _ in sent_as], "delivery_ids": [x for _, x in sent_as]},
        )


@dataclass(frozen=True)
class DeliveryDigest(Digest):
    """The digest a delivery belongs to: as the digest's own delivery (``role`` digest)
    or a member's (``role`` member, at ``position``)."""

    role: str
    position: int | None
    delivery_status: str | None
    delivery_at: dt.datetime | None


def for_delivery(conn: Conn, tenant_id: str, delivery_id: uuid.UUID) -> DeliveryDigest | None:
    with conn.cursor(row_factory=db.dataclass_row(DeliveryDigest)) as cur:
        return cur.execute(
            db.query("digest_for_delivery"), {"tenant_id": tenant_id, "delivery_id": delivery_id}
        ).fetchone()


def set_contents(conn: Conn, contents: Sequence[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """(notification id, channel -> content): merged into the notifications' contents."""
    if contents:
        conn.execute(
            db.query("digest_set_contents"),
            {"ids": [n for n, _ in contents], "contents": [Jsonb(c) for _, c in contents]},
        )
