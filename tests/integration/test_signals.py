"""Signals, timers, sweeps and the idempotency of every task (design §7, §8)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import (
    Advanced,
    Chimeway,
    Completed,
    InvalidSignal,
    Noop,
    OnSignal,
    RunState,
    Step,
    Triggered,
    WaitUntil,
    Workflow,
)
from chimeway.db import Conn
from chimeway.engine import signals as signals_engine
from chimeway.testing import drain
from tests.integration.conftest import count, counts, waited_round_trips
from tests.integration.notifiers import WithWorkflow

READ = "chimeway.notification.read"
CLICKED = "app.clicked"
ROUTE = "chimeway:route_signal"

WF = Workflow(
    key="signalled",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[
                WaitUntil(delay=dt.timedelta(minutes=10), to_step="email", cancel_signals=[READ]),
                OnSignal(event=CLICKED, to_step="sms"),
            ],
        ),
        Step("email", channel="email"),
        Step("sms", channel="sms"),
    ],
)


def waiting_run(
    cw: Chimeway, user: str = "u1", tenant: str = "t", key: str = "k", conn: Conn | None = None
) -> uuid.UUID:
    result = cw.trigger(
        WithWorkflow(WF), {"users": [user]}, tenant_id=tenant, idempotency_key=key, conn=conn
    )
    assert isinstance(result, Triggered)
    drain(cw, conn=conn)
    run_id = result.run_ids[0]
    assert cw.workflows.explain(tenant, run_id, conn=conn).state == "waiting"
    return run_id


def traces(
    cw: Chimeway, run_id: uuid.UUID, tenant: str = "t", conn: Conn | None = None
) -> list[Any]:
    return cw.workflows.list_traces(tenant, run_id, conn=conn)


# -- track_signal ---------------------------------------------------------------------------


def test_track_signal_writes_the_signal_and_its_route_job(tx_cw: Chimeway, db: Conn) -> None:
    tracked = tx_cw.track_signal("t", "u1", READ, {"delivery_id": "x"}, conn=db)
    assert not tracked.duplicate
    assert count(db, "SELECT count(*) FROM chimeway_signals") == 1
    assert (
        count(
            db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:route_signal' "
            "AND queue_name = 'chimeway_signals' AND args->>'signal_id' = %s "
            "AND priority = 1",  # ahead of a delivery backlog
            str(tracked.signal_id),
        )
        == 1
    )


def test_track_signal_joins_the_callers_transaction(cw: Chimeway, committed_db: str) -> None:
    before = counts(committed_db)
    with psycopg.connect(committed_db) as conn:
        cw.track_signal("t", "u1", READ, conn=conn)
        conn.rollback()
    assert counts(committed_db) == before
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 0


def test_a_signal_in_the_callers_open_transaction_takes_one_round_trip(
    cw: Chimeway, committed_db: str
) -> None:
    with psycopg.connect(committed_db) as conn:
        conn.execute("SELECT 1")  # the app's own work opened the transaction
        # The savepoint and its release go with the statement.
        assert waited_round_trips(conn, lambda: cw.track_signal("t", "u1", READ, conn=conn)) == 1
        again = waited_round_trips(
            conn, lambda: cw.track_signal("t", "u1", READ, idempotency_key="w", conn=conn)
        )
        assert again == 1
        duplicate = cw.track_signal("t", "u1", READ, idempotency_key="w", conn=conn)
        assert duplicate.duplicate
        assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 0  # not yet
        conn.commit()
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 2
    assert (
        count(committed_db, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s", ROUTE)
        == 2
    )


def test_a_failing_signal_leaves_the_callers_transaction_as_it_was(
    cw: Chimeway, committed_db: str
) -> None:
    with psycopg.connect(committed_db, autocommit=True) as admin:
        admin.execute("CREATE TABLE app_reads (id text PRIMARY KEY)")
        admin.execute(
            f"ALTER TABLE chimeway_signals ADD CONSTRAINT no_reads CHECK (event_name <> '{READ}')"
        )
    with psycopg.connect(committed_db) as conn:
        conn.execute("INSERT INTO app_reads VALUES ('r1')")
        with pytest.raises(psycopg.errors.CheckViolation, match="no_reads"):
            cw.track_signal("t", "u1", READ, conn=conn)
        # Only the signal's savepoint was rolled back: the transaction goes on.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        cw.track_signal("t", "u1", CLICKED, conn=conn)
        conn.commit()
    assert count(committed_db, "SELECT count(*) FROM app_reads") == 1
    assert count(committed_db, "SELECT count(*) FROM chimeway_signals") == 1
    assert (
        count(committed_db, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s", ROUTE)
        == 1
    )


def test_repeated_idempotency_key_is_inert(tx_cw: Chimeway, db: Conn) -> None:
    first = tx_cw.track_signal("t", "u1", READ, idempotency_key="webhook-1", conn=db)
    again = tx_cw.track_signal("t", "u1", READ, idempotency_key="webhook-1", conn=db)
    assert again.duplicate
    assert again.signal_id == first.signal_id
    assert count(db, "SELECT count(*) FROM chimeway_signals") == 1
    assert count(db, "SELECT count(*) FROM procrastinate_jobs") == 1
    other_tenant = tx_cw.track_signal("t2", "u1", READ, idempotency_key="webhook-1", conn=db)
    assert not other_tenant.duplicate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "u1", READ, None), "tenant_id must be a non-blank string"),
        (("t", " ", READ, None), "actor_id must be a non-blank string"),
        (("t", "u1", "", None), "event_name must be a non-blank string"),
        (("t", "u1", "e" * 201, None), "201 characters long; at most 200"),
        (("t", "u1", READ, ["not", "an", "object"]), "payload must be a JSON object, got list"),
        (("t", "u1", READ, {"when": object()}), "payload must be JSON-serializable"),
    ],
)
def test_invalid_signal_writes_nothing(
    tx_cw: Chimeway, db: Conn, args: tuple[Any, ...], message: str
) -> None:
    before = counts(db)
    with pytest.raises(InvalidSignal, match=message):
        tx_cw.track_signal(*args, conn=db)
    assert counts(db) == before


# -- routing --------------------------------------------------------------------------------


def test_cancel_signal_resumes_and_completes_the_run(tx_cw: Chimeway, db: Conn) -> None:
    run_id = waiting_run(tx_cw, conn=db)
    notice = count(db, "SELECT count(*) FROM chimeway_deliveries")
    tx_cw.track_signal("t", "u1", READ, {"delivery_id": "not-a-uuid", "secret": "s3cr3t"}, conn=db)
    drain(tx_cw, conn=db)
    explained = tx_cw.workflows.explain("t", run_id, conn=db)
    assert (explained.state, explained.terminal_reason) == ("completed", "wait_cancelled_by_signal")
    assert explained.pending_signals == []
    assert explained.suspended_until is None
    [received] = [t for t in traces(tx_cw, run_id, conn=db) if t.reason == "signal_received"]
    assert received.context == {"event_name": READ}
    assert (received.from_state, received.to_state) == ("waiting", "active")
    assert count(db, "SELECT count(*) FROM chimeway_deliveries") == notice  # no email
    # The wait's timer is still queued; when it fires it does nothing.
    assert tx_cw.progression.progress_run(
        run_id, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), conn=db
    ) == Noop(run_id, "run_not_active")


def test_on_signal_rule_advances(tx_cw: Chimeway, db: Conn) -> None:
    run_id = waiting_run(tx_cw, conn=db)
    tx_cw.track_signal("t", "u1", CLICKED, conn=db)
    drain(tx_cw, conn=db)
    reasons = [t.reason for t in traces(tx_cw, run_id, conn=db)]
    assert reasons[-4:] == [
        "signal_received",
        "progressed_on_signal",
        "step_activated",
        "workflow_completed",
    ]
    assert count(db, "SELECT count(*) FROM chimeway_deliveries WHERE channel = 'sms'") == 1


def test_payload_delivery_id_goes_in_the_column_never_in_contexts(
    tx_cw: Chimeway, db: Conn
) -> None:
    run_id = waiting_run(tx_cw, conn=db)
    [(delivery_id,)] = db.execute("SELECT id FROM chimeway_deliveries").fetchall()
    tx_cw.track_signal(
        "t", "u1", READ, {"delivery_id": str(delivery_id), "token": "zq-secret", "n": 7}, conn=db
    )
    drain(tx_cw, conn=db)
    [received] = [t for t in traces(tx_cw, run_id, conn=db) if t.reason == "signal_received"]
    assert received.delivery_id == delivery_id
    contexts = [r[0] for r in db.execute("SELECT context::text FROM chimeway_workflow_transitions")]
    statuses = [r[0] for r in db.execute("SELECT status_context::text FROM chimeway_workflow_runs")]
    # The sentinel holds letters a UUID's hex never does, so ids in the contexts cannot match it.
    assert not any("zq-secret" in c or "token" in c for c in contexts + statuses)


def test_signals_never_cross_tenants_or_actors(tx_cw: Chimeway, db: Conn) -> None:
    run_id = waiting_run(tx_cw, user="u1", tenant="t1", conn=db)
    before = traces(tx_cw, run_id, tenant="t1", conn=db)
    for tenant, actor, event in [("t2", "u1", READ), ("t1", "u2", READ), ("t1", "u1", "other")]:
        tracked = tx_cw.track_signal(tenant, actor, event, conn=db)
        routed = tx_cw.route_signal(tracked.signal_id, conn=db)
        assert routed.resumed == []
    assert traces(tx_cw, run_id, tenant="t1", conn=db) == before
    assert tx_cw.workflows.explain("t1", run_id, conn=db).state == "waiting"


def test_routing_one_signal_concurrently_gives_one_transition_per_run(make_cw: Any) -> None:
    cw = make_cw(pool_max_size=14)
    result = cw.trigger(WithWorkflow(WF), {"users": ["u1"]}, tenant_id="t", idempotency_key="a")
    other = cw.trigger(
        WithWorkflow(
            Workflow(
                key="second",
                version=1,
                steps=[
                    Step(
                        "a",
                        channel="in_app",
                        progress=[WaitUntil(delay=600, to_step="b", cancel_signals=[READ])],
                    ),
                    Step("b", channel="email"),
                ],
            )
        ),
        {"users": ["u1"]},
        tenant_id="t",
        idempotency_key="b",
    )
    assert isinstance(result, Triggered)
    assert isinstance(other, Triggered)
    drain(cw)
    signal_id = cw.track_signal("t", "u1", READ).signal_id
    barrier = threading.Barrier(10)
    routed: list[Any] = []

    def route() -> None:
        barrier.wait()
        routed.append(cw.route_signal(signal_id))

    threads = [threading.Thread(target=route) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    resumed = [run for r in routed for run in r.resumed]
    assert sorted(resumed) == sorted([result.run_ids[0], other.run_ids[0]])
    for run_id in resumed:
        assert [t.reason for t in traces(cw, run_id)].count("signal_received") == 1


# -- timers and idempotent tasks -------------------------------------------------------------


def test_timer_defer_is_deduplicated_without_aborting_the_transaction(
    tx_cw: Chimeway, db: Conn
) -> None:
    run_id = uuid.uuid4()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    sooner = later - dt.timedelta(hours=1)
    # Open db's transaction first: on an idle connection the deferrer's savepoint would be a
    # transaction of its own, committed into the shared database.
    db.execute("SELECT 1")
    assert tx_cw.engine.deferrer.progress(db, run_id, schedule_at=later) is not None
    assert tx_cw.engine.deferrer.progress(db, run_id, schedule_at=sooner) is None  # duplicate
    db.execute("SELECT 1")  # the transaction is still usable
    rows = db.execute(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"
    ).fetchall()
    assert rows == [(sooner,)]  # one timer, pulled to the earlier due time


def test_progress_task_twice_advances_once(tx_cw: Chimeway, db: Conn) -> None:
    run_id = waiting_run(tx_cw, conn=db)
    due = tx_cw.workflows.explain("t", run_id, conn=db).suspended_until
    assert due is not None
    first = tx_cw.progression.progress_run(run_id, now=due, conn=db)
    second = tx_cw.progression.progress_run(run_id, now=due, conn=db)
    assert isinstance(first, Advanced)
    assert isinstance(second, Noop)


def test_route_signal_twice_routes_once(tx_cw: Chimeway, db: Conn) -> None:
    run_id = waiting_run(tx_cw, conn=db)
    signal_id = tx_cw.track_signal("t", "u1", READ, conn=db).signal_id
    first = tx_cw.route_signal(signal_id, conn=db)
    second = tx_cw.route_signal(signal_id, conn=db)
    assert first.resumed == [run_id]
    assert isinstance(first.results[0], Completed)
    assert (second.resumed, second.skipped) == ([], "already routed")


def test_route_signal_of_a_missing_signal_is_a_noop(tx_cw: Chimeway, db: Conn) -> None:
    assert tx_cw.route_signal(uuid.uuid4(), conn=db).skipped == "missing"


def test_sweep_progresses_a_wait_whose_timer_was_lost(cw: Chimeway, committed_db: str) -> None:
    run_id = waiting_run(cw)
    with psycopg.connect(committed_db) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")  # the timer is lost
    due = cw.workflows.explain("t", run_id).suspended_until
    assert due is not None
    report = cw.sweep(now=due + dt.timedelta(seconds=1))
    assert report.runs_progressed == 1
    assert cw.workflows.explain("t", run_id).current_step_name == "email"
    again = cw.sweep(now=due + dt.timedelta(seconds=1))
    assert again.runs_progressed == 0


def test_sweep_redrives_a_delivery_whose_job_was_lost_once(cw: Chimeway, committed_db: str) -> None:
    result = cw.trigger(WithWorkflow(WF), {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    with psycopg.connect(committed_db) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute(
            "UPDATE chimeway_deliveries SET status_changed_at = now() - interval '1 hour', "
            "created_at = now() - interval '1 hour'"
        )
    assert cw.sweep().deliveries_redriven == 1
    assert cw.sweep().deliveries_redriven == 0  # its job is queued: not twice
    drain(cw)
    assert cw.delivery("t", result.delivery_ids[0]).status == "succeeded"


def test_sweep_resumes_due_deferred_deliveries(cw: Chimeway, committed_db: str) -> None:
    result = cw.trigger(WithWorkflow(WF), {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    with psycopg.connect(committed_db) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute(
            "UPDATE chimeway_deliveries SET orchestration_state = 'deferred', "
            "next_eligible_at = now() - interval '1 second', planning_reason = 'quiet_hours'"
        )
    # (A deliver job would now send it: its time has come; policy decides it again then.)
    assert cw.sweep().deferred_resumed == 1
    drain(cw)
    assert cw.delivery("t", result.delivery_ids[0]).status == "succeeded"


def test_sweep_resumes_a_deferred_delivery_whose_job_is_queued(
    cw: Chimeway, committed_db: str
) -> None:
    result = cw.trigger(WithWorkflow(WF), {"users": ["u1"]}, tenant_id="t", idempotency_key="k")
    assert isinstance(result, Triggered)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with psycopg.connect(committed_db) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute(
            "UPDATE chimeway_deliveries SET orchestration_state = 'deferred', "
            "next_eligible_at = now() - interval '1 second', planning_reason = 'quiet_hours'"
        )
    with cw.transaction() as conn:  # a job for it is queued for later already
        cw.engine.deferrer.deliver(conn, result.delivery_ids, schedule_at=later)
    assert cw.sweep().deferred_resumed == 1  # the queued job is pulled forward, no error
    drain(cw)
    assert cw.delivery("t", result.delivery_ids[0]).status == "succeeded"


def test_wait_and_signal_leave_the_run_in_a_defined_state(tx_cw: Chimeway, db: Conn) -> None:
    from chimeway import workflows

    run_id = waiting_run(tx_cw, conn=db)
    run = workflows.get_run(db, run_id)
    assert run.state == RunState.WAITING
    assert run.pending_signals == [READ, CLICKED]


def test_far_waits_get_their_timer_from_a_sweep_within_the_horizon(
    make_cw: Any, committed_db: str
) -> None:
    from chimeway import Maintenance

    cw = make_cw(maintenance=Maintenance(timer_horizon=dt.timedelta(minutes=5)))
    run_id = waiting_run(cw)  # waits 10 minutes: beyond the horizon
    timers = (
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress' "
        "AND status = 'todo'"
    )
    assert count(committed_db, timers) == 0
    assert cw.sweep().timers_armed == 0  # not within the horizon yet
    with psycopg.connect(committed_db) as conn:  # four minutes later, by the run's clock
        conn.execute(
            "UPDATE chimeway_workflow_runs SET suspended_until = now() + interval '4 minutes'"
        )
    assert cw.sweep().timers_armed == 1
    assert cw.sweep().timers_armed == 0  # armed once
    due = cw.workflows.explain("t", run_id).suspended_until
    assert count(committed_db, timers + " AND scheduled_at = %s", due) == 1


# -- plans ----------------------------------------------------------------------------------


def _plan_modes_while_routing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The plan cache mode each routing of signals runs under, from now on."""
    seen: list[str] = []
    route = signals_engine._route_locked

    def spy(engine: Any, conn: Conn, batch: Any) -> Any:
        seen.append(conn.execute("SELECT current_setting('plan_cache_mode')").fetchone()[0])  # type: ignore[index]
        return route(engine, conn, batch)

    monkeypatch.setattr(signals_engine, "_route_locked", spy)
    return seen


