"""The seed-named functions of ``chimeway.workflows``, each with the connection first."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import psycopg
import pytest

from chimeway import (
    InvalidTransition,
    NotFound,
    OnOutcome,
    RunState,
    Step,
    Workflow,
    WorkflowVersionConflict,
    workflows,
)

WF = Workflow(
    key="api",
    version=1,
    steps=[
        Step("a", channel="in_app", progress=[OnOutcome(outcome="delivered", to_step="b")]),
        Step("b", channel="email"),
    ],
)


def notification(db: psycopg.Connection[Any], recipient: str = "u1") -> uuid.UUID:
    event = db.execute(
        "INSERT INTO chimeway_events (tenant_id, notification_key, notification_version, "
        "idempotency_key) VALUES ('t', 'n', 1, %s) RETURNING id",
        [str(uuid.uuid4())],
    ).fetchone()
    assert event is not None
    row = db.execute(
        "INSERT INTO chimeway_notifications (event_id, tenant_id, recipient_id) "
        "VALUES (%s, 't', %s) RETURNING id",
        [event[0], recipient],
    ).fetchone()
    assert row is not None
    return row[0]


def test_upsert_fetch_and_ensure_definition(db: psycopg.Connection[Any]) -> None:
    assert workflows.fetch_definition(db, "api", 1) is None
    stored = workflows.upsert_definition(db, "n", WF)
    assert [s.step_key for s in stored.steps] == ["a", "b"]
    assert workflows.fetch_definition(db, "api", 1) == stored
    cache: dict[Any, Any] = {}
    assert workflows.ensure_definition(db, "n", WF, cache).id == stored.id
    # Stored by this transaction, which can still roll back: not remembered.
    assert cache == {}
    assert stored.workflow() == WF
    with pytest.raises(WorkflowVersionConflict):
        workflows.upsert_definition(
            db, "n", Workflow(key="api", version=1, steps=[Step("a", channel="sms")])
        )


def test_runs_steps_and_transitions(db: psycopg.Connection[Any]) -> None:
    definition = workflows.upsert_definition(db, "n", WF)
    notification_id = notification(db)
    run = workflows.create_initial_run(db, notification_id, definition, "t", "u1")
    assert (run.state, run.status_reason, run.tenant_id) == ("active", "workflow_started", "t")
    assert workflows.get_run(db, run.id) == run
    assert workflows.lock_run(db, run.id) == run
    assert workflows.lock_run(db, uuid.uuid4()) is None
    with pytest.raises(NotFound):
        workflows.get_run(db, uuid.uuid4())
    assert workflows.get_current_step(db, run).step_key == "a"
    b = workflows.fetch_step_by_key(db, definition.id, "b")
    assert b is not None and b.channel == "email"
    assert workflows.fetch_step_by_key(db, definition.id, "zzz") is None
    linkage = workflows.active_step_linkage(db, run.id)
    assert (linkage.workflow_run_id, linkage.channel) == (run.id, "in_app")
    assert workflows.persisted_workflow(db, run.id) == WF

    moved = workflows.update_run(
        db, run, state=RunState.ACTIVE, status_reason="x", current_step_id=b.id
    )
    assert workflows.get_current_step(db, moved).step_key == "b"
    appended = workflows.append_transition(
        db,
        run.id,
        from_state=RunState.ACTIVE,
        to_state=RunState.ACTIVE,
        reason="custom",
        step_id=b.id,
        context={"k": 1},
    )
    assert (appended.reason, appended.context) == ("custom", {"k": 1})
    reasons = [t.reason for t in workflows.list_traces(db, "t", run.id)]
    assert reasons == ["workflow_started", "step_activated", "custom"]
    stale = dataclasses.replace(run, state=RunState.WAITING)  # as read before a change
    with pytest.raises(InvalidTransition, match="is no longer waiting"):
        workflows.update_run(db, stale, state=RunState.ACTIVE, status_reason="stale")


def test_list_runs_and_run_deliveries_are_tenant_scoped(db: psycopg.Connection[Any]) -> None:
    definition = workflows.upsert_definition(db, "n", WF)
    run = workflows.create_initial_run(db, notification(db), definition, "t", "u1")
    assert [r.id for r in workflows.list_runs(db, "t")] == [run.id]
    assert workflows.list_runs(db, "other") == []
    assert workflows.list_runs(db, "t", state="completed") == []
    assert [r.id for r in workflows.list_runs(db, "t", workflow_key="api")] == [run.id]
    assert workflows.run_deliveries(db, "t", run.id) == []
    with pytest.raises(NotFound):
        workflows.run_deliveries(db, "other", run.id)
