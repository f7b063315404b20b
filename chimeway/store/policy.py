"""Policy reads and settings (design §13): what planning decides deliveries on, read in one
statement per batch; quiet hours and caps of recipients and tenants; throttle grants."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chimeway import db
from chimeway.db import Conn
from chimeway.store import sessions
from chimeway.types import DeliveryStatus, OrchestrationState


@dataclass(frozen=True)
class PlanInput:
    """A delivery about to be planned, with its facts; ``inherit``: take them from its
    notification's first delivery instead (a workflow's later steps)."""

    tenant_id: str
    recipient_id: str
    notification_id: uuid.UUID
    channel: str
    category: str | None
    workflow_key: str | None
    inherit: bool


@dataclass(frozen=True)
class PlanPolicy:
    """One :class:`PlanInput`'s facts (its own, or inherited) and its recipient's policy, as
    JSON: ``rules`` that can apply to it (``recipient``, ``channel``, ``category``,
    ``workflow``, ``enabled``, ``set_at``, ``source``), ``quiet`` (``recipient``, ``start``,
    ``end``, ``timezone``) and ``caps`` (``recipient``, ``channel``, ``max_count``,
    ``per_seconds``, ``recent``)."""

    n: int
    rules: list[dict[str, Any]]
    quiet: dict[str, Any] | None
    caps: list[dict[str, Any]]
    profile_timezone: str | None
    category: str | None
    workflow_key: str | None
    critical: bool
    bypass_quiet_hours: bool
    db_now: dt.datetime


#: Above this many deliveries, the policy read turns JIT compilation off while it runs, then
#: puts the transaction's setting back (the caller's own included). The read's estimated
#: cost grows with its rows and crosses jit_above_cost at a few thousand, and compiling it
#: took 2-3 s where running it took 0.2-0.3 s (10,000 rows, PostgreSQL 15).
JIT_FREE = 200


def for_plans(
    conn: Conn, plans: Sequence[PlanInput], at: dt.datetime | None = None
) -> list[PlanPolicy]:
    """The policy of each delivery about to be planned that some policy can apply to (and
    of each with ``inherit``), in input order (``n``: its 1-based position in
    ``plans``), on the database's clock (or at ``at``, for tests). Those left out have no
    policy that can apply (``chimeway_policy_scope``): they go through as planned."""
    if not plans:
        return []
    if len(plans) <= JIT_FREE:
        return _for_plans(conn, plans, at)
    with sessions.local_setting(conn, "jit", "off", restore=True):
        return _for_plans(conn, plans, at)


def _for_plans(conn: Conn, plans: Sequence[PlanInput], at: dt.datetime | None) -> list[PlanPolicy]:
    with conn.cursor(row_factory=db.dataclass_row(PlanPolicy)) as cur:
        return cur.execute(
            db.query("policy_for_plans"),
            {
                "tenant_ids": [p.tenant_id for p in plans],
                "recipient_ids": [p.recipient_id for p in plans],
                "notification_ids": [p.notification_id for p in plans],
                "channels": [p.channel for p in plans],
                "categories": [p.category for p in plans],
                "workflow_keys": [p.workflow_key for p in plans],
                "inherit": [p.inherit for p in plans],
                "at": at,
            },
        ).fetchall()


@dataclass(frozen=True)
class ClaimPolicy:
    """A delivery about to be claimed: its state and facts and, when it is still to be sent
    (``open``), its recipient's policy (JSON, as :class:`PlanPolicy`'s; only the rules that
    can apply to it)."""

    id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    status: DeliveryStatus
    orchestration_state: OrchestrationState
    next_eligible_at: dt.datetime | None
    retry_at: dt.datetime | None
    status_changed_at: dt.datetime
    created_at: dt.datetime
    category: str | None
    workflow_key: str | None
    critical: bool
    bypass_quiet_hours: bool
    workflow_run_id: uuid.UUID | None
    open: bool
    rules: list[dict[str, Any]]
    quiet: dict[str, Any] | None
    profile_timezone: str | None
    caps: list[dict[str, Any]]
    db_now: dt.datetime


def for_deliveries(conn: Conn, delivery_ids: Sequence[uuid.UUID]) -> list[ClaimPolicy]:
    """The state, facts and policy of these deliveries (missing ones are left out)."""
    with conn.cursor(row_factory=db.dataclass_row(ClaimPolicy)) as cur:
        return cur.execute(
            db.query("policy_for_deliveries"), {"ids": list(delivery_ids)}
        ).fetchall()


@dataclass(frozen=True)
class Grant:
    """Sends granted under a throttle key now (``db_now``), and the window's earlier
    grants as (instant, sends)."""

    granted: int
    db_now: dt.datetime
    recent: list[tuple[dt.datetime, int]]


def throttle_lock(conn: Conn, key: str) -> None:
    """Take the key's turn, held until the transaction ends. Call it inside a transaction,
    before :func:`throttle_grant` (a statement of its own, so it reads what the previous
    holder committed)."""
    conn.execute(db.query("throttle_lock"), {"key": key})


def throttle_grant(conn: Conn, key: str, *, wanted: int, limit: int, per: dt.timedelta) -> Grant:
    """Grant up to ``wanted`` sends under ``key`` at the transaction's instant, holding the
    key's turn (:func:`throttle_lock`)."""
    row = conn.execute(
        db.query("throttle_grant"), {"key": key, "wanted": wanted, "limit": limit, "per": per}
    ).fetchone()
    assert row is not None
    granted, db_now, recent = row
    return Grant(
        int(granted),
        db_now,
        [(dt.datetime.fromisoformat(at), int(sends)) for at, sends in recent],
    )


