"""chimeway.testing's factories: runs in any state, built through the engine's own moves,
which the engine then treats like any other run (each test in a rolled-back transaction)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from chimeway import (
    Advanced,
    Chimeway,
    Completed,
    DeliveryReason,
    InvalidArgument,
    Noop,
    OnOutcome,
    RunState,
    Step,
    Stop,
    WaitUntil,
    Workflow,
)
from chimeway.engine.progression import progress_in
from chimeway.store import deliveries, runs
from chimeway.testing import make_run, seed_waiting_runs, seeded_run_id
from tests.integration.conftest import count

ESCALATE = Workflow(
    key="factory_escalate",
    version=1,
    steps=[
        Step(
            "notice",
            channel="in_app",
            progress=[
                Stop(outcome="bounced"),
                WaitUntil(delay=dt.timedelta(minutes=30), to_step="email", cancel_signals=["read"]),
            ],
        ),
        Step("email", channel="email", progress=[OnOutcome(outcome="delivered", to_step="sms")]),
        Step("sms", channel="sms"),
    ],
)


def jobs(db: psycopg.Connection[Any], task: str) -> int:
    row = db.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s", [task])
    found = row.fetchone()
    assert found is not None
    return int(found[0])


def test_a_new_run_is_active_on_its_first_step_with_its_job(
    shared_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    made = make_run(shared_cw, ESCALATE, conn=db)
    run = runs.get(db, made.run_id)
    assert (run.state, run.status_reason) == (RunState.ACTIVE, "workflow_started")
    assert list(made.delivery_ids) == ["notice"]
    assert deliveries.get(db, made.delivery_ids["notice"]).status == "pending"
    assert jobs(db, "chimeway:deliver") == 1
    # The engine sees a run waiting for its delivery.
    assert progress_in(shared_cw.engine, db, made.run_id) == Noop(
        made.run_id, "prior_delivery_not_converged"
    )


def test_a_run_on_a_later_step_has_sent_the_earlier_ones(
    shared_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    made = make_run(shared_cw, ESCALATE, step="email", delivery="succeeded", conn=db)
    assert [deliveries.get(db, d).status for d in made.delivery_ids.values()] == [
        "succeeded",
        "succeeded",
    ]
    assert [a.outcome for a in deliveries.attempts(db, made.delivery_ids["notice"])] == [
        "succeeded"
    ]
    assert jobs(db, "chimeway:deliver") == 0
    # Its OnOutcome rule takes it on, as for any run.
    result = progress_in(shared_cw.engine, db, made.run_id)
    assert isinstance(result, Advanced) and result.to_step == "sms"


def test_a_waiting_run_is_due_when_told_and_then_advances(
    shared_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    due = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)
    made = make_run(shared_cw, ESCALATE, state="waiting", due_at=due, conn=db)
    run = runs.get(db, made.run_id)
    assert (run.state, run.suspended_until, run.pending_signals) == (
        RunState.WAITING,
        due,
        ["read"],
    )
    assert jobs(db, "chimeway:progress") == 1  # its timer, within the horizon
    assert progress_in(shared_cw.engine, db, made.run_id, now=due - dt.timedelta(seconds=1)) == (
        Noop(made.run_id, "wait_not_due")
    )
    advanced = progress_in(shared_cw.engine, db, made.run_id, now=due)
    assert isinstance(advanced, Advanced) and advanced.to_step == "email"


@pytest.mark.parametrize(
    ("state", "delivery", "reason", "terminal_reason"),
    [
        ("completed", None, None, "implicit_completion"),
        ("stopped", "cancelled", "bounced", "stopped_on_bounced"),
        ("failed", "failed", None, None),
    ],
)
def test_finished_runs(
    shared_cw: Chimeway,
    db: psycopg.Connection[Any],
    state: str,
    delivery: str | None,
    reason: str | None,
    terminal_reason: str | None,
) -> None:
    made = make_run(shared_cw, ESCALATE, state=state, delivery=delivery, reason=reason, conn=db)
    run = runs.get(db, made.run_id)
    assert (run.state, run.terminal_reason) == (state, terminal_reason)
    assert progress_in(shared_cw.engine, db, made.run_id) == Noop(made.run_id, "run_not_active")
    if reason is not None:
        sent = deliveries.get(db, made.delivery_ids["notice"])
        assert (sent.status, sent.suppression_reason) == (delivery, DeliveryReason(reason))


def test_every_delivery_status_can_be_built(
    shared_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    cases = [
        ("pending", None),
        ("dispatched", None),
        ("succeeded", None),
        ("failed", None),
        ("suppressed", "channel_disabled"),
        ("cancelled", "retries_exhausted"),
        ("cancelled", "permanent_failure"),
        ("cancelled", "manual"),
    ]
    for status, reason in cases:
        made = make_run(shared_cw, ESCALATE, delivery=status, reason=reason, conn=db)
        got = deliveries.get(db, made.delivery_ids["notice"])
        assert (got.status, got.suppression_reason) == (status, reason)


def test_bad_requests_are_refused(shared_cw: Chimeway, db: psycopg.Connection[Any]) -> None:
    before = count(db, "SELECT count(*) FROM chimeway_workflow_runs")
    with pytest.raises(InvalidArgument, match="no step 'nowhere'"):
        make_run(shared_cw, ESCALATE, step="nowhere", conn=db)
    with pytest.raises(InvalidArgument, match="needs a WaitUntil on step 'sms'"):
        make_run(shared_cw, ESCALATE, state="waiting", step="sms", conn=db)
    # Each refusal rolled back its savepoint: nothing of either run is left.
    assert count(db, "SELECT count(*) FROM chimeway_workflow_runs") == before


def test_the_run_completes_through_the_engine(
    shared_cw: Chimeway, db: psycopg.Connection[Any]
) -> None:
    made = make_run(shared_cw, ESCALATE, step="sms", delivery="succeeded", conn=db)
    assert progress_in(shared_cw.engine, db, made.run_id) == Completed(
        made.run_id, "implicit_completion"
    )


def test_seeded_waiting_runs_are_due_as_asked(cw: Chimeway, committed_db: str) -> None:
    seeded = seed_waiting_runs(cw, ESCALATE, runs_count=300, due=30, fast=True)
    assert {s.table: s.rows for s in seeded}["workflow_runs"] == 300
    assert count(committed_db, "SELECT count(*) FROM chimeway_workflow_runs") == 300
    due = "SELECT count(*) FROM chimeway_workflow_runs WHERE suspended_until <= now()"
    assert count(committed_db, due) == 30
    first = cw.workflows.explain("t", seeded_run_id(0))
    assert (first.state, first.current_step_name) == ("waiting", "notice")
    assert len(cw.progression.progress_due_runs()) == 30
    assert count(committed_db, "SELECT count(*) FROM chimeway_deliveries") == 330
