"""The processes that claim deliveries beat here; takeovers read it (design §5)."""

from __future__ import annotations

import datetime as dt
import uuid

from chimeway import db
from chimeway.db import Conn


def beat(conn: Conn, process_id: uuid.UUID, *, host: str, pid: int, gap: dt.timedelta) -> None:
    """Register this process or record that it is alive."""
    conn.execute(db.query("process_beat"), {"id": process_id, "host": host, "pid": pid, "gap": gap})


def forget(conn: Conn, process_id: uuid.UUID) -> None:
    """This process stops cleanly: it holds no delivery any more."""
    conn.execute(db.query("process_forget"), {"id": process_id})


def prune(conn: Conn, older_than: dt.timedelta) -> int:
    """Remove processes silent for ``older_than``; how many."""
    return conn.execute(db.query("processes_prune"), {"older_than": older_than}).rowcount