@dataclass(frozen=True)
class QuietHoursRow:
    tenant_id: str
    recipient_id: str | None
    start_time: dt.time | None
    end_time: dt.time | None
    timezone: str | None
    set_at: dt.datetime


def quiet_hours_set(
    conn: Conn,
    tenant_id: str,
    recipient_id: str | None,
    start: dt.time | None,
    end: dt.time | None,
    timezone: str | None,
) -> QuietHoursRow:
    with conn.cursor(row_factory=db.dataclass_row(QuietHoursRow)) as cur:
        row = cur.execute(
            db.query("quiet_hours_set"),
            {
                "tenant_id": tenant_id,
                "recipient_id": recipient_id,
                "start_time": start,
                "end_time": end,
                "timezone": timezone,
            },
        ).fetchone()
    assert row is not None
    return row


def quiet_hours_delete(conn: Conn, tenant_id: str, recipient_id: str | None) -> bool:
    cur = conn.execute(
        db.query("quiet_hours_delete"), {"tenant_id": tenant_id, "recipient_id": recipient_id}
    )
    return cur.rowcount > 0


def quiet_hours_list(conn: Conn, tenant_id: str, recipient_id: str | None) -> list[QuietHoursRow]:
    """The recipient's row, then the tenant's default (only the default with ``None``)."""
    with conn.cursor(row_factory=db.dataclass_row(QuietHoursRow)) as cur:
        return cur.execute(
            db.query("quiet_hours_list"), {"tenant_id": tenant_id, "recipient_id": recipient_id}
        ).fetchall()


@dataclass(frozen=True)
class CapRow:
    tenant_id: str
    recipient_id: str | None
    channel: str | None
    max_count: int | None
    per: dt.timedelta | None
    set_at: dt.datetime


def cap_set(
    conn: Conn,
    tenant_id: str,
    recipient_id: str | None,
    channel: str | None,
    max_count: int | None,
    per: dt.timedelta | None,
) -> CapRow:
    with conn.cursor(row_factory=db.dataclass_row(CapRow)) as cur:
        row = cur.execute(
            db.query("cap_set"),
            {
                "tenant_id": tenant_id,
                "recipient_id": recipient_id,
                "channel": channel,
                "max_count": max_count,
                "per": per,
            },
        ).fetchone()
    assert row is not None
    return row


def cap_delete(conn: Conn, tenant_id: str, recipient_id: str | None, channel: str | None) -> bool:
    cur = conn.execute(
        db.query("cap_delete"),
        {"tenant_id": tenant_id, "recipient_id": recipient_id, "channel": channel},
    )
    return cur.rowcount > 0


def caps_list(conn: Conn, tenant_id: str, recipient_id: str | None) -> list[CapRow]:
    """The recipient's caps, then the tenant's defaults (only the defaults with ``None``)."""
    with conn.cursor(row_factory=db.dataclass_row(CapRow)) as cur:
        return cur.execute(
            db.query("caps_list"), {"tenant_id": tenant_id, "recipient_id": recipient_id}
        ).fetchall()
