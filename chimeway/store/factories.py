"""Bulk seeding for tests and benchmarks: many waiting runs built server-side (see
``sql/queries/factories.sql``); :mod:`chimeway.testing` is the public way in."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn


def _steps() -> list[tuple[str, LiteralString]]:
    return [
        ("events", db.query("seed_events")),
        ("notifications", db.query("seed_notifications")),
        ("workflow_runs", db.query("seed_runs_waiting")),
        ("deliveries", db.query("seed_deliveries_sent")),
        ("delivery_transitions", db.query("seed_delivery_transitions")),
        ("delivery_attempts", db.query("seed_attempts")),
        ("workflow_transitions", db.query("seed_run_transitions")),
        ("procrastinate_jobs (timers)", db.query("seed_timer_jobs")),
    ]


@dataclass(frozen=True)
class Seeded:
    table: str
    rows: int
    seconds: float


@dataclass(frozen=True)
class WaitingSeed:
    """What to seed: ``runs`` runs of one definition, waiting after their delivered step
    ``step_key`` (id ``step_id``, channel ``channel``) for ``to_step``."""

    tenant_id: str
    notification_key: str
    definition_id: uuid.UUID
    step_id: uuid.UUID
    step_key: str
    channel: str
    to_step: str
    signals: Sequence[str]
    contents: dict[str, Any]
    runs: int
    stride: int
    spread: dt.timedelta
    horizon: dt.timedelta


def seed_waiting(conn: Conn, seed: WaitingSeed) -> list[Seeded]:
    """Insert the rows, table by table; how many each statement wrote and how long it took."""
    params = {
        "tenant_id": seed.tenant_id,
        "notification_key": seed.notification_key,
        "definition_id": seed.definition_id,
        "step_id": seed.step_id,
        "step_key": seed.step_key,
        "channel": seed.channel,
        "to_step": seed.to_step,
        "signals": list(seed.signals),
        "contents": Jsonb(seed.contents),
        "render_data": Jsonb(seed.contents.get(seed.channel, {})),
        "runs": seed.runs,
        "stride": seed.stride,
        "spread": seed.spread,
        "horizon": seed.horizon,
    }
    done = []
    for table, statement in _steps():
        started = time.perf_counter()
        rows = conn.execute(statement, params).rowcount
        done.append(Seeded(table, rows, time.perf_counter() - started))
    return done


def orphans(conn: Conn) -> int:
    """Runs without their notification and run deliveries without their run."""
    row = conn.execute(db.query("seed_orphans_count")).fetchone()
    return int(row[0]) if row else 0


def fast_on(conn: Conn) -> None:
    """Seed without per-row trigger work (foreign keys, notifications); a superuser only."""
    conn.execute(db.query("seed_fast_on"))


def fast_off(conn: Conn) -> None:
    conn.execute(db.query("seed_fast_off"))


def analyze(conn: Conn) -> None:
    """VACUUM ANALYZE the database (in autocommit), so plans see the seeded sizes."""
    conn.execute(db.query("seed_analyze"))
