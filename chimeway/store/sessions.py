"""Settings of a connection's session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg

from chimeway import db
from chimeway.db import Conn


def tune_for_delivery(conn: Conn) -> None:
    """Generic plans, and no sequential scans, for the rest of ``conn``'s session."""
    conn.execute(db.query("session_tune_for_delivery"))


@contextmanager
def local_setting(conn: Conn, name: str, value: str, *, restore: bool) -> Iterator[None]:
    """Setting ``name`` to ``value`` for the statements run in the block, inside ``conn``'s
    transaction only (``set_config(..., true)``): it ends with the transaction, or with a
    savepoint rolled back. With ``restore`` (the caller's transaction goes on after the
    block), the value found is set back when the block ends, unless the transaction failed
    (its rollback takes the setting with it)."""
    row = conn.execute(db.query("session_set_local"), {"name": name, "value": value}).fetchone()
    assert row is not None
    try:
        yield
    finally:
        if restore and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            conn.execute(db.query("session_set_local_back"), {"name": name, "was": row[0]})


def generic_plans(conn: Conn, *, restore: bool) -> AbstractContextManager[None]:
    """Generic plans for the statements run in the block (:func:`local_setting`).

    PostgreSQL plans a prepared statement anew for every call while it estimates a plan for
    the call's own values cheaper than the generic one, which it always does for the
    statements that take arrays of a few rows (planning's policy read: about 1.8 ms of
    planning per call)."""
    return local_setting(conn, "plan_cache_mode", "force_generic_plan", restore=restore)


def savepoint(conn: Conn) -> None:
    """Take the savepoint :func:`chimeway.engine.connections.together` works in."""
    conn.execute(db.query("session_savepoint"))


def release_savepoint(conn: Conn) -> None:
    conn.execute(db.query("session_savepoint_release"))


def back_to_savepoint(conn: Conn) -> None:
    """Undo what was done since :func:`savepoint` (its transaction usable again)."""
    conn.execute(db.query("session_savepoint_back"))
