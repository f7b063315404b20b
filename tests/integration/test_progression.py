"""Workflows and the progression engine against real Postgres (design §6)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import (
    Advanced,
    Bounced,
    Chimeway,
    DeliveryStatus,
    InvalidArgument,
    Noop,
    NotFound,
    OnOutcome,
    RunState,
    Step,
    Stop,
    Temporary,
    Triggered,
    WaitUntil,
    Workflow,
    WorkflowVersionConflict,
    workflows,
)
from chimeway.db import Conn
from chimeway.engine.progression import progress_timer
from chimeway.store import deliveries, jobs
from chimeway.testing import drain
from tests.integration.conftest import Recorders, concurrently, count, counts
from tests.integration.notifiers import WithWorkflow
from tests.integration.snapshots import snapshot

WAIT_30M = Workflow(
    key="escalate",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[
                WaitUntil(delay=dt.timedelta(minutes=30), to_step="email"),
            ],
        ),
        Step("email", channel="email"),
    ],
)


def start(
    cw: Chimeway,
    workflow: Workflow,
    users: list[str] | None = None,
    key: str = "k",
    tenant: str = "t",
    conn: Conn | None = None,
) -> Triggered:
    result = cw.trigger(
        WithWorkflow(workflow),
        {"users": users or ["u1"]},
        tenant_id=tenant,
        idempotency_key=key,
        conn=conn,
    )
    assert isinstance(result, Triggered)
    return result


def run_of(cw: Chimeway, run_id: uuid.UUID, conn: Conn | None = None) -> workflows.Run:
    with cw.transaction(conn) as tx:
        return workflows.get_run(tx, run_id)


def reasons(
    cw: Chimeway, run_id: uuid.UUID, tenant: str = "t", conn: Conn | None = None
) -> list[str]:
    return [t.reason for t in cw.workflows.list_traces(tenant, run_id, conn=conn)]


RUN_DELIVERIES = (
    "SELECT st.step_key, d.status::text FROM chimeway_deliveries d "
    "JOIN chimeway_workflow_steps st ON st.id = d.workflow_step_id "
    "WHERE d.workflow_run_id = %s ORDER BY st.step_order"
)


def run_deliveries(where: str | Conn, run_id: uuid.UUID) -> list[tuple[str, str]]:
    """The run's deliveries as (step, status), read through a connection (inside its
    transaction) or on a database URL."""
    if isinstance(where, psycopg.Connection):
        rows = where.execute(RUN_DELIVERIES, [run_id]).fetchall()
    else:
        with psycopg.connect(where) as conn:
            rows = conn.execute(RUN_DELIVERIES, [run_id]).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def converge(cw: Chimeway, delivery_id: uuid.UUID, to: DeliveryStatus, **kw: Any) -> None:
    """Move a delivery to a converged state by hand, without progressing its run."""
    with cw.transaction() as conn:
        deliveries.transition(conn, delivery_id, DeliveryStatus.DISPATCHED, reason="test")
        deliveries.transition(conn, delivery_id, to, reason="test", **kw)


# -- runs at trigger time -------------------------------------------------------------------


def test_trigger_starts_one_run_per_notification_and_plans_only_the_first_step(
    tx_cw: Chimeway, db: Conn
) -> None:
    result = start(tx_cw, WAIT_30M, users=["u1", "u2"], conn=db)
    assert len(result.run_ids) == 2
    assert len(result.delivery_ids) == 2
    for run_id in result.run_ids:
        explained = tx_cw.workflows.explain("t", run_id, conn=db)
        assert (explained.state, explained.current_step_name) == ("active", "notice")
        assert reasons(tx_cw, run_id, conn=db) == ["workflow_started", "step_activated"]
        assert run_deliveries(db, run_id) == [("notice", "pending")]


def test_same_definition_is_reused_and_a_changed_one_conflicts(tx_cw: Chimeway, db: Conn) -> None:
    start(tx_cw, WAIT_30M, key="a", conn=db)
    start(tx_cw, WAIT_30M, key="b", conn=db)
    assert count(db, "SELECT count(*) FROM chimeway_workflow_definitions") == 1
    changed = Workflow(key="escalate", version=1, steps=[Step("notice", channel="in_app")])
    before = counts(db)
    with pytest.raises(WorkflowVersionConflict, match="'escalate' version 1"):
        start(tx_cw, changed, key="c", conn=db)
    assert counts(db) == before


def test_conflict_inside_a_caller_transaction_writes_nothing(
    cw: Chimeway, committed_db: str
) -> None:
    start(cw, WAIT_30M, key="a")
    changed = Workflow(key="escalate", version=1, steps=[Step("notice", channel="sms")])
    before = counts(committed_db)
    with psycopg.connect(committed_db) as conn:
        conn.execute("SELECT 1")  # the caller's transaction is open
        with pytest.raises(WorkflowVersionConflict):
            cw.trigger(
                WithWorkflow(changed),
                {"users": ["u1"]},
                tenant_id="t",
                idempotency_key="c",
                conn=conn,
            )
        conn.execute("SELECT 1")  # still usable: only the savepoint was rolled back
        conn.commit()
    assert counts(committed_db) == before


def test_runs_stay_pinned_to_their_definition(tx_cw: Chimeway, db: Conn) -> None:
    old = start(tx_cw, WAIT_30M, key="a", conn=db).run_ids[0]
    v2 = Workflow(key="escalate", version=2, steps=[Step("only", channel="sms")])
    new = start(tx_cw, v2, key="b", conn=db).run_ids[0]
    assert tx_cw.workflows.explain("t", old, conn=db).current_step_name == "notice"
    assert tx_cw.workflows.explain("t", new, conn=db).current_step_name == "only"
    assert workflows.persisted_workflow(db, old) == WAIT_30M
    assert workflows.persisted_workflow(db, new) == v2


# -- waits ------------------------------------------------------------------------------------


def test_wait_then_advance_exactly_once(make_tx_cw: Any, db: Conn) -> None:
    from chimeway import Maintenance

    # A 30-minute wait is within this horizon: its timer job is deferred with the wait.
    cw = make_tx_cw(maintenance=Maintenance(timer_horizon=dt.timedelta(hours=1)))
    result = start(cw, WAIT_30M, conn=db)
    run_id = result.run_ids[0]
    drain(cw, conn=db)  # the notice is delivered; recording it starts the wait
    run = run_of(cw, run_id, conn=db)
    assert run.state == RunState.WAITING
    assert run.status_reason == "waiting_for_step_progression"
    ctx = run.status_context
    assert set(ctx) == {
        "rule_kind",
        "anchor",
        "anchor_delivery_id",
        "anchor_delivery_status",
        "anchor_timestamp",
        "due_at",
        "to_step",
    }
    assert ctx["anchor_delivery_id"] == str(result.delivery_ids[0])
    assert ctx["anchor_delivery_status"] == "succeeded"
    due_at = dt.datetime.fromisoformat(ctx["due_at"])
    assert (due_at - dt.datetime.fromisoformat(ctx["anchor_timestamp"])).total_seconds() == 1800
    assert run.suspended_until == due_at
    # The timer job was deferred with the wait, at due_at.
    assert (
        count(
            db,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress' "
            "AND priority = 1 "
            "AND scheduled_at = %s AND status = 'todo'",
            due_at,
        )
        == 1
    )

    early = cw.progression.progress_run(run_id, now=due_at - dt.timedelta(seconds=1), conn=db)
    assert early == Noop(run_id, "wait_not_due")
    advanced = cw.progression.progress_run(run_id, now=due_at + dt.timedelta(seconds=1), conn=db)
    assert isinstance(advanced, Advanced)
    assert advanced.to_step == "email"
    assert len(advanced.delivery_ids) == 1
    again = cw.progression.progress_run(run_id, now=due_at + dt.timedelta(seconds=2), conn=db)
    assert isinstance(again, Noop)

    trace = reasons(cw, run_id, conn=db)
    assert trace.count("reactivated_from_wait") == 1
    assert trace.count("step_activated") == 2  # the first step, then email
    assert run_deliveries(db, run_id) == [("notice", "succeeded"), ("email", "pending")]
    assert cw.workflows.explain("t", run_id, conn=db).current_step_name == "email"


def test_ten_concurrent_progress_calls_on_a_waiting_run_not_yet_due_are_noops(
    make_cw: Any,
) -> None:
    cw = make_cw(pool_max_size=12)
    run_id = start(cw, WAIT_30M).run_ids[0]
    drain(cw)
    results = concurrently(10, lambda: cw.progression.progress_run(run_id))
    assert results == [Noop(run_id, "wait_not_due")] * 10


def test_due_sweep_advances_due_waits_only(cw: Chimeway) -> None:
    due = start(cw, WAIT_30M, key="a").run_ids[0]
    later = start(
        cw,
        Workflow(
            key="later",
            version=1,
            steps=[
                Step("a", channel="in_app", progress=[WaitUntil(delay=7200, to_step="b")]),
                Step("b", channel="email"),
            ],
        ),
        key="b",
    ).run_ids[0]
    drain(cw)
    due_at = run_of(cw, due).suspended_until
    assert due_at is not None
    results = cw.progression.progress_due_runs(now=due_at + dt.timedelta(minutes=1))
    assert [(type(r).__name__, r.run_id) for r in results] == [("Advanced", due)]
    assert run_of(cw, later).state == RunState.WAITING
    assert cw.progression.progress_due_runs(now=due_at + dt.timedelta(minutes=1)) == []


WAIT_5M = Workflow(
    key="soon",
    version=1,
    steps=[
        Step("notice", channel="in_app", progress=[WaitUntil(delay=300, to_step="email")]),
        Step("email", channel="email"),
    ],
)
TIMERS = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'chimeway:progress'"


def test_the_due_sweep_deletes_the_timer_jobs_of_the_runs_it_moves(
    cw: Chimeway, committed_db: str
) -> None:
    runs = start(cw, WAIT_5M, users=["u0", "u1", "u2"]).run_ids
    drain(cw)
    assert count(committed_db, TIMERS) == 3  # due within the timer horizon: queued
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    results = cw.progression.progress_due_runs(now=later)
    assert sorted(r.run_id for r in results if isinstance(r, Advanced)) == sorted(runs)
    assert count(committed_db, TIMERS) == 0  # they would have found their runs moved on


def test_the_due_sweep_skips_a_timer_job_a_worker_is_fetching(
    cw: Chimeway, committed_db: str
) -> None:
    runs = start(cw, WAIT_5M, users=["u0", "u1", "u2"]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    fetching = jobs.progress_lock(runs[0])
    with psycopg.connect(committed_db) as worker:
        # What Procrastinate's fetch holds while it takes the job.
        worker.execute(
            "SELECT id FROM procrastinate_jobs WHERE queueing_lock = %s FOR UPDATE", [fetching]
        )
        swept: list[Any] = []
        sweeper = threading.Thread(
            target=lambda: swept.extend(cw.progression.progress_due_runs(now=later))
        )
        sweeper.start()
        sweeper.join(timeout=30)
        assert not sweeper.is_alive(), "the sweep waited for the job being fetched"
        worker.rollback()
    assert sorted(r.run_id for r in swept if isinstance(r, Advanced)) == sorted(runs)
    # The job being fetched was left alone; its worker finds its run moved on.
    assert count(committed_db, TIMERS + " AND queueing_lock = %s", fetching) == 1
    assert count(committed_db, TIMERS) == 1
    assert isinstance(progress_timer(cw.engine, runs[0], now=later), Noop)
    assert reasons(cw, runs[0]).count("reactivated_from_wait") == 1


def test_a_batch_that_fails_is_retried_run_by_run_and_the_failing_run_keeps_waiting(
    cw: Chimeway, committed_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    runs = start(cw, WAIT_5M, users=["u0", "u1", "u2"]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with psycopg.connect(committed_db, autocommit=True) as admin:
        # Planning u1's next delivery fails (as a constraint or a lost row would).
        admin.execute(
            "CREATE FUNCTION fail_u1() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.recipient_id = 'u1' THEN RAISE EXCEPTION 'u1 fails'; END IF; "
            "RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER fail_u1 BEFORE INSERT ON chimeway_deliveries "
            "FOR EACH ROW EXECUTE FUNCTION fail_u1()"
        )
        results = cw.progression.progress_due_runs(now=later)
        assert sorted(r.run_id for r in results) == sorted([runs[0], runs[2]])
        assert all(isinstance(r, Advanced) for r in results)
        assert "retrying them one by one" in caplog.text
        assert "the next sweep tries again" in caplog.text
        assert run_of(cw, runs[1]).state == RunState.WAITING
        assert reasons(cw, runs[1]).count("reactivated_from_wait") == 0
        admin.execute("DROP TRIGGER fail_u1 ON chimeway_deliveries")
    [again] = cw.progression.progress_due_runs(now=later)
    assert isinstance(again, Advanced) and again.run_id == runs[1]
    for run_id in runs:
        assert reasons(cw, run_id).count("reactivated_from_wait") == 1
        assert [step for step, _ in run_deliveries(committed_db, run_id)] == ["notice", "email"]


def test_an_elapsed_wait_is_recorded_as_reactivated_then_advanced(
    cw: Chimeway, committed_db: str
) -> None:
    runs = start(cw, WAIT_30M, users=["u0", "u1", "u2"]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert isinstance(cw.progression.progress_run(runs[0], now=later), Advanced)  # its timer
    assert len(cw.progression.progress_due_runs(now=later)) == 2  # the sweep, one batch
    for run_id in runs:
        with psycopg.connect(committed_db) as conn:
            history = conn.execute(
                "SELECT reason, from_state::text, to_state::text, "
                "context->>'step_key', step_id = r.current_step_id "
                "FROM chimeway_workflow_transitions t "
                "JOIN chimeway_workflow_runs r ON r.id = t.run_id "
                "WHERE t.run_id = %s ORDER BY t.id",
                [run_id],
            ).fetchall()
        assert history[-3:] == [
            ("waiting_for_step_progression", "active", "waiting", None, False),
            ("reactivated_from_wait", "waiting", "active", None, False),
            ("step_activated", "active", "active", "email", True),
        ]
        assert run_of(cw, run_id).state == RunState.ACTIVE


def test_concurrent_sweepers_advance_each_run_once(make_cw: Any, committed_db: str) -> None:
    cw = make_cw(pool_max_size=12)
    runs = start(cw, WAIT_30M, users=[f"u{i}" for i in range(30)]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    batches = concurrently(4, lambda: cw.progression.progress_due_runs(now=later))
    advanced = [r.run_id for batch in batches for r in batch if isinstance(r, Advanced)]
    assert sorted(advanced) == sorted(runs)
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM chimeway_workflow_transitions "
            "WHERE reason = 'reactivated_from_wait'",
        )
        == 30
    )


def test_a_batch_of_due_waits_writes_what_their_timers_would(
    cw: Chimeway, committed_db: str
) -> None:
    runs = start(cw, WAIT_30M, users=[f"u{i}" for i in range(6)]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    one_by_one, batched = runs[:3], runs[3:]
    for run_id in one_by_one:  # what each run's timer does
        assert isinstance(cw.progression.progress_run(run_id, now=later), Advanced)
    results = cw.progression.progress_due_runs(now=later, batch_size=3)  # one set-wise batch
    assert sorted(r.run_id for r in results) == sorted(batched)
    assert all(isinstance(r, Advanced) and len(r.delivery_ids) == 1 for r in results)
    expected = snapshot(committed_db, one_by_one[0])
    assert '"reactivated_from_wait"' in expected and '"step_activated"' in expected
    for run_id in runs:
        assert snapshot(committed_db, run_id) == expected


def test_a_timer_that_fires_takes_along_the_other_due_waits(
    cw: Chimeway, committed_db: str
) -> None:
    runs = start(cw, WAIT_30M, users=[f"u{i}" for i in range(5)]).run_ids
    drain(cw)
    due = run_of(cw, runs[0]).suspended_until
    assert due is not None
    early = due - dt.timedelta(minutes=1)
    # A timer run early takes nothing along, not even waits due by then.
    assert isinstance(progress_timer(cw.engine, runs[0], now=early), Noop)
    assert {run_of(cw, r).state for r in runs} == {RunState.WAITING}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    result = progress_timer(cw.engine, runs[0], now=later)
    assert isinstance(result, Advanced) and result.run_id == runs[0]
    assert {run_of(cw, r).state for r in runs} == {RunState.ACTIVE}  # all five, one job
    for run_id in runs:
        assert reasons(cw, run_id).count("reactivated_from_wait") == 1
        assert [step for step, _ in run_deliveries(committed_db, run_id)] == ["notice", "email"]
    # Their own timers, when they run, find the runs moved on.
    assert isinstance(progress_timer(cw.engine, runs[1], now=later), Noop)


def test_timers_racing_sweepers_advance_each_run_once(make_cw: Any, committed_db: str) -> None:
    cw = make_cw(pool_max_size=12)
    runs = start(cw, WAIT_30M, users=[f"u{i}" for i in range(40)]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    queue = iter(runs)
    lock = threading.Lock()

    def timers() -> list[Any]:  # what the runs' timer jobs do, one run at a time
        done = []
        while True:
            with lock:
                run_id = next(queue, None)
            if run_id is None:
                return done
            done.append(cw.progression.progress_run(run_id, now=later))

    def sweeper() -> list[Any]:
        return cw.progression.progress_due_runs(now=later, batch_size=7)

    roles = iter([timers, sweeper] * 3)

    def either() -> list[Any]:
        with lock:
            role = next(roles)
        return role()

    outcomes = concurrently(6, either)
    advanced = [r.run_id for batch in outcomes for r in batch if isinstance(r, Advanced)]
    assert sorted(advanced) == sorted(runs)  # each run advanced by exactly one of them
    for run_id in runs:
        assert reasons(cw, run_id).count("reactivated_from_wait") == 1
        assert [step for step, _ in run_deliveries(committed_db, run_id)] == ["notice", "email"]


# -- branching on outcomes --------------------------------------------------------------------


BRANCHY = Workflow(
    key="branchy",
    version=1,
    steps=[
        Step(
            "email",
            channel="email",
            progress=[
                OnOutcome(outcome="bounced", to_step="sms"),
                OnOutcome(outcome="temporary_failure", to_step="push"),
            ],
        ),
        Step("sms", channel="sms"),
        Step("push", channel="push"),
    ],
)


def test_on_outcome_bounced_advances_with_evidence(
    tx_cw: Chimeway, adapters: Recorders, db: Conn
) -> None:
    adapters["email"].then(Bounced("mailbox does not exist"))
    run_id = start(tx_cw, BRANCHY, conn=db).run_ids[0]
    drain(tx_cw, conn=db)
    traces = tx_cw.workflows.list_traces("t", run_id, conn=db)
    [progressed] = [t for t in traces if t.reason == "progressed_on_delivery_outcome"]
    assert progressed.context == {
        "rule_kind": "on_outcome",
        "workflow_outcome": "bounced",
        "anchor_delivery_id": progressed.context["anchor_delivery_id"],
        "from_step": "email",
        "to_step": "sms",
        "delivery_status": "cancelled",
        "suppression_reason": "bounced",
        "attempt_outcome": "bounced",
        "attempt_error_class": "bounced",
    }
    assert run_deliveries(db, run_id) == [("email", "cancelled"), ("sms", "succeeded")]
    # sms is the last step and has no rules: its delivery completes the run.
    explained = tx_cw.workflows.explain("t", run_id, conn=db)
    assert (explained.state, explained.terminal_reason) == ("completed", "implicit_completion")


def test_stop_on_bounced_stops_once(tx_cw: Chimeway, adapters: Recorders, db: Conn) -> None:
    wf = Workflow(
        key="stopper",
        version=1,
        steps=[
            Step(
                "email",
                channel="email",
                progress=[Stop(outcome="bounced"), WaitUntil(delay=60, to_step="sms")],
            ),
            Step("sms", channel="sms"),
        ],
    )
    adapters["email"].then(Bounced("no such user"))
    run_id = start(tx_cw, wf, conn=db).run_ids[0]
    drain(tx_cw, conn=db)
    explained = tx_cw.workflows.explain("t", run_id, conn=db)
    assert (explained.state, explained.status_reason) == ("stopped", "workflow_stopped")
    assert explained.terminal_reason == "stopped_on_bounced"
    assert reasons(tx_cw, run_id, conn=db).count("workflow_stopped") == 1
    assert tx_cw.progression.progress_run(run_id, conn=db) == Noop(run_id, "run_not_active")


def test_final_step_without_rules_completes(tx_cw: Chimeway, db: Conn) -> None:
    wf = Workflow(key="single", version=1, steps=[Step("only", channel="in_app")])
    run_id = start(tx_cw, wf, conn=db).run_ids[0]
    drain(tx_cw, conn=db)
    assert reasons(tx_cw, run_id, conn=db)[-1] == "workflow_completed"
    assert tx_cw.workflows.explain("t", run_id, conn=db).state == "completed"


def test_pending_delivery_is_a_noop_and_leaves_the_run_active(tx_cw: Chimeway, db: Conn) -> None:
    run_id = start(tx_cw, WAIT_30M, conn=db).run_ids[0]
    assert tx_cw.progression.progress_run(run_id, conn=db) == Noop(
        run_id, "prior_delivery_not_converged"
    )
    assert run_of(tx_cw, run_id, conn=db).state == RunState.ACTIVE
    assert reasons(tx_cw, run_id, conn=db) == ["workflow_started", "step_activated"]


def test_retrying_failure_does_not_start_a_wait_or_complete(
    make_tx_cw: Any, adapters: Recorders, db: Conn
) -> None:
    from chimeway import RetryPolicy

    cw = make_tx_cw(default_retry=RetryPolicy(base_delay=dt.timedelta(hours=1)))
    adapters["in_app"].then(Temporary("timeout"))
    run_id = start(cw, WAIT_30M, conn=db).run_ids[0]
    drain(cw, conn=db)
    run = run_of(cw, run_id, conn=db)
    assert run.state == RunState.ACTIVE
    assert cw.progression.progress_run(run_id, conn=db) == Noop(run_id, "no_matching_progress_rule")
    single = Workflow(key="single", version=1, steps=[Step("only", channel="in_app")])
    adapters["in_app"].then(Temporary("timeout"))
    other = start(cw, single, key="b", conn=db).run_ids[0]
    drain(cw, conn=db)
    assert cw.progression.progress_run(other, conn=db) == Noop(other, "no_progress_rules")


def test_on_outcome_temporary_failure_fires_while_retrying(
    make_tx_cw: Any, adapters: Recorders, db: Conn
) -> None:
    from chimeway import RetryPolicy

    cw = make_tx_cw(default_retry=RetryPolicy(base_delay=dt.timedelta(hours=1)))
    adapters["email"].then(Temporary("timeout"))
    run_id = start(cw, BRANCHY, conn=db).run_ids[0]
    drain(cw, conn=db)
    # The run moved on: the email's pending retry is cancelled, so it never sends late.
    assert run_deliveries(db, run_id) == [("email", "cancelled"), ("push", "succeeded")]
    assert (
        count(
            db, "SELECT count(*) FROM chimeway_deliveries WHERE suppression_reason = 'superseded'"
        )
        == 1
    )


def test_ten_concurrent_progress_calls_on_a_converged_run_advance_once(
    make_cw: Any, committed_db: str
) -> None:
    cw = make_cw(pool_max_size=12)
    wf = Workflow(
        key="next",
        version=1,
        steps=[
            Step("a", channel="in_app", progress=[OnOutcome(outcome="delivered", to_step="b")]),
            Step("b", channel="email"),
        ],
    )
    result = start(cw, wf)
    run_id = result.run_ids[0]
    converge(cw, result.delivery_ids[0], DeliveryStatus.SUCCEEDED)
    results = concurrently(10, lambda: cw.progression.progress_run(run_id))
    assert sum(isinstance(r, Advanced) for r in results) == 1
    assert [r for r in results if not isinstance(r, Advanced)] == [
        Noop(run_id, "prior_delivery_not_converged")
    ] * 9
    assert run_deliveries(committed_db, run_id) == [("a", "succeeded"), ("b", "pending")]
    assert reasons(cw, run_id).count("progressed_on_delivery_outcome") == 1


def test_delivered_step_and_next_delivery_job_commit_together(
    cw: Chimeway, committed_db: str
) -> None:
    wf = Workflow(
        key="next",
        version=1,
        steps=[
            Step("a", channel="in_app", progress=[OnOutcome(outcome="delivered", to_step="b")]),
            Step("b", channel="email", progress=[Stop(outcome="delivered")]),
        ],
    )
    result = start(cw, wf)
    assert cw.deliver(result.delivery_ids[0]).action == "succeeded"
    # One transaction recorded the attempt, advanced the run and deferred b's job.
    with psycopg.connect(committed_db) as conn:
        [(b_id,)] = conn.execute(
            "SELECT id FROM chimeway_deliveries WHERE channel = 'email'"
        ).fetchall()
    assert (
        count(
            committed_db,
            "SELECT count(*) FROM procrastinate_jobs WHERE args->>'delivery_id' = %s",
            str(b_id),
        )
        == 1
    )
    drain(cw)
    assert isinstance(cw.progression.progress_run(result.run_ids[0]), Noop)
    assert cw.workflows.explain("t", result.run_ids[0]).state == "stopped"


# -- operator reads ---------------------------------------------------------------------------


def test_explain_and_traces_are_tenant_scoped(tx_cw: Chimeway, db: Conn) -> None:
    run_id = start(tx_cw, WAIT_30M, tenant="t1", conn=db).run_ids[0]
    assert tx_cw.workflows.explain("t1", run_id, conn=db).tenant_id == "t1"
    for tenant, execution in [("t2", run_id), ("t1", uuid.uuid4())]:
        with pytest.raises(NotFound, match="not found"):
            tx_cw.workflows.explain(tenant, execution, conn=db)
        with pytest.raises(NotFound, match="not found"):
            tx_cw.workflows.list_traces(tenant, execution, conn=db)


def test_list_traces_limit_returns_the_oldest_first(tx_cw: Chimeway, db: Conn) -> None:
    run_id = start(tx_cw, WAIT_30M, conn=db).run_ids[0]
    drain(tx_cw, conn=db)
    assert [t.reason for t in tx_cw.workflows.list_traces("t", run_id, limit=1, conn=db)] == [
        "workflow_started"
    ]
    all_reasons = reasons(tx_cw, run_id, conn=db)
    assert all_reasons == ["workflow_started", "step_activated", "waiting_for_step_progression"]


def test_explain_reports_the_wait(tx_cw: Chimeway, db: Conn) -> None:
    wf = Workflow(
        key="cancellable",
        version=1,
        steps=[
            Step(
                "a",
                channel="in_app",
                progress=[
                    WaitUntil(delay=60, to_step="b", cancel_signals=["chimeway.notification.read"])
                ],
            ),
            Step("b", channel="email"),
        ],
    )
    run_id = start(tx_cw, wf, conn=db).run_ids[0]
    drain(tx_cw, conn=db)
    explained = tx_cw.workflows.explain("t", run_id, conn=db)
    assert explained.state == "waiting"
    assert explained.current_step_name == "a"
    assert explained.pending_signals == ["chimeway.notification.read"]
    assert explained.suspended_until is not None
    assert explained.terminal_reason is None


def test_update_run_refuses_moves_outside_the_table(tx_cw: Chimeway, db: Conn) -> None:
    from chimeway import InvalidTransition

    wf = Workflow(key="single", version=1, steps=[Step("only", channel="in_app")])
    run_id = start(tx_cw, wf, conn=db).run_ids[0]
    drain(tx_cw, conn=db)
    with (
        pytest.raises(InvalidTransition, match="cannot move from completed to active"),
        tx_cw.transaction(db) as conn,
    ):
        run = workflows.lock_run(conn, run_id)
        assert run is not None
        workflows.update_run(conn, run, state=RunState.ACTIVE, status_reason="x")


@pytest.mark.parametrize("options", [{"limit": 0}, {"batch_size": 0}])
def test_due_sweep_refuses_a_size_below_one(tx_cw: Chimeway, options: dict[str, int]) -> None:
    # Refused before any connection is taken: no database of its own is needed.
    with pytest.raises(InvalidArgument, match="at least 1"):
        tx_cw.progression.progress_due_runs(**options)


def test_a_timer_fires_every_due_wait_in_one_transaction_and_waits_only_for_its_own_held_run(
    cw: Chimeway, committed_db: str
) -> None:
    """A burst's first timer job moves every due wait at once (not its own run first and
    the others after that transaction); a run another transaction holds (the waker's
    firing, a signal) is skipped by that batch, and the timer then waits for it alone:
    it is advanced once, after the holder lets go."""
    runs = start(cw, WAIT_30M, users=[f"u{i}" for i in range(4)]).run_ids
    drain(cw)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    held, timer = runs[0], runs[1]
    others = [r for r in runs if r != held]
    result: list[Any] = []
    with psycopg.connect(committed_db) as holder:
        holder.execute("SELECT 1 FROM chimeway_workflow_runs WHERE id = %s FOR UPDATE", [held])
        thread = threading.Thread(
            target=lambda: result.append(progress_timer(cw.engine, timer, now=later))
        )
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the timer waited for a run another transaction holds"
        assert isinstance(result[0], Advanced) and result[0].run_id == timer
        assert {run_of(cw, r).state for r in others} == {RunState.ACTIVE}
        assert run_of(cw, held).state == RunState.WAITING
        with psycopg.connect(committed_db) as conn:
            moved_at = conn.execute(
                "SELECT count(DISTINCT created_at) FROM chimeway_workflow_transitions "
                "WHERE reason = 'reactivated_from_wait' AND run_id = ANY(%s)",
                [others],
            ).fetchone()
        assert moved_at == (1,)  # one transaction
        # The held run's own timer waits for the holder, then advances it once.
        own: list[Any] = []
        thread = threading.Thread(
            target=lambda: own.append(progress_timer(cw.engine, held, now=later))
        )
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive()
        holder.rollback()
        thread.join(timeout=30)
    assert isinstance(own[0], Advanced) and own[0].run_id == held
    for run_id in runs:
        assert reasons(cw, run_id).count("reactivated_from_wait") == 1
