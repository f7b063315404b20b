"""Settings of a connection's session."""

from __future__ import annotations

from chimeway import db
from chimeway.db import Conn


def tune_for_delivery(conn: Conn) -> None:
    """Generic plans, and no sequential scans, for the rest of ``conn``'s session."""
    conn.execute(db.query("session_tune_for_delivery"))
