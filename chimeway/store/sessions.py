"""Settings of a connection's session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Self

import psycopg
from psycopg.rows import Row

from chimeway import db
from chimeway.db import Conn


def tune_for_delivery(conn: Conn) -> None:
    """Generic plans, and no sequential scans, for the rest of ``conn``'s session."""
    conn.execute(db.query("session_tune_for_delivery"))


def forget_prepared(conn: Conn) -> None:
    """Drop every statement psycopg prepared on ``conn`` (psycopg forgets them as well), so
    that each is prepared again, against the schema as it is now."""
    conn.execute(db.query("session_forget_prepared"), prepare=False)


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


def stale_plan(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing to run a statement prepared before a migration
    changed the columns it returns ("cached plan must not change result type": a
    ``SELECT *`` or ``RETURNING *`` of a table that gained, lost or reordered columns while
    the process ran). Told by the server routine that raises it, which no server language
    setting translates."""
    return (
        isinstance(exc, psycopg.errors.FeatureNotSupported)
        and exc.diag.source_function == "RevalidateCachedQuery"
    )


class Replanning(psycopg.Cursor[Row]):
    """The cursors of the engine's pools. A process that keeps running while ``chimeway
    migrate`` changes a table's columns holds statements prepared for the old ones, which
    PostgreSQL then refuses (:func:`stale_plan`) on that connection until psycopg forgets
    them. A rollback makes psycopg forget them, so a transaction fails once and its next try
    runs; a statement in autocommit, where nothing makes psycopg forget them and every call
    would fail again, is prepared again here and run once more (nothing else was done)."""

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        try:
            return super().execute(query, params, prepare=prepare, binary=binary)
        except psycopg.errors.FeatureNotSupported as exc:
            if not (stale_plan(exc) and self.connection.autocommit):
                raise
        forget_prepared(self.connection)
        return super().execute(query, params, prepare=prepare, binary=binary)
