"""The figures ``GET /metrics`` and ``GET /healthz`` report, read from the tables."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from chimeway import db
from chimeway.db import Conn


@dataclass(frozen=True)
class Count:
    """A row count by up to two labels."""

    first: str
    second: str
    n: int


def deliveries(conn: Conn) -> list[Count]:
    """Deliveries by channel and status."""
    rows = conn.execute(db.query("metrics_deliveries")).fetchall()
    return [Count(channel, status, int(n)) for channel, status, n in rows]


def attempts(conn: Conn) -> list[Count]:
    """Attempts by outcome and error class ('' for a success)."""
    rows = conn.execute(db.query("metrics_attempts")).fetchall()
    return [Count(outcome, error_class, int(n)) for outcome, error_class, n in rows]


@dataclass(frozen=True)
class Latency:
    channel: str
    count: int
    total_seconds: float
    p50: float
    p90: float
    p99: float


def send_latency(conn: Conn, window: dt.timedelta) -> list[Latency]:
    """Send latency by channel over the attempts finished within ``window``."""
    rows = conn.execute(db.query("metrics_send_latency"), {"window": window}).fetchall()
    return [
        Latency(channel, int(n), float(total), *(float(q) for q in quantiles))
        for channel, n, total, quantiles in rows
    ]


@dataclass(frozen=True)
class Queue:
    queue: str
    due: int
    scheduled: int
    running: int
    oldest_due_seconds: float


def queues(conn: Conn) -> list[Queue]:
    """Procrastinate's jobs by queue: due, scheduled, running, and the oldest due job's wait."""
    with conn.cursor(row_factory=db.dataclass_row(Queue)) as cur:
        return cur.execute(db.query("metrics_queues")).fetchall()


def ingress(conn: Conn) -> list[Count]:
    """Webhook ingress rows by state."""
    rows = conn.execute(db.query("metrics_ingress")).fetchall()
    return [Count(state, "", int(n)) for state, n in rows]


def ping(conn: Conn) -> None:
    """A round trip: the database answers."""
    conn.execute(db.query("metrics_ping")).fetchone()
