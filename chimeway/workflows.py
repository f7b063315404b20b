"""Durable workflow definitions, runs and transitions (the seeds' ``Chimeway.Workflows``).

Every function takes the connection first so callers join their transaction. Definitions
are immutable per (key, version); runs stay pinned to the definition they started on; every
run state change goes through :func:`update_runs`, guarded by :data:`ALLOWED`, and is
explained by the transitions it appends in the same statement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.dsl import Workflow
from chimeway.errors import InvalidArgument, InvalidTransition, NotFound, WorkflowVersionConflict
from chimeway.results import RunExplanation, Transition
from chimeway.types import RunState

Conn = psycopg.Connection[Any]
R = RunState

#: Which run state may follow which. ``active -> active`` moves the cursor to a later step.
ALLOWED: dict[RunState, frozenset[RunState]] = {
    R.ACTIVE: frozenset({R.ACTIVE, R.WAITING, R.COMPLETED, R.STOPPED, R.FAILED}),
    R.WAITING: frozenset({R.ACTIVE}),
    R.COMPLETED: frozenset(),
    R.STOPPED: frozenset(),
    R.FAILED: frozenset(),
}


@dataclass(frozen=True)
class DefinitionRow:
    id: uuid.UUID
    workflow_key: str
    workflow_version: int
    notification_key: str
    checksum: str
    created_at: dt.datetime


@dataclass(frozen=True)
class StepRow:
    id: uuid.UUID
    definition_id: uuid.UUID
    step_key: str
    step_order: int
    channel: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Definition:
    row: DefinitionRow
    steps: list[StepRow]

    @property
    def id(self) -> uuid.UUID:
        return self.row.id

    @property
    def first_step(self) -> StepRow:
        return self.steps[0]

    def step(self, key: str) -> StepRow | None:
        return next((s for s in self.steps if s.step_key == key), None)

    def workflow(self) -> Workflow:
        return Workflow.from_rows(
            self.row.workflow_key,
            self.row.workflow_version,
            [
                {
                    "step_key": s.step_key,
                    "step_order": s.step_order,
                    "channel": s.channel,
                    "config": s.config,
                }
                for s in self.steps
            ],
        )


@dataclass(frozen=True)
class Run:
    id: uuid.UUID
    tenant_id: str
    definition_id: uuid.UUID
    notification_id: uuid.UUID
    recipient_id: str
    current_step_id: uuid.UUID
    state: RunState
    status_reason: str
    status_context: dict[str, Any]
    suspended_until: dt.datetime | None
    pending_signals: list[str]
    terminal_reason: str | None
    started_at: dt.datetime
    last_transition_at: dt.datetime


@dataclass(frozen=True)
class StepLinkage:
    workflow_run_id: uuid.UUID
    workflow_step_id: uuid.UUID
    channel: str


# -- definitions ---------------------------------------------------------------------------


def fetch_definition(conn: Conn, workflow_key: str, workflow_version: int) -> Definition | None:
    with conn.cursor(row_factory=db.dataclass_row(DefinitionRow)) as cur:
        row = cur.execute(
            db.query("definition_get"),
            {"workflow_key": workflow_key, "workflow_version": workflow_version},
        ).fetchone()
    return None if row is None else Definition(row, definition_steps(conn, row.id))


def _definition_by_id(conn: Conn, definition_id: uuid.UUID) -> Definition:
    with conn.cursor(row_factory=db.dataclass_row(DefinitionRow)) as cur:
        row = cur.execute(db.query("definition_get_by_id"), {"id": definition_id}).fetchone()
    if row is None:
        raise NotFound(f"workflow definition {definition_id} not found")
    return Definition(row, definition_steps(conn, row.id))


def definition_steps(conn: Conn, definition_id: uuid.UUID) -> list[StepRow]:
    """A definition's steps in order."""
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        return cur.execute(
            db.query("steps_for_definition"), {"definition_id": definition_id}
        ).fetchall()


