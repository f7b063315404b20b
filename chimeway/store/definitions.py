"""Workflow definitions and their steps: immutable per (key, version) (design §4).

A definition is stored once, with its steps, and never changes; a different one under the
same key and version is a :class:`~chimeway.errors.WorkflowVersionConflict` (bump the
version to change a workflow). Runs stay pinned to the definition they started on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.dsl import Workflow
from chimeway.errors import NotFound, WorkflowVersionConflict


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
class _Found(DefinitionRow):
    committed: bool  # whether the transaction that stored it has committed


def fetch(conn: Conn, workflow_key: str, workflow_version: int) -> Definition | None:
    found = _fetch(conn, workflow_key, workflow_version)
    return None if found is None else found[0]


def _fetch(conn: Conn, workflow_key: str, workflow_version: int) -> tuple[Definition, bool] | None:
    with conn.cursor(row_factory=db.dataclass_row(_Found)) as cur:
        found = cur.execute(
            db.query("definition_get"),
            {"workflow_key": workflow_key, "workflow_version": workflow_version},
        ).fetchone()
    if found is None:
        return None
    row = DefinitionRow(
        **{f.name: getattr(found, f.name) for f in dataclasses.fields(DefinitionRow)}
    )
    return Definition(row, steps(conn, row.id)), found.committed


def by_id(conn: Conn, definition_id: uuid.UUID) -> Definition:
    with conn.cursor(row_factory=db.dataclass_row(DefinitionRow)) as cur:
        row = cur.execute(db.query("definition_get_by_id"), {"id": definition_id}).fetchone()
    if row is None:
        raise NotFound(f"workflow definition {definition_id} not found")
    return Definition(row, steps(conn, row.id))


def steps(conn: Conn, definition_id: uuid.UUID) -> list[StepRow]:
    """A definition's steps in order."""
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        return cur.execute(
            db.query("steps_for_definition"), {"definition_id": definition_id}
        ).fetchall()


def upsert(conn: Conn, notification_key: str, workflow: Workflow) -> tuple[Definition, bool]:
    """Store the definition, or find the stored one if it is the same; and whether it is
    known to be committed (not when this transaction, or one of its savepoints, stored it:
    that can still roll back). A different definition under the same (key, version) raises
    :class:`WorkflowVersionConflict`."""
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
        found = _fetch(conn, workflow.key, workflow.version)
        if found is None:  # the conflicting row is invisible to this transaction's snapshot
            raise WorkflowVersionConflict(
                f"workflow {workflow.key!r} version {workflow.version} was stored concurrently "
                "and is not visible to this transaction; retry it"
            )
        existing, committed = found
        if existing.row.checksum != checksum:
            raise WorkflowVersionConflict(
                f"workflow {workflow.key!r} version {workflow.version} is already stored with "
                "different steps; declare a new version to change it"
            )
        return existing, committed
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
    return Definition(row, sorted(steps, key=lambda s: s.step_order)), False


def step(conn: Conn, step_id: uuid.UUID) -> StepRow | None:
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        return cur.execute(db.query("step_get"), {"id": step_id}).fetchone()


def step_by_key(conn: Conn, definition_id: uuid.UUID, step_key: str) -> StepRow | None:
    with conn.cursor(row_factory=db.dataclass_row(StepRow)) as cur:
        return cur.execute(
            db.query("step_by_key"), {"definition_id": definition_id, "step_key": step_key}
        ).fetchone()
