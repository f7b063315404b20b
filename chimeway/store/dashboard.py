"""The operator dashboard's reads: a tenant's runs and deliveries, and the job queues."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from chimeway import db
from chimeway.db import Conn


@dataclass(frozen=True)
class StateCount:
    label: str
    n: int


@dataclass(frozen=True)
class DeliveryRow:
    """A delivery as the dashboard lists it (no content: ids, channel, status, times)."""

    id: uuid.UUID
    recipient_id: str
    channel: str
    status: str
    suppression_reason: str | None
    workflow_run_id: uuid.UUID | None
    workflow_key: str | None
    created_at: dt.datetime
    status_changed_at: dt.datetime
    attempts: int


@dataclass(frozen=True)
class JobAge:
    """Running jobs of a queue: the oldest one's age, and how many a stalled worker holds."""

    queue: str
    oldest_running_seconds: float
    stalled: int


def run_states(conn: Conn, tenant_id: str) -> list[StateCount]:
    with conn.cursor(row_factory=db.dataclass_row(StateCount)) as cur:
        return cur.execute(db.query("dashboard_run_states"), {"tenant_id": tenant_id}).fetchall()


def delivery_statuses(conn: Conn, tenant_id: str) -> list[StateCount]:
    with conn.cursor(row_factory=db.dataclass_row(StateCount)) as cur:
        return cur.execute(
            db.query("dashboard_delivery_statuses"), {"tenant_id": tenant_id}
        ).fetchall()


def deliveries(
    conn: Conn,
    tenant_id: str,
    *,
    status: str | None,
    channel: str | None,
    recipient_id: str | None,
    limit: int,
) -> list[DeliveryRow]:
    with conn.cursor(row_factory=db.dataclass_row(DeliveryRow)) as cur:
        return cur.execute(
            db.query("dashboard_deliveries"),
            {
                "tenant_id": tenant_id,
                "status": status,
                "channel": channel,
                "recipient_id": recipient_id,
                "limit": limit,
            },
        ).fetchall()


def stuck_deliveries(
    conn: Conn, tenant_id: str, stuck_after: dt.timedelta, limit: int
) -> list[DeliveryRow]:
    with conn.cursor(row_factory=db.dataclass_row(DeliveryRow)) as cur:
        return cur.execute(
            db.query("dashboard_stuck_deliveries"),
            {"tenant_id": tenant_id, "stuck_after": stuck_after, "limit": limit},
        ).fetchall()


def job_ages(conn: Conn, stalled_after: dt.timedelta) -> list[JobAge]:
    with conn.cursor(row_factory=db.dataclass_row(JobAge)) as cur:
        return cur.execute(
            db.query("dashboard_job_ages"), {"stalled_after": stalled_after}
        ).fetchall()
