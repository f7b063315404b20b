"""Preferences: per tenant, a recipient's rules or the tenant's defaults (``recipient_id``
``None``), one per scope (channel, category, workflow), matching
:class:`chimeway.policy.PreferenceScope`."""

from __future__ import annotations

import datetime as dt
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
