"""Preferences: per tenant, a recipient's rules or the tenant's defaults (``recipient_id``
``None``), one per scope (channel, category, workflow), matching
:class:`chimeway.policy.PreferenceScope`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from chimeway import db
from chimeway.db import Conn


@dataclass(frozen=True)
class Preference:
    id: int
    tenant_id: str
    recipient_id: str | None
    channel: str | None
    category: str | None
    workflow: str | None
    enabled: bool
    set_at: dt.datetime
    source: str


def set_rule(
    conn: Conn,
    *,
    tenant_id: str,
    recipient_id: str | None,
    channel: str | None = None,
    category: str | None = None,
    workflow: str | None = None,
    enabled: bool,
    source: str,
    set_at: dt.datetime | None = None,
) -> Preference | None:
    """Set the rule of one scope (at ``set_at``, default now); ``None`` when a rule set
    later for that scope is kept instead."""
    with conn.cursor(row_factory=db.dataclass_row(Preference)) as cur:
        return cur.execute(
            db.query("preference_set"),
            {
                "tenant_id": tenant_id,
                "recipient_id": recipient_id,
                "channel": channel,
                "category": category,
                "workflow": workflow,
                "enabled": enabled,
                "source": source,
                "set_at": set_at,
            },
        ).fetchone()


@dataclass(frozen=True)
class NewRule:
    """One rule for :func:`set_many`: ``recipient_id`` ``None`` is the tenant's default."""

    recipient_id: str | None
    channel: str | None
    category: str | None
    workflow: str | None
    enabled: bool


def set_many(
    conn: Conn,
    tenant_id: str,
    rules: Sequence[NewRule],
    *,
    source: str,
    set_at: dt.datetime | None = None,
) -> list[Preference]:
    """Set many scopes' rules in one statement (each scope at most once); the rows set."""
    with conn.cursor(row_factory=db.dataclass_row(Preference)) as cur:
        return cur.execute(
            db.query("preference_set_many"),
            {
                "tenant_id": tenant_id,
                "recipient_ids": [r.recipient_id for r in rules],
                "channels": [r.channel for r in rules],
                "categories": [r.category for r in rules],
                "workflows": [r.workflow for r in rules],
                "enabled": [r.enabled for r in rules],
                "source": source,
                "set_at": set_at,
            },
        ).fetchall()


def delete(
    conn: Conn,
    *,
    tenant_id: str,
    recipient_id: str | None,
    channel: str | None,
    category: str | None,
    workflow: str | None,
) -> bool:
    """Remove the rule of one scope; whether there was one."""
    cur = conn.execute(
        db.query("preference_delete"),
        {
            "tenant_id": tenant_id,
            "recipient_id": recipient_id,
            "channel": channel,
            "category": category,
            "workflow": workflow,
        },
    )
    return cur.rowcount > 0


def list_for(conn: Conn, tenant_id: str, recipient_id: str | None) -> list[Preference]:
    """The recipient's rules, then the tenant's defaults (only those with ``None``)."""
    with conn.cursor(row_factory=db.dataclass_row(Preference)) as cur:
        return cur.execute(
            db.query("preference_list"), {"tenant_id": tenant_id, "recipient_id": recipient_id}
        ).fetchall()
