"""Workflow runs and their transitions: the run state machine (the seeds' runs, design §4, §6).

Every run state change goes through :func:`update_runs`, guarded by :data:`ALLOWED`, and is
explained by the transitions it appends in the same statement. Reads for operators are
tenant-scoped: another tenant's run is reported exactly like a missing one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.errors import InvalidArgument, InvalidTransition, NotFound
from chimeway.results import RunExplanation, Transition
from chimeway.storable import preview
from chimeway.store.definitions import Definition
from chimeway.types import RunState

R = RunState

#: Which run state may follow which. ``active -> active`` moves the cursor to a later step;
#: ``waiting -> stopped`` is an operator's cancel (``cw.cancel_run``) during a wait.
ALLOWED: dict[RunState, frozenset[RunState]] = {
    R.ACTIVE: frozenset({R.ACTIVE, R.WAITING, R.COMPLETED, R.STOPPED, R.FAILED}),
    R.WAITING: frozenset({R.ACTIVE, R.STOPPED}),
    R.COMPLETED: frozenset(),
    R.STOPPED: frozenset(),
    R.FAILED: frozenset(),
}


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
class _Started:
    id: uuid.UUID
    notification_id: uuid.UUID


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
    with conn.cursor(row_factory=db.dataclass_row(_Started)) as cur:
        rows = cur.execute(
            db.query("run_insert_batch"),
            {
                "tenant_id": tenant_id,
                "definition_ids": [n.definition.id for n in new],
                "notification_ids": [n.notification_id for n in new],
                "recipient_ids": [n.recipient_id for n in new],
                "step_ids": [n.definition.first_step.id for n in new],
            },
        ).fetchall()
    return {row.notification_id: row.id for row in rows}


def get(conn: Conn, run_id: uuid.UUID) -> Run:
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


@dataclass(frozen=True)
class Record:
    """The transition to append with a run's move (see :func:`update_run`)."""

    reason: str
    context: dict[str, Any] | None = None
    step_id: uuid.UUID | None = None
    delivery_id: uuid.UUID | None = None
    #: The state this transition leaves, when not the one the move starts from: the second
    #: half of a move made of two (an elapsed wait's advance, ``active -> active``).
    from_state: RunState | None = None


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
                "t_from_states": [
                    None if r.from_state is None else str(r.from_state) for _, r in records
                ],
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


# -- sweeps and signal routing -------------------------------------------------------------


@dataclass(frozen=True)
class _Fired(Run):
    fired_at: dt.datetime


def fire_due(
    conn: Conn,
    now: dt.datetime | None,
    limit: int,
    skip: Sequence[uuid.UUID] = (),
    *,
    timer_lock: str,
) -> tuple[list[Run], dt.datetime | None]:
    """Waiting runs whose wait is due (on ``now``, else the database's clock), locked with
    SKIP LOCKED so that sweepers share, oldest due first (``skip`` leaves some out); in the
    same statement, their timer jobs not started yet (queueing lock ``timer_lock`` + run id)
    are deleted. With the clock the due times were read on (``now``, else the database's;
    ``None`` when nothing was due)."""
    with conn.cursor(row_factory=db.dataclass_row(_Fired)) as cur:
        rows = cur.execute(
            db.query("runs_due_fire"),
            {"now": now, "limit": limit, "skip": list(skip), "timer_lock": timer_lock},
        ).fetchall()
    return list(rows), rows[0].fired_at if rows else None


@dataclass(frozen=True)
class Due:
    id: uuid.UUID
    suspended_until: dt.datetime


def to_arm(conn: Conn, horizon: dt.timedelta, limit: int) -> list[Due]:
    """Waits due within ``horizon`` whose timer job is not queued."""
    with conn.cursor(row_factory=db.dataclass_row(Due)) as cur:
        return cur.execute(db.query("runs_to_arm"), {"horizon": horizon, "limit": limit}).fetchall()


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
    if state is not None and (
        not isinstance(state, str) or state not in {s.value for s in RunState}
    ):
        raise InvalidArgument(
            f"unknown run state {preview(state)}; expected one of "
            f"{', '.join(s.value for s in RunState)}"
        )
    with conn.cursor(row_factory=db.dataclass_row(RunExplanation)) as cur:
        return cur.execute(
            db.query("runs_list"),
            {"tenant_id": tenant_id, "state": state, "workflow_key": workflow_key, "limit": limit},
        ).fetchall()


def delivery_ids(conn: Conn, tenant_id: str, execution_id: uuid.UUID) -> list[uuid.UUID]:
    """The ids of a run's deliveries, in step order; NotFound across tenants."""
    explain(conn, tenant_id, execution_id)
    rows = conn.execute(
        db.query("run_delivery_ids"), {"run_id": execution_id, "tenant_id": tenant_id}
    ).fetchall()
    return [row[0] for row in rows]


@dataclass(frozen=True)
class DeliveryDecision:
    """A run transition that names a delivery (its evidence, or the decision it led to)."""

    id: int
    reason: str
    from_state: RunState | None
    to_state: RunState
    context: dict[str, Any]
    created_at: dt.datetime


def transitions_for_delivery(
    conn: Conn, tenant_id: str, delivery_id: uuid.UUID
) -> list[DeliveryDecision]:
    with conn.cursor(row_factory=db.dataclass_row(DeliveryDecision)) as cur:
        return cur.execute(
            db.query("transitions_for_delivery"),
            {"delivery_id": delivery_id, "tenant_id": tenant_id},
        ).fetchall()
