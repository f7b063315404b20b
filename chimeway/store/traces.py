"""The trace context a worker continues: the traceparent stored with each event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from chimeway import db
from chimeway.db import Conn


def for_deliveries(conn: Conn, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The traceparent of each delivery's trigger, for those whose trigger was traced."""
    if not delivery_ids:
        return {}
    rows = conn.execute(db.query("traces_for_deliveries"), {"ids": list(delivery_ids)})
    return {row[0]: row[1] for row in rows.fetchall()}


def for_run(conn: Conn, run_id: uuid.UUID) -> str | None:
    """The traceparent of the trigger that started the run, if it was traced."""
    row = conn.execute(db.query("traces_for_run"), {"run_id": run_id}).fetchone()
    return None if row is None else row[0]
