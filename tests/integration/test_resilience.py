"""Regression tests for failure paths: a send is never lost or repeated because recording
it failed, caches never outlive a rollback, early signals count, one bad run never stops a
sweep, and errors reach callers as Chimeway errors."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chimeway import (
    Chimeway,
    DatabaseUnavailable,
    InvalidArgument,
    Sent,
    Step,
    Temporary,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.engine.progression import drive, progress_due_runs
from chimeway.testing import drain
from chimeway.types import RunState
from tests.integration.conftest import Recorders, count
from tests.integration.notifiers import Welcome, WithWorkflow

READ = "chimeway.notification.read"
WAIT = Workflow(
    key="wait",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[WaitUntil(delay=600, to_step="email", cancel_signals=[READ])],
        ),
        Step("email", channel="email", progress=[WaitUntil(delay=1200, to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


def start(cw: Chimeway, key: str = "k", conn: Any = None) -> Triggered:
    result = cw.trigger(
        WithWorkflow(WAIT), {"users": ["u1"]}, tenant_id="t", idempotency_key=key, conn=conn
    )
    assert isinstance(result, Triggered)
    return result


def test_nul_characters_and_nan_from_a_provider_are_stored(
    tx_cw: Chimeway, adapters: Recorders, db: psycopg.Connection[Any]
) -> None:
    adapters["in_app"].then(
        Temporary("bad\x00byte"), Sent("m", meta={"x": float("nan"), "s": "a\x00b"})
    )
    result = tx_cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k", conn=db)
    assert isinstance(result, Triggered)
    drain(tx_cw, conn=db)
    rows = db.execute(
        "SELECT error, provider_response FROM chimeway_delivery_attempts ORDER BY attempt_number"
    ).fetchall()
    # Stored, sanitised, and the attempt says what was changed to store it.
    assert rows == [
        ("bad\\u0000byte", {"chimeway_sanitized": ["NUL escaped in error"]}),
        (
            None,
            {
                "x": None,
                "s": "a\\u0000b",
                "chimeway_sanitized": [
                    "NaN or infinity replaced with null in meta.x",
                    "NUL escaped in meta.s",
                ],
            },
        ),
    ]
    assert len(adapters["in_app"].requests) == 2


def test_temporary_failure_is_recorded_while_another_job_is_queued(
    cw: Chimeway, adapters: Recorders, committed_db: str
) -> None:
    adapters["in_app"].then(Temporary("busy"))
    result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    # The trigger's job is still queued while this send fails: the retry must not abort.
    assert cw.deliver(result.delivery_ids[0]).action == "retry_scheduled"
    assert count(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 1


def test_job_that_runs_before_a_retry_is_due_requeues_at_the_retry_time(
    make_cw: Any, adapters: Recorders, committed_db: str
) -> None:
    from chimeway import RetryPolicy

    cw = make_cw(default_retry=RetryPolicy(base_delay=dt.timedelta(minutes=10), jitter=0))
    adapters["in_app"].then(Temporary("busy"))
    result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    delivery_id = result.delivery_ids[0]
    assert cw.deliver(delivery_id).action == "retry_scheduled"
    drain(cw)  # runs the trigger's (early) job: it must leave a job for the retry time
    retry_at = cw.delivery("t", delivery_id).retry_at
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' AND scheduled_at = %s",
            retry_at,
        )
        == 1
    )
    assert len(adapters["in_app"].requests) == 1


def test_failure_while_progressing_keeps_the_attempt_and_defers_the_run(
    cw: Chimeway, committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = start(cw)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("bug in progression")

    monkeypatch.setattr(drive, "progress_in", broken)
    assert cw.deliver(result.delivery_ids[0]).action == "succeeded"
    assert count(committed_db, "SELECT count(*) FROM chimeway_delivery_attempts") == 1
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'",
        )
        == 1
    )
    monkeypatch.undo()
    drain(cw)
    assert cw.workflows.explain("t", result.run_ids[0]).state == "waiting"


def test_rolled_back_trigger_does_not_poison_the_definition_cache(
    cw: Chimeway, committed_db: str
) -> None:
    with psycopg.connect(committed_db) as conn:
        start(cw, key="a", conn=conn)
        conn.rollback()
    assert count(committed_db, "SELECT count(*) FROM chimeway_workflow_definitions") == 0
    start(cw, key="b")  # the definition is stored again, not taken from a stale cache
    assert count(committed_db, "SELECT count(*) FROM chimeway_workflow_definitions") == 1


def test_a_cancel_signal_before_the_wait_begins_still_cancels_it(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    result = start(tx_cw, conn=db)
    routed = tx_cw.route_signal(tx_cw.track_signal("t", "u1", READ, conn=db).signal_id, conn=db)
    assert routed.resumed == []  # nothing waits yet: the notice is still being delivered
    drain(tx_cw, conn=db)
    explained = tx_cw.workflows.explain("t", result.run_ids[0], conn=db)
    assert (explained.state, explained.terminal_reason) == ("completed", "wait_cancelled_by_signal")


def test_an_early_timer_rearms_itself_at_the_due_time(cw: Chimeway, committed_db: str) -> None:
    run_id = start(cw).run_ids[0]
    drain(cw)
    with psycopg.connect(committed_db) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
    progress = cw.procrastinate.tasks["chimeway:progress"]
    assert progress(run_id=str(run_id)) == "Noop"
    due = cw.workflows.explain("t", run_id).suspended_until
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress' "
            "AND scheduled_at = %s",
            due,
        )
        == 1
    )


def test_one_failing_run_does_not_stop_the_due_sweep(
    cw: Chimeway, committed_db: str, caplog: Any
) -> None:
    """The failures are logged with their tracebacks, without the row the error quotes."""
    import logging

    from chimeway.logs import Withheld

    bad = start(cw, key="a").run_ids[0]
    good = start(cw, key="b").run_ids[0]
    drain(cw)
    # The database refuses the bad run's next delivery: its whole batch fails, and the
    # sweep falls back to one run at a time.
    with psycopg.connect(committed_db) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_bad_run() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'corrupt run'"
            " USING DETAIL = 'Failing row contains ' || 'ada@' || 'example.com'; END $$"
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER refuse_bad_run BEFORE INSERT ON chimeway_deliveries"
                " FOR EACH ROW WHEN (NEW.workflow_run_id = {}) EXECUTE FUNCTION refuse_bad_run()"
            ).format(sql.Literal(str(bad)))
        )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with caplog.at_level(logging.WARNING, logger="chimeway"):
        results = progress_due_runs(cw.engine, now=later)
    assert [(r.run_id, type(r).__name__) for r in results] == [(good, "Advanced")]
    lines = {getattr(r, "action", ""): r for r in caplog.records}
    for action in ("runs.batch_failed", "run.progress_failed"):
        assert lines[action].exc_info[0] is Withheld
    assert caplog.text.count("Withheld: psycopg.errors.RaiseException (SQLSTATE P0001)") == 2
    assert "example.com" not in caplog.text
    assert cw.workflows.explain("t", bad).state == RunState.WAITING  # left for the next sweep
    assert cw.workflows.explain("t", good).state == RunState.ACTIVE


def test_drain_reports_a_task_that_raised(cw: Chimeway, monkeypatch: pytest.MonkeyPatch) -> None:
    from chimeway.engine import deliver

    def broken(*_: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(deliver, "deliver", broken)
    cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    with pytest.raises(AssertionError, match=r"chimeway:deliver\[\d+\]"):
        drain(cw)


def test_deleting_a_run_deletes_its_deliveries(
    tx_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    result = start(tx_cw, conn=db)
    db.execute("DELETE FROM chimeway_workflow_runs WHERE id = %s", [result.run_ids[0]])
    assert count(db, "SELECT count(*) FROM chimeway_deliveries") == 0


def test_unreachable_database_is_a_chimeway_error() -> None:
    with (
        Chimeway("postgresql://nobody@127.0.0.1:1/none", pool_timeout=0.5) as cw,
        pytest.raises(DatabaseUnavailable, match="database unavailable"),
    ):
        cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")


def test_naive_now_is_rejected(tx_cw: Chimeway) -> None:
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        tx_cw.progression.progress_due_runs(now=dt.datetime(2026, 1, 1))


def test_the_pool_pings_only_connections_that_sat_idle(
    committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psycopg_pool import ConnectionPool

    from chimeway.engine.connections import IdleCheck

    pings: list[object] = []
    real = ConnectionPool.check_connection

    def counted(conn: Any) -> None:
        pings.append(conn)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    check = IdleCheck(after=0.2)
    with psycopg.connect(committed_db) as conn:
        check(conn)  # first checkout: pinged
        check(conn)  # handed out again at once: trusted
        assert pings == [conn]
        with psycopg.connect(committed_db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        time.sleep(0.3)  # the idle period is the point: longer than `after`
        with pytest.raises(psycopg.OperationalError):
            check(conn)  # pinged, found dead: the pool drops it and hands out another
        assert pings == [conn, conn]


def test_procrastinates_pool_runs_each_job_statement_in_autocommit(committed_db: str) -> None:
    # A job fetch or finish is one call of a Procrastinate function: one round trip, not
    # BEGIN, the call and COMMIT.
    import asyncio

    from psycopg.pq import TransactionStatus

    async def check() -> tuple[bool, TransactionStatus, int]:
        with Chimeway(committed_db) as cw:
            async with cw.procrastinate.open_async():
                pool = cw.procrastinate.connector.pool  # type: ignore[attr-defined]
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT count(*) FROM procrastinate_jobs")
                    [jobs] = await cur.fetchone() or [None]
                    return conn.autocommit, conn.info.transaction_status, jobs

    autocommit, status, jobs = asyncio.run(check())
    assert autocommit
    assert status == TransactionStatus.IDLE  # no transaction left open around the call
    assert jobs == 0


def test_a_statement_prepared_before_a_migration_runs_after_it(committed_db: str) -> None:
    """A process that keeps running while a migration changes a table's columns holds
    statements prepared for the old ones, which PostgreSQL refuses ("cached plan must not
    change result type"). The engine's cursors prepare such a statement again when the
    connection is in autocommit; in a transaction the error comes once, and after the
    rollback the statement runs."""
    from chimeway.store.sessions import Replanning, stale_plan

    select = "SELECT * FROM chimeway_events"

    def migrate(column: str) -> None:
        with psycopg.connect(committed_db, autocommit=True) as admin:
            admin.execute(f"ALTER TABLE chimeway_events ADD COLUMN {column} integer".encode())

    with psycopg.connect(
        committed_db, autocommit=True, prepare_threshold=0, cursor_factory=Replanning
    ) as conn:
        conn.execute(select).fetchall()  # prepared for the columns as they are
        migrate("added_once")
        cur = conn.execute(select)
        assert cur.description is not None
        assert cur.description[-1].name == "added_once"

        migrate("added_twice")
        conn.autocommit = False
        with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
            conn.execute(select)
        assert stale_plan(refused.value)
        conn.rollback()
        cur = conn.execute(select)
        assert cur.description is not None
        assert cur.description[-1].name == "added_twice"
        conn.rollback()

        # Any other refusal of the same kind is no stale statement: raised as it is.
        conn.autocommit = True
        with pytest.raises(psycopg.errors.FeatureNotSupported) as other:
            conn.execute("SELECT count(*) FROM chimeway_events FOR UPDATE")
        assert not stale_plan(other.value)


def test_the_engines_pools_prepare_stale_statements_again(cw: Chimeway) -> None:
    from chimeway.store.sessions import Replanning

    for pool in (cw.engine.pool, cw.engine.deliver_pool):
        with pool.connection() as conn:
            assert isinstance(conn.cursor(), Replanning)


def test_a_record_a_migration_made_stale_is_made_again_not_sent_again(
    cw: Chimeway, adapters: Recorders, committed_db: str
) -> None:
    """A send's record runs in a transaction on the delivery path's connections, which lock
    the run with a ``SELECT *`` prepared on them. After a migration changed the runs'
    columns, that transaction fails once; the record is made again (engine/recording.py
    records a failed batch again one by one, and the rollback made psycopg forget the stale
    statements), never left to the job's retry, which would send again."""
    first = start(cw, key="first")
    assert cw.deliver(first.delivery_ids[0]).action == "succeeded"
    with psycopg.connect(committed_db, autocommit=True) as admin:
        admin.execute("ALTER TABLE chimeway_workflow_runs ADD COLUMN added_by_a_migration integer")
    second = start(cw, key="second")
    assert cw.deliver(second.delivery_ids[0]).action == "succeeded"
    assert len(adapters["in_app"].requests) == 2
    assert cw.workflows.explain("t", second.run_ids[0]).state == "waiting"


def test_a_job_that_raises_is_logged_without_the_errors_values(
    cw: Chimeway, committed_db: str, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Procrastinate logs a job that raised at INFO, which the worker's logs leave out with
    every other job's: Chimeway's task says so at WARNING, naming the error, its SQLSTATE and
    where it came through Chimeway, never the error's message (a row's values)."""
    import logging

    from chimeway.engine import deliver

    def refused(*_: Any, **__: Any) -> Any:
        with psycopg.connect(committed_db, autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE seen (email text PRIMARY KEY)")
            conn.execute("INSERT INTO seen VALUES ('ada@example.com')")
            conn.execute("INSERT INTO seen VALUES ('ada@example.com')")

    monkeypatch.setattr(deliver, "deliver", refused)
    result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    with caplog.at_level(logging.WARNING, logger="chimeway"), pytest.raises(AssertionError):
        drain(cw)
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "job.failed"]
    assert line.levelno == logging.WARNING
    assert (line.task, line.delivery_id) == ("deliver", str(result.delivery_ids[0]))
    assert (line.error, line.sqlstate) == ("UniqueViolation", "23505")
    assert line.raised_in.startswith("jobs/tasks.py:")  # the innermost frame of Chimeway
    assert "ada@example.com" not in caplog.text


def test_a_record_the_database_refuses_is_logged_without_the_rows_values(
    cw: Chimeway, adapters: Recorders, committed_db: str, caplog: Any
) -> None:
    """A record PostgreSQL refuses, quoting the row it refused, falls to its last resort
    (an ``unknown`` failure without the provider's data). Its log line names the error but
    never quotes the row: the provider's answer carries personal data."""
    import logging

    adapters["in_app"].then(Sent("m-1", meta={"to": "ada@example.com"}))
    with psycopg.connect(committed_db, autocommit=True) as admin:
        admin.execute(
            """
            CREATE FUNCTION refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.provider_response::text LIKE '%example.com%' THEN
                RAISE EXCEPTION 'refused' USING DETAIL = 'Failing row contains '
                    || NEW.provider_response::text;
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_attempt BEFORE INSERT ON chimeway_delivery_attempts
                FOR EACH ROW EXECUTE FUNCTION refuse_attempt();
            """
        )
    result = cw.trigger(Welcome, {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    with caplog.at_level(logging.INFO, logger="chimeway"):
        assert cw.deliver(result.delivery_ids[0]).action == "retry_scheduled"
    [line] = [r for r in caplog.records if getattr(r, "action", "") == "delivery.record_failed"]
    assert (line.error, line.sqlstate) == ("RaiseException", "P0001")
    assert line.raised_in is not None and line.raised_in.startswith("store/")
    assert line.exc_info is None
    assert "example.com" not in caplog.text
    outcome = "SELECT outcome::text, error_class::text FROM chimeway_delivery_attempts"
    with psycopg.connect(committed_db) as conn:
        assert conn.execute(outcome).fetchall() == [("failed", "unknown")]
