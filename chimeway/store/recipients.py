"""The recipient directory: profiles per tenant, read at send time, erased on request."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.results import RecipientRecord


def upsert(
    conn: Conn,
    tenant_id: str,
    recipient_id: str,
    fields: dict[str, Any],
    clear: Collection[str] = (),
) -> RecipientRecord:
    """Set ``fields``, empty the ``clear`` ones, keep the others (``data`` merges by key)."""
    data = fields.get("data")
    with conn.cursor(row_factory=db.dataclass_row(RecipientRecord)) as cur:
        row = cur.execute(
            db.query("recipient_upsert"),
            {
                "tenant_id": tenant_id,
                "recipient_id": recipient_id,
                "email": fields.get("email"),
                "phone": fields.get("phone"),
                "locale": fields.get("locale"),
                "timezone": fields.get("timezone"),
                "data": None if data is None else Jsonb(data),
                **{f"clear_{name}": name in clear for name in _CLEARABLE},
            },
        ).fetchone()
    assert row is not None
    return row


_CLEARABLE = ("email", "phone", "locale", "timezone", "data")


@dataclass(frozen=True)
class Inline:
    """A profile a notifier returned with its recipient: the fields it gave (others ``None``)."""

    recipient_id: str
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    data: dict[str, Any] | None = None


def upsert_inline(conn: Conn, tenant_id: str, profiles: Sequence[Inline]) -> None:
    """Merge these profiles into the directory in one statement (unchanged ones untouched)."""
    if not profiles:
        return
    conn.execute(
        db.query("recipients_upsert_inline"),
        {
            "tenant_id": tenant_id,
            "recipient_ids": [p.recipient_id for p in profiles],
            "emails": [p.email for p in profiles],
            "phones": [p.phone for p in profiles],
            "locales": [p.locale for p in profiles],
            "timezones": [p.timezone for p in profiles],
            "data": [Jsonb(p.data or {}) for p in profiles],
        },
    )


def get(conn: Conn, tenant_id: str, recipient_id: str) -> RecipientRecord | None:
    with conn.cursor(row_factory=db.dataclass_row(RecipientRecord)) as cur:
        return cur.execute(
            db.query("recipient_get"), {"tenant_id": tenant_id, "recipient_id": recipient_id}
        ).fetchone()


def for_pairs(
    conn: Conn, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], RecipientRecord]:
    """The profiles of these (tenant, recipient) pairs, in one round trip; missing ones are
    left out."""
    if not pairs:
        return {}
    unique = sorted(set(pairs))
    with conn.cursor(row_factory=db.dataclass_row(RecipientRecord)) as cur:
        rows = cur.execute(
            db.query("recipients_for"),
            {
                "tenant_ids": [tenant for tenant, _ in unique],
                "recipient_ids": [recipient for _, recipient in unique],
            },
        ).fetchall()
    return {(row.tenant_id, row.recipient_id): row for row in rows}


@dataclass(frozen=True)
class Erased:
    profile_deleted: bool
    notifications: int
    deliveries: int


def forget(conn: Conn, tenant_id: str, recipient_id: str) -> Erased:
    """Delete the profile and erase the rendered content of the recipient's notifications
    and deliveries (their rows, statuses and histories stay)."""
    params = {"tenant_id": tenant_id, "recipient_id": recipient_id}
    deleted = conn.execute(db.query("recipient_delete"), params).fetchone() is not None
    row = conn.execute(db.query("recipient_erase_content"), params).fetchone()
    assert row is not None
    return Erased(deleted, int(row[0]), int(row[1]))