def upsert_definition(conn: Conn, notification_key: str, workflow: Workflow) -> Definition:
    """Store the definition, or return the stored one if it is the same.

    A different definition under the same (key, version) raises
    :class:`WorkflowVersionConflict`: bump the version to change a workflow.
    """
    return _upsert(conn, notification_key, workflow)[0]


def _upsert(conn: Conn, notification_key: str, workflow: Workflow) -> tuple[Definition, bool]:
    """The definition, and whether this transaction inserted it (not yet committed)."""
    checksum = workflow.checksum()
    with conn.cursor(row_factory=db.dataclass_row(DefinitionRow)) as cur:
        row = cur.execute(
            db.query("definition_insert"),
            {
                "workflow_key": workflow.key,
                "workflow_version": workflow.version,
                "notification_key": notification_key,
                "checksum": checksum,
            },
        ).fetchone()
    if row is None:
        existing = fetch_definition(conn, workflow.key, workflow.version)
        if existing is None:  # the conflicting row is invisible to this transaction's snapshot
            raise WorkflowVersionConflict(
                f"workflow {workflow.key!r} version {workflow.version} was stored concurrently "
                "and is not visible to this transaction; retry it"
            )
        if existing.row.checksum != checksum:
            raise WorkflowVersionConflict(
                f"workflow {workflow.key!r} version {workflow.version} is already stored with "
                "different steps; declare a new version to change it"
            )
        return existing, False
    rows = workflow.step_rows()
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        steps = cur.execute(
            db.query("step_insert_batch"),
            {
                "definition_id": row.id,
                "step_keys": [r["step_key"] for r in rows],
                "step_orders": [r["step_order"] for r in rows],
                "channels": [r["channel"] for r in rows],
                "configs": [Jsonb(r["config"]) for r in rows],
            },
        ).fetchall()
    return Definition(row, sorted(steps, key=lambda s: s.step_order)), True


def ensure_definition(
    conn: Conn,
    notification_key: str,
    workflow: Workflow,
    cache: dict[tuple[str, int, str], Definition] | None = None,
) -> Definition:
    """:func:`upsert_definition`, remembered in ``cache`` (per app) once it is known to be
    committed: one this transaction inserted could still roll back, so it is not cached."""
    key = (workflow.key, workflow.version, workflow.checksum())
    if cache is not None and key in cache:
        return cache[key]
    definition, inserted = _upsert(conn, notification_key, workflow)
    if cache is not None and not inserted:
        cache[key] = definition
    return definition


def persisted_workflow(conn: Conn, run_id: uuid.UUID) -> Workflow:
    """The workflow a run is pinned to, rebuilt from its stored definition."""
    return _definition_by_id(conn, get_run(conn, run_id).definition_id).workflow()


def definition_of(conn: Conn, run: Run) -> Definition:
    return _definition_by_id(conn, run.definition_id)


# -- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewRun:
    notification_id: uuid.UUID
    recipient_id: str
    definition: Definition


def create_initial_runs(
    conn: Conn, tenant_id: str, new: Sequence[NewRun]
) -> dict[uuid.UUID, uuid.UUID]:
    """Start one run per notification on its definition's first step; notification -> run."""
    if not new:
        return {}
    rows = conn.execute(
        db.query("run_insert_batch"),
        {
            "tenant_id": tenant_id,
            "definition_ids": [n.definition.id for n in new],
            "notification_ids": [n.notification_id for n in new],
            "recipient_ids": [n.recipient_id for n in new],
            "step_ids": [n.definition.first_step.id for n in new],
        },
    ).fetchall()
    return {notification_id: run_id for run_id, notification_id in rows}


def create_initial_run(
    conn: Conn,
    notification_id: uuid.UUID,
    definition: Definition,
    tenant_id: str,
    recipient_id: str,
) -> Run:
    runs = create_initial_runs(conn, tenant_id, [NewRun(notification_id, recipient_id, definition)])
    return get_run(conn, runs[notification_id])


