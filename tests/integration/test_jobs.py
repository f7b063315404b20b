"""The deferrer: jobs built in the database, one per id or one per chunk of deliveries,
exactly as Procrastinate's own. Each test defers inside a transaction that is rolled back."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from procrastinate.exceptions import AlreadyEnqueued

from chimeway import Chimeway
from chimeway.db import Conn
from chimeway.store.jobs import Deferrer


@pytest.fixture
def conn(db: Conn) -> Conn:
    """``db`` with its transaction open, as a ``cw.transaction()`` is: the deferrer's
    savepoints nest in it (on an idle connection, psycopg would begin and commit one)."""
    db.execute("SELECT 1")
    return db


def job_rows(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT id, queue_name, task_name, priority, lock, queueing_lock, args, status,"
        " scheduled_at FROM procrastinate_jobs ORDER BY id"
    ).fetchall()


def test_deliver_jobs_one_per_delivery_in_order_when_not_batched(conn: Conn) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    job_ids = Deferrer(delivery_batch_size=1).deliver(conn, ids, schedule_at=at)
    rows = job_rows(conn)
    assert [r[0] for r in rows] == job_ids
    assert [r[1:] for r in rows] == [
        (
            "chimeway_delivery",
            "chimeway:deliver",
            0,
            None,
            f"chimeway:deliver:{d}",
            {"delivery_id": str(d)},
            "todo",
            at,
        )
        for d in ids
    ]


def test_deliveries_planned_together_share_chunk_jobs_in_order(conn: Conn) -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    job_ids = Deferrer(delivery_batch_size=2).deliver(conn, ids, schedule_at=at)
    rows = job_rows(conn)
    assert [r[0] for r in rows] == job_ids
    assert (
        [r[1:] for r in rows]
        == [
            (
                "chimeway_delivery",
                "chimeway:deliver_many",
                0,
                None,
                None,  # no queueing lock: the sweep looks inside queued chunks instead
                {"delivery_ids": [str(d) for d in chunk]},
                "todo",
                at,
            )
            for chunk in (ids[0:2], ids[2:4], ids[4:])
        ]
    )


def test_a_lone_delivery_gets_its_locked_job_even_when_batching(conn: Conn) -> None:
    delivery_id = uuid.uuid4()
    Deferrer(delivery_batch_size=50).deliver(conn, [delivery_id])
    assert [(r[2], r[5]) for r in job_rows(conn)] == [
        ("chimeway:deliver", f"chimeway:deliver:{delivery_id}")
    ]


def test_progress_many_schedules_each_timer_ahead_of_deliveries(
    tx_cw: Chimeway, conn: Conn
) -> None:
    base = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    runs = [(uuid.uuid4(), base + dt.timedelta(seconds=i)) for i in range(2)]
    tx_cw.engine.deferrer.progress_many(conn, runs)
    rows = job_rows(conn)
    assert [(r[2], r[3], r[5], r[6], r[8]) for r in rows] == [
        ("chimeway:progress", 1, f"chimeway:progress:{r}", {"run_id": str(r)}, due)
        for r, due in runs
    ]


def test_a_queued_delivery_makes_the_batch_already_enqueued(tx_cw: Chimeway, conn: Conn) -> None:
    queued, fresh = uuid.uuid4(), uuid.uuid4()
    unbatched = Deferrer(delivery_batch_size=1)
    unbatched.deliver(conn, [queued])
    with pytest.raises(AlreadyEnqueued), tx_cw.transaction(conn) as savepoint:
        unbatched.deliver(savepoint, [fresh, queued])
    assert [r[5] for r in job_rows(conn)] == [f"chimeway:deliver:{queued}"]


def test_deliver_if_not_queued_pulls_the_queued_job_earlier(tx_cw: Chimeway, conn: Conn) -> None:
    delivery_id = uuid.uuid4()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert tx_cw.engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=later)
    assert not tx_cw.engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=None)
    conn.execute("SELECT 1")  # the savepoint kept the transaction usable
    assert [(r[5], r[8]) for r in job_rows(conn)] == [(f"chimeway:deliver:{delivery_id}", None)]


def test_no_ids_defers_nothing(tx_cw: Chimeway, conn: Conn) -> None:
    assert tx_cw.engine.deferrer.deliver(conn, []) == []
    assert tx_cw.engine.deferrer.progress_many(conn, []) == []
    assert job_rows(conn) == []


def test_timers_for_runs_with_queued_timers_go_run_by_run(tx_cw: Chimeway, conn: Conn) -> None:
    queued, fresh = uuid.uuid4(), uuid.uuid4()
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    sooner = later - dt.timedelta(hours=1)
    tx_cw.engine.deferrer.timers(conn, [(queued, later)])
    tx_cw.engine.deferrer.timers(conn, [(fresh, later), (queued, sooner)])  # one already queued
    tx_cw.engine.deferrer.timers(conn, [])
    conn.execute("SELECT 1")  # the savepoints kept the transaction usable
    assert sorted((r[5], r[8]) for r in job_rows(conn)) == sorted(
        [(f"chimeway:progress:{fresh}", later), (f"chimeway:progress:{queued}", sooner)]
    )
