"""What ``chimeway doctor`` reads: workers, jobs, overdue waits, and LISTEN/NOTIFY."""

from __future__ import annotations

import datetime as dt
from typing import Any, LiteralString

from psycopg import sql

from chimeway import db
from chimeway.db import Conn


def _count(conn: Conn, query: LiteralString, **params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def workers_recent(conn: Conn, within: dt.timedelta) -> int:
    """Workers whose heartbeat is younger than ``within``."""
    return _count(conn, db.query("health_workers_recent"), within=within)


def jobs_stalled(conn: Conn, within: dt.timedelta) -> int:
    """Running jobs whose worker is gone or silent for ``within``."""
    return _count(conn, db.query("health_jobs_stalled"), within=within)


def jobs_failed(conn: Conn) -> int:
    """Chimeway's jobs that failed for good."""
    return _count(conn, db.query("health_jobs_failed"))


def runs_overdue(conn: Conn, grace: dt.timedelta) -> int:
    """Waiting runs more than ``grace`` past due."""
    return _count(conn, db.query("health_runs_overdue"), grace=grace)


def listen(conn: Conn, channel: str) -> None:
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def notify(conn: Conn, channel: str) -> None:
    conn.execute(db.query("health_notify"), {"channel": channel})
