"""Routing signals in batches (one job routes the others waiting and deletes their jobs) and
in the signal's own transaction (``route="now"``): the same runs move the same way as when
each signal is routed on its own."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import Advanced, Chimeway, Completed, InvalidSignal, Triggered
from chimeway.engine import signals
from chimeway.testing import drain
from tests.integration.conftest import count, counts
from tests.integration.notifiers import WithWorkflow
from tests.integration.test_signals import CLICKED, READ, WF, traces


def waiting_runs(
    cw: Chimeway, users: list[str], key: str = "k", conn: psycopg.Connection[Any] | None = None
) -> dict[str, uuid.UUID]:
    """Runs waiting for a signal, one per user: committed, or in ``conn``'s transaction."""
    result = cw.trigger(
        WithWorkflow(WF), {"users": users}, tenant_id="t", idempotency_key=key, conn=conn
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=conn)
    query = b"SELECT recipient_id, id FROM chimeway_workflow_runs WHERE state = 'waiting'"
    if conn is not None:
        return dict(conn.execute(query).fetchall())
    with psycopg.connect(cw.database_url) as own:
        return dict(own.execute(query).fetchall())


def route_jobs(where: str | psycopg.Connection[Any]) -> list[tuple[str, str]]:
    query = (
        b"SELECT queueing_lock, args->>'signal_id' FROM procrastinate_jobs"
        b" WHERE task_name = 'chimeway:route_signal' ORDER BY id"
    )
    if isinstance(where, psycopg.Connection):
        rows = where.execute(query).fetchall()
    else:
        with psycopg.connect(where) as conn:
            rows = conn.execute(query).fetchall()
    return [(lock, signal) for lock, signal in rows]


def reasons(
    cw: Chimeway, run_id: uuid.UUID, conn: psycopg.Connection[Any] | None = None
) -> list[str]:
    return [t.reason for t in traces(cw, run_id, conn=conn)]


def test_each_signal_gets_one_route_job_with_its_queueing_lock(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    tracked = tx_cw.track_signal("t", "u1", READ, conn=db)
    assert route_jobs(db) == [
        (f"chimeway:route_signal:{tracked.signal_id}", str(tracked.signal_id))
    ]
    assert tracked.routed is None


def test_one_job_routes_the_waiting_signals_and_deletes_their_jobs(
    cw: Chimeway, committed_db: str
) -> None:
    runs = waiting_runs(cw, ["u1", "u2", "u3"])
    first = cw.track_signal("t", "u1", READ).signal_id
    cw.track_signal("t", "u2", CLICKED)
    cw.track_signal("t", "u3", "unrelated")
    assert len(route_jobs(committed_db)) == 3

    routed = signals.route_pending_now(cw.engine, first)

    assert routed[0].signal_id == first
    assert [len(r.resumed) for r in routed] == [1, 1, 0]
    assert isinstance(routed[0].results[0], Completed)
    assert isinstance(routed[1].results[0], Advanced)
    assert route_jobs(committed_db) == [(f"chimeway:route_signal:{first}", str(first))]
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals WHERE routed_at IS NULL") == 0
    assert reasons(cw, runs["u1"])[-2:] == ["signal_received", "workflow_completed"]
    assert reasons(cw, runs["u2"])[-3:] == [
        "signal_received",
        "progressed_on_signal",
        "step_activated",
    ]
    assert cw.workflows.explain("t", runs["u3"]).state == "waiting"


def test_a_batch_moves_runs_as_one_signal_at_a_time_would(cw: Chimeway) -> None:
    """Two signals for one run: the older resumes it, the newer finds it no longer waiting,
    exactly as when each is routed on its own job."""

    def scenario(batch: bool) -> list[Any]:
        runs = waiting_runs(cw, ["u1", "u2"], key=f"k{batch}")
        tenant = "t"
        ids = [
            cw.track_signal(tenant, "u1", READ).signal_id,
            cw.track_signal(tenant, "u1", CLICKED).signal_id,
            cw.track_signal(tenant, "u2", CLICKED).signal_id,
        ]
        if batch:
            signals.route_pending_now(cw.engine, ids[-1])
        else:
            for signal_id in ids:
                cw.route_signal(signal_id)
        return [
            [
                (t.reason, t.from_state, t.to_state, t.context.get("event_name"))
                for t in traces(cw, run_id)
            ]
            for run_id in runs.values()
        ]

    with psycopg.connect(cw.database_url, autocommit=True) as conn:
        batch = scenario(True)
        conn.execute("TRUNCATE chimeway_events, chimeway_signals, procrastinate_jobs CASCADE")
    assert batch == scenario(False)


def test_a_signal_whose_job_was_taken_is_routed_once(cw: Chimeway, committed_db: str) -> None:
    runs = waiting_runs(cw, ["u1", "u2"])
    taken = cw.track_signal("t", "u1", READ).signal_id
    other = cw.track_signal("t", "u2", READ).signal_id
    with psycopg.connect(committed_db) as conn:  # a worker fetched its job: it is running
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'signal_id' = %s",
            [str(taken)],
        )
    assert [r.signal_id for r in signals.route_pending_now(cw.engine, other)] == [taken, other]
    # The running job is left alone (and the job that routed them is the caller's own).
    assert {s for _, s in route_jobs(committed_db)} == {str(taken), str(other)}
    assert signals.route_pending_now(cw.engine, taken) == []  # its job runs: nothing to do
    for run_id in runs.values():
        assert reasons(cw, run_id).count("signal_received") == 1


