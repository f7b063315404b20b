"""What the periodic prune removes: per kind, a count and the delete of one batch, under the
same rule (``sql/queries/retention.sql``). A batch skips rows another transaction holds."""

from __future__ import annotations

import datetime as dt
from typing import Any, LiteralString

from chimeway import db
from chimeway.db import Conn
from chimeway.types import TERMINAL_DELIVERY_STATUSES, RunState

#: Runs that may still change (and send): never pruned, nor is their event.
LIVE_RUN_STATES = (RunState.ACTIVE, RunState.WAITING)


def count_jobs(conn: Conn, older_than: dt.timedelta) -> tuple[int, int]:
    """Finished Procrastinate jobs idle for ``older_than``, and their events."""
    row = conn.execute(db.query("retention_jobs_count"), {"older_than": older_than}).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def delete_jobs(conn: Conn, older_than: dt.timedelta, limit: int) -> tuple[int, int]:
    """Remove up to ``limit`` of those jobs with their events; how many of each."""
    row = conn.execute(
        db.query("retention_jobs_delete"), {"older_than": older_than, "limit": limit}
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def count_periodic_defers(conn: Conn, older_than: dt.timedelta) -> int:
    """Periodic-defer rows of Procrastinate deferred longer ago than ``older_than``."""
    return _scalar(conn, db.query("retention_periodic_defers_count"), older_than)


def delete_periodic_defers(conn: Conn, older_than: dt.timedelta, limit: int) -> int:
    return _deleted(conn, db.query("retention_periodic_defers_delete"), older_than, limit)


def count_events(conn: Conn, older_than: dt.timedelta) -> int:
    """Events whose deliveries and runs are all finished and untouched for ``older_than``."""
    return _scalar(conn, db.query("retention_events_count"), older_than, **_event_rule())


def delete_events(conn: Conn, older_than: dt.timedelta, limit: int) -> int:
    """Remove up to ``limit`` of those events, oldest first, with everything under them
    (no foreign key cascades there: the second statement deletes the children itself).
    Run it in a transaction: the first statement's locks keep the batch whole."""
    params = {"older_than": older_than, "limit": limit, **_event_rule()}
    ids = [row[0] for row in conn.execute(db.query("retention_events_lock"), params)]
    if not ids:
        return 0
    return conn.execute(db.query("retention_events_delete"), {"ids": ids}).rowcount


def count_signals(conn: Conn, older_than: dt.timedelta) -> int:
    """Signals routed longer ago than ``older_than``."""
    return _scalar(conn, db.query("retention_signals_count"), older_than)


def delete_signals(conn: Conn, older_than: dt.timedelta, limit: int) -> int:
    return _deleted(conn, db.query("retention_signals_delete"), older_than, limit)


def count_webhooks(conn: Conn, older_than: dt.timedelta) -> int:
    """Webhook ingress rows no longer queued, received longer ago than ``older_than``."""
    return _scalar(conn, db.query("retention_webhooks_count"), older_than)


def delete_webhooks(conn: Conn, older_than: dt.timedelta, limit: int) -> int:
    return _deleted(conn, db.query("retention_webhooks_delete"), older_than, limit)


def count_processes(conn: Conn, older_than: dt.timedelta) -> int:
    """Processes silent for longer than ``older_than`` (``store.processes.prune`` removes
    them)."""
    return _scalar(conn, db.query("retention_processes_count"), older_than)


def _event_rule() -> dict[str, Any]:
    return {"terminal": sorted(TERMINAL_DELIVERY_STATUSES), "live_runs": list(LIVE_RUN_STATES)}


def _scalar(conn: Conn, sql: LiteralString, older_than: dt.timedelta, **params: Any) -> int:
    row = conn.execute(sql, {"older_than": older_than, **params}).fetchone()
    return int(row[0]) if row else 0


def _deleted(
    conn: Conn, sql: LiteralString, older_than: dt.timedelta, limit: int, **params: Any
) -> int:
    return conn.execute(sql, {"older_than": older_than, "limit": limit, **params}).rowcount
