"""The database is the clock (design §1.7)."""

from __future__ import annotations

import datetime as dt

from chimeway import db
from chimeway.db import Conn


def now(conn: Conn) -> dt.datetime:
    """The current transaction's timestamp on the database's clock."""
    row = conn.execute(db.query("clock_now")).fetchone()
    assert row is not None
    value: dt.datetime = row[0]
    return value