def get_run(conn: Conn, run_id: uuid.UUID) -> Run:
    with conn.cursor(row_factory=db.dataclass_row(Run)) as cur:
        row = cur.execute(db.query("run_get"), {"id": run_id}).fetchone()
    if row is None:
        raise NotFound(f"workflow run {run_id} not found")
    return row


def lock_run(conn: Conn, run_id: uuid.UUID) -> Run | None:
    """Lock the run ``FOR UPDATE`` in the caller's transaction; ``None`` if it is gone."""
    return lock_runs(conn, [run_id]).get(run_id)


def lock_runs(conn: Conn, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Run]:
    """Lock the runs ``FOR UPDATE`` in id order (no deadlock between two callers); missing
    ones are left out."""
    with conn.cursor(row_factory=db.dataclass_row(Run)) as cur:
        rows = cur.execute(db.query("run_lock"), {"ids": list(run_ids)}).fetchall()
    return {row.id: row for row in rows}


def get_current_step(conn: Conn, run: Run) -> StepRow:
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        row = cur.execute(db.query("step_get"), {"id": run.current_step_id}).fetchone()
    if row is None:
        raise NotFound(f"step {run.current_step_id} of run {run.id} not found")
    return row


def fetch_step_by_key(conn: Conn, definition_id: uuid.UUID, step_key: str) -> StepRow | None:
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        return cur.execute(
            db.query("step_by_key"), {"definition_id": definition_id, "step_key": step_key}
        ).fetchone()


def active_step_linkage(conn: Conn, run_id: uuid.UUID) -> StepLinkage:
    """Which run, step and channel the run's next delivery belongs to."""
    run = get_run(conn, run_id)
    step = get_current_step(conn, run)
    return StepLinkage(run.id, step.id, step.channel)


@dataclass(frozen=True)
class Record:
    """The transition to append with a run's move (see :func:`update_run`)."""

    reason: str
    context: dict[str, Any] | None = None
    step_id: uuid.UUID | None = None
    delivery_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Move:
    """One run's move for :func:`update_runs`: from ``run`` (as last read, under its lock)
    to ``state``, explained by the transitions in ``records`` (from the run's state to
    ``state``). Fields not given (suspension, pending signals, terminal reason) are cleared;
    the step stays unless ``current_step_id`` is given."""

    run: Run
    state: RunState
    status_reason: str
    status_context: dict[str, Any] | None = None
    current_step_id: uuid.UUID | None = None
    suspended_until: dt.datetime | None = None
    pending_signals: Sequence[str] = ()
    terminal_reason: str | None = None
    records: Sequence[Record] = ()


def update_runs(conn: Conn, moves: Sequence[Move]) -> list[Run]:
    """Apply ``moves`` in one statement; the one guarded run move. Each is checked against
    :data:`ALLOWED` and applied only if the run is still in the state it was read in; the
    transitions that explain it are appended in the same statement. Returns the moved runs
    in the order given."""
    if not moves:
        return []
    for move in moves:
        if move.state not in ALLOWED[RunState(move.run.state)]:
            raise InvalidTransition(
                f"workflow run {move.run.id} cannot move from {move.run.state} to {move.state}"
            )
    records = [(n, r) for n, m in enumerate(moves, start=1) for r in m.records]
    with conn.cursor(row_factory=db.dataclass_row(Run)) as cur:
        rows = cur.execute(
            db.query("runs_update"),
            {
                "ids": [m.run.id for m in moves],
                "from_states": [str(m.run.state) for m in moves],
                "to_states": [str(m.state) for m in moves],
                "status_reasons": [m.status_reason for m in moves],
                "status_contexts": [Jsonb(m.status_context or {}) for m in moves],
                "current_step_ids": [m.current_step_id or m.run.current_step_id for m in moves],
                "suspended_until": [m.suspended_until for m in moves],
                "pending_signals": [Jsonb(list(m.pending_signals)) for m in moves],
                "terminal_reasons": [m.terminal_reason for m in moves],
                "t_moves": [n for n, _ in records],
                "t_reasons": [r.reason for _, r in records],
                "t_contexts": [Jsonb(r.context or {}) for _, r in records],
                "t_step_ids": [r.step_id for _, r in records],
                "t_delivery_ids": [r.delivery_id for _, r in records],
            },
        ).fetchall()
    if len(rows) != len(moves):
        moved = {row.id for row in rows}
        stale = [m.run for m in moves if m.run.id not in moved]
        raise InvalidTransition(
            f"workflow run {stale[0].id} is no longer {stale[0].state}; lock it before updating"
            + (f" (and {len(stale) - 1} more)" if len(stale) > 1 else "")
        )
    return rows


