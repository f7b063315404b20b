"""The in-app inbox: a recipient's feed, its counts and marks, and the channel that wakes
open streams (design §14)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from chimeway import db
from chimeway.db import Conn
from chimeway.results import InboxAction, InboxCounts, InboxItem

#: The NOTIFY channel of inbox changes.
CHANNEL = "chimeway_inbox"


def notify(conn: Conn, payloads: Sequence[str]) -> None:
    """Notify the inbox channel once per payload, at the caller's commit."""
    if payloads:
        conn.execute(db.query("inbox_notify"), {"payloads": list(payloads)})


async def listen(conn: psycopg.AsyncConnection[Any]) -> None:
    """Subscribe ``conn`` (in autocommit mode) to the inbox channel."""
    await conn.execute(db.query("inbox_listen"))


@dataclass(frozen=True)
class Filter:
    """Which items of a feed a page holds."""

    archived: bool = False
    unread: bool = False
    unseen: bool = False


def page(
    conn: Conn,
    tenant_id: str,
    recipient_id: str,
    *,
    before: tuple[dt.datetime, uuid.UUID],
    only: Filter,
    limit: int,
) -> list[InboxItem]:
    """Up to ``limit`` items placed before ``before`` (delivered_at, id), newest first."""
    with conn.cursor(row_factory=db.dataclass_row(InboxItem)) as cur:
        return cur.execute(
            db.query("inbox_list"),
            {
                "tenant_id": tenant_id,
                "recipient_id": recipient_id,
                "before_at": before[0],
                "before_id": before[1],
                "archived": only.archived,
                "unread": only.unread,
                "unseen": only.unseen,
                "limit": limit,
            },
        ).fetchall()


def since(
    conn: Conn, tenant_id: str, recipient_id: str, since: dt.datetime, limit: int
) -> list[InboxItem]:
    """Up to ``limit`` unarchived items delivered at or after ``since``, oldest first."""
    with conn.cursor(row_factory=db.dataclass_row(InboxItem)) as cur:
        return cur.execute(
            db.query("inbox_since"),
            {"tenant_id": tenant_id, "recipient_id": recipient_id, "since": since, "limit": limit},
        ).fetchall()


@dataclass(frozen=True)
class Addressed:
    """An item with the inbox it is in."""

    tenant_id: str
    recipient_id: str
    item: InboxItem


@dataclass(frozen=True)
class _AddressedRow:
    tenant_id: str
    recipient_id: str
    id: uuid.UUID
    category: str | None
    content: dict[str, Any]
    created_at: dt.datetime
    delivered_at: dt.datetime
    seen_at: dt.datetime | None
    read_at: dt.datetime | None
    archived_at: dt.datetime | None


def items(conn: Conn, notification_ids: Sequence[uuid.UUID]) -> list[Addressed]:
    """These notifications as inbox items (those in an inbox), oldest first."""
    if not notification_ids:
        return []
    with conn.cursor(row_factory=db.dataclass_row(_AddressedRow)) as cur:
        rows = cur.execute(
            db.query("inbox_items_by_ids"), {"ids": list(notification_ids)}
        ).fetchall()
    return [
        Addressed(
            r.tenant_id,
            r.recipient_id,
            InboxItem(
                r.id,
                r.category,
                r.content,
                r.created_at,
                r.delivered_at,
                r.seen_at,
                r.read_at,
                r.archived_at,
            ),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class _CountsRow:
    tenant_id: str
    recipient_id: str
    unseen: int
    unread: int
    total: int


def counts(conn: Conn, inboxes: Sequence[tuple[str, str]]) -> dict[tuple[str, str], InboxCounts]:
    """The counts of each (tenant, recipient) inbox, in one statement."""
    if not inboxes:
        return {}
    with conn.cursor(row_factory=db.dataclass_row(_CountsRow)) as cur:
        rows = cur.execute(
            db.query("inbox_counts"),
            {
                "tenant_ids": [tenant for tenant, _ in inboxes],
                "recipient_ids": [recipient for _, recipient in inboxes],
            },
        ).fetchall()
    return {(r.tenant_id, r.recipient_id): InboxCounts(r.unseen, r.unread, r.total) for r in rows}


@dataclass(frozen=True)
class MarkedRow:
    """An item a mark changed, and whether it became seen or read by it."""

    id: uuid.UUID
    became_seen: bool
    became_read: bool


def mark(
    conn: Conn,
    tenant_id: str,
    recipient_id: str,
    notification_ids: Sequence[uuid.UUID] | None,
    action: InboxAction,
) -> list[MarkedRow]:
    """Apply ``action`` to the recipient's items (``None``: all of them); the rows it changed."""
    with conn.cursor(row_factory=db.dataclass_row(MarkedRow)) as cur:
        return cur.execute(
            db.query("inbox_mark"),
            {
                "tenant_id": tenant_id,
                "recipient_id": recipient_id,
                "all": notification_ids is None,
                "ids": list(notification_ids or []),
                "action": action,
            },
        ).fetchall()
