"""What the worker's due-time waker reads and sends (asynchronous: it runs on the worker's
event loop, beside Procrastinate's own tasks)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from chimeway import db

AsyncConn = psycopg.AsyncConnection[Any]

#: The channels Procrastinate's workers listen on (``procrastinate.manager``).
ANY_QUEUE_CHANNEL = "procrastinate_any_queue_v1"
QUEUE_CHANNEL = "procrastinate_queue_v1#"


async def prepare(conn: AsyncConn) -> None:
    """No server-side timeout may end the waker's blocking waits."""
    await conn.execute(db.query("waker_session"), prepare=False)


async def lock(conn: AsyncConn, key: str) -> None:
    """Wait until this session leads for ``key`` (a session advisory lock)."""
    await conn.execute(db.query("waker_lock"), {"key": key}, prepare=False)


async def listen(conn: AsyncConn) -> None:
    await conn.execute(db.query("waker_listen"), prepare=False)


@dataclass(frozen=True)
class Plan:
    db_now: dt.datetime
    due_queues: list[str]
    due_jobs: list[int]
    stale_queues: list[str]
    next_in: float | None  # seconds until the next due job; None: none is scheduled


async def plan(
    conn: AsyncConn,
    *,
    mark: dt.datetime,
    queues: Sequence[str] | None,
    stale_after: dt.timedelta,
    lookback: dt.timedelta,
) -> Plan:
    """What is due since ``mark``, what is due but still waiting, and when the next is due."""
    async with conn.cursor(row_factory=db.dataclass_row(Plan)) as cur:
        await cur.execute(
            db.query("waker_plan"),
            {
                "mark": mark,
                "queues": None if queues is None else list(queues),
                "stale_after": stale_after,
                "lookback": lookback,
            },
            prepare=False,
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def announce(conn: AsyncConn, jobs: Sequence[tuple[str, int]]) -> None:
    """Tell the workers of each queue that a job (given by id) is there to fetch."""
    channels: list[str] = []
    payloads: list[str] = []
    for queue, job_id in jobs:
        payload = json.dumps({"type": "job_inserted", "job_id": job_id})
        channels += [QUEUE_CHANNEL + queue, ANY_QUEUE_CHANNEL]
        payloads += [payload, payload]
    await conn.execute(
        db.query("waker_announce"), {"channels": channels, "payloads": payloads}, prepare=False
    )