def update_run(conn: Conn, run: Run, *, state: RunState, status_reason: str, **fields: Any) -> Run:
    """Move one run: :func:`update_runs` with one :class:`Move`."""
    return update_runs(conn, [Move(run, state, status_reason, **fields)])[0]


def append_transition(
    conn: Conn,
    run_id: uuid.UUID,
    *,
    to_state: RunState,
    reason: str,
    from_state: RunState | None = None,
    step_id: uuid.UUID | None = None,
    delivery_id: uuid.UUID | None = None,
    context: dict[str, Any] | None = None,
) -> Transition:
    with conn.cursor(row_factory=db.dataclass_row(Transition)) as cur:
        row = cur.execute(
            db.query("transition_append"),
            {
                "run_id": run_id,
                "step_id": step_id,
                "delivery_id": delivery_id,
                "from_state": from_state,
                "to_state": to_state,
                "reason": reason,
                "context": Jsonb(context or {}),
            },
        ).fetchone()
    assert row is not None
    return row


# -- operator reads (tenant-scoped) ---------------------------------------------------------


def explain(conn: Conn, tenant_id: str, execution_id: uuid.UUID) -> RunExplanation:
    """The run's state for ``tenant_id``; another tenant's run is NotFound, like a missing one."""
    with conn.cursor(row_factory=db.dataclass_row(RunExplanation)) as cur:
        row = cur.execute(
            db.query("run_explain"), {"id": execution_id, "tenant_id": tenant_id}
        ).fetchone()
    if row is None:
        raise NotFound(f"workflow run {execution_id} not found")
    return row


def list_traces(
    conn: Conn, tenant_id: str, execution_id: uuid.UUID, limit: int | None = None
) -> list[Transition]:
    """The run's transitions, oldest first (at most ``limit``); NotFound across tenants."""
    explain(conn, tenant_id, execution_id)  # NotFound for a missing or foreign run
    with conn.cursor(row_factory=db.dataclass_row(Transition)) as cur:
        return cur.execute(
            db.query("transitions_for_run"),
            {"run_id": execution_id, "tenant_id": tenant_id, "limit": limit},
        ).fetchall()


def list_runs(
    conn: Conn,
    tenant_id: str,
    *,
    state: RunState | str | None = None,
    workflow_key: str | None = None,
    limit: int = 50,
) -> list[RunExplanation]:
    """A tenant's runs, newest first."""
    if state is not None and state not in {s.value for s in RunState}:
        raise InvalidArgument(
            f"unknown run state {state!r}; expected one of {', '.join(s.value for s in RunState)}"
        )
    with conn.cursor(row_factory=db.dataclass_row(RunExplanation)) as cur:
        return cur.execute(
            db.query("runs_list"),
            {"tenant_id": tenant_id, "state": state, "workflow_key": workflow_key, "limit": limit},
        ).fetchall()


def run_deliveries(conn: Conn, tenant_id: str, execution_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of a run's deliveries, in step order; NotFound across tenants."""
    explain(conn, tenant_id, execution_id)
    rows = conn.execute(
        db.query("run_delivery_ids"), {"run_id": execution_id, "tenant_id": tenant_id}
    ).fetchall()
    return [row[0] for row in rows]