def test_a_signal_routed_now_runs_on_generic_plans_and_gives_the_mode_back(
    tx_cw: Chimeway, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = waiting_run(tx_cw, conn=db)
    seen = _plan_modes_while_routing(monkeypatch)
    db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    tracked = tx_cw.track_signal("t", "u1", CLICKED, conn=db, route="now")
    assert tracked.routed is not None and tracked.routed.resumed == [run_id]
    assert seen == ["force_generic_plan"]
    mode = db.execute("SELECT current_setting('plan_cache_mode')").fetchone()[0]  # type: ignore[index]
    assert mode == "force_custom_plan"  # the caller's transaction has its own mode back


def test_a_routing_job_s_generic_plans_end_with_its_transaction(
    make_cw: Any, committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cw = make_cw(pool_min_size=1, pool_max_size=1)  # the routing's connection is the one
    waiting_run(cw)
    seen = _plan_modes_while_routing(monkeypatch)
    signal_id = cw.track_signal("t", "u1", CLICKED).signal_id
    [routed] = signals_engine.route_pending_now(cw.engine, signal_id)
    assert routed.resumed and seen == ["force_generic_plan"]
    with cw.engine.pool.connection() as conn:
        assert conn.execute("SELECT current_setting('plan_cache_mode')").fetchone()[0] == "auto"  # type: ignore[index]