def test_concurrent_routing_jobs_route_every_signal_once(make_cw: Any) -> None:
    cw = make_cw(pool_max_size=12)
    users = [f"u{i}" for i in range(40)]
    runs = waiting_runs(cw, users)
    ids = [cw.track_signal("t", user, READ).signal_id for user in users]
    barrier = threading.Barrier(8)
    routed: list[uuid.UUID] = []
    lock = threading.Lock()

    def run(signal_id: uuid.UUID) -> None:
        barrier.wait()
        with cw.pool.connection() as conn, conn.transaction():
            done = signals.route_pending(cw.engine, conn, signal_id, limit=7)
        with lock:
            routed.extend(r.signal_id for r in done)

    threads = [threading.Thread(target=run, args=(ids[i * 5],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(routed) == sorted(ids)  # each routed once, by one of the jobs
    for run_id in runs.values():
        assert reasons(cw, run_id).count("signal_received") == 1


def test_route_now_moves_the_run_before_the_commit_and_defers_no_route_job(
    cw: Chimeway, committed_db: str
) -> None:
    runs = waiting_runs(cw, ["u1"])
    with psycopg.connect(committed_db) as conn:
        tracked = cw.track_signal("t", "u1", CLICKED, conn=conn, route="now")
        assert tracked.routed is not None
        assert tracked.routed.resumed == [runs["u1"]]
        assert isinstance(tracked.routed.results[0], Advanced)
        conn.commit()
    assert route_jobs(committed_db) == []
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals WHERE routed_at IS NULL") == 0
    # The sms step's delivery and its job are there already.
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries WHERE channel = 'sms'")
    assert count(
        committed_db, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:deliver'"
    )


def test_route_now_rolls_back_with_the_callers_transaction(cw: Chimeway, committed_db: str) -> None:
    runs = waiting_runs(cw, ["u1"])
    before = counts(committed_db)
    with psycopg.connect(committed_db) as conn:
        cw.track_signal("t", "u1", READ, conn=conn, route="now")
        conn.rollback()
    assert counts(committed_db) == before
    assert cw.workflows.explain("t", runs["u1"]).state == "waiting"


def test_route_now_with_a_repeated_key_is_inert(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    runs = waiting_runs(tx_cw, ["u1", "u2"], conn=db)
    first = tx_cw.track_signal("t", "u1", READ, idempotency_key="w1", route="now", conn=db)
    again = tx_cw.track_signal("t", "u1", READ, idempotency_key="w1", route="now", conn=db)
    assert again.duplicate and again.signal_id == first.signal_id and again.routed is None
    assert reasons(tx_cw, runs["u1"], conn=db).count("signal_received") == 1


def test_an_unknown_route_is_refused(tx_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    before = counts(db)
    with pytest.raises(InvalidSignal, match="route must be 'job' or 'now', not 'later'"):
        tx_cw.track_signal("t", "u1", READ, route="later", conn=db)  # type: ignore[arg-type]
    assert counts(db) == before
