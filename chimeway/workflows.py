"""The seeds' ``Chimeway.Workflows`` functions, connection first (design §3).

Each takes a psycopg connection as its first argument and runs in that connection's
transaction, so callers can read or move workflow definitions and runs inside their own
transactions. Definitions are immutable per (key, version); runs stay pinned to the
definition they started on; every run state change goes through :func:`update_runs`,
guarded by :data:`ALLOWED`, and is explained by the transitions it appends in the same
statement. ``cw.workflows`` offers the same operator reads over the pool.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chimeway.db import Conn
from chimeway.dsl import Workflow
from chimeway.errors import NotFound
from chimeway.store import definitions
from chimeway.store.definitions import Definition, DefinitionRow, StepRow
from chimeway.store.runs import (
    ALLOWED,
    Move,
    NewRun,
    Record,
    Run,
    append_transition,
    create_initial_runs,
    explain,
    list_runs,
    list_traces,
    lock_run,
    lock_runs,
    update_run,
    update_runs,
)
from chimeway.store.runs import delivery_ids as run_deliveries
from chimeway.store.runs import get as get_run

__all__ = [
    "ALLOWED",
    "Definition",
    "DefinitionRow",
    "Move",
    "NewRun",
    "Record",
    "Run",
    "StepLinkage",
    "StepRow",
    "active_step_linkage",
    "append_transition",
    "create_initial_run",
    "create_initial_runs",
    "ensure_definition",
    "explain",
    "fetch_definition",
    "fetch_step_by_key",
    "get_current_step",
    "get_run",
    "list_runs",
    "list_traces",
    "lock_run",
    "lock_runs",
    "persisted_workflow",
    "run_deliveries",
    "update_run",
    "update_runs",
    "upsert_definition",
]


@dataclass(frozen=True)
class StepLinkage:
    """Which run, step and channel a run's next delivery belongs to."""

    workflow_run_id: uuid.UUID
    workflow_step_id: uuid.UUID
    channel: str


def upsert_definition(conn: Conn, notification_key: str, workflow: Workflow) -> Definition:
    """Store the definition, or return the stored one if it is the same. A different
    definition under the same (key, version) raises
    :class:`~chimeway.WorkflowVersionConflict`: bump the version to change a workflow."""
    return definitions.upsert(conn, notification_key, workflow)[0]


def ensure_definition(
    conn: Conn,
    notification_key: str,
    workflow: Workflow,
    cache: dict[tuple[str, int, str], Definition] | None = None,
) -> Definition:
    """:func:`upsert_definition`, remembered in ``cache`` once it is known to be committed:
    one this transaction inserted could still roll back, so it is not cached."""
    key = (workflow.key, workflow.version, workflow.checksum())
    if cache is not None and key in cache:
        return cache[key]
    definition, committed = definitions.upsert(conn, notification_key, workflow)
    if cache is not None and committed:
        cache[key] = definition
    return definition


def fetch_definition(conn: Conn, workflow_key: str, workflow_version: int) -> Definition | None:
    return definitions.fetch(conn, workflow_key, workflow_version)


def persisted_workflow(conn: Conn, run_id: uuid.UUID) -> Workflow:
    """The workflow a run is pinned to, rebuilt from its stored definition."""
    return definitions.by_id(conn, get_run(conn, run_id).definition_id).workflow()


def create_initial_run(
    conn: Conn,
    notification_id: uuid.UUID,
    definition: Definition,
    tenant_id: str,
    recipient_id: str,
) -> Run:
    """Start a run on the definition's first step for one notification."""
    started = create_initial_runs(
        conn, tenant_id, [NewRun(notification_id, recipient_id, definition)]
    )
    return get_run(conn, started[notification_id])


def get_current_step(conn: Conn, run: Run) -> StepRow:
    step = definitions.step(conn, run.current_step_id)
    if step is None:
        raise NotFound(f"step {run.current_step_id} of run {run.id} not found")
    return step


def fetch_step_by_key(conn: Conn, definition_id: uuid.UUID, step_key: str) -> StepRow | None:
    return definitions.step_by_key(conn, definition_id, step_key)


def active_step_linkage(conn: Conn, run_id: uuid.UUID) -> StepLinkage:
    """Which run, step and channel the run's next delivery belongs to."""
    run = get_run(conn, run_id)
    step = get_current_step(conn, run)
    return StepLinkage(run.id, step.id, step.channel)
