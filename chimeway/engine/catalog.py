"""Workflow definitions and their steps, read once per process: definitions never change."""

from __future__ import annotations

import threading
import uuid

from chimeway.db import Conn
from chimeway.dsl import Workflow
from chimeway.errors import NotFound
from chimeway.store import definitions
from chimeway.store.definitions import Definition, StepRow
from chimeway.store.runs import Run


class Catalog:
    """A per-engine cache of stored definitions and steps. Only what is known to be
    committed is cached: a definition this transaction inserted could still roll back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._definitions: dict[tuple[str, int, str], Definition] = {}
        self._steps: dict[uuid.UUID, list[StepRow]] = {}
        self._step_by_id: dict[uuid.UUID, StepRow] = {}

    def cached(self, workflow: Workflow) -> Definition | None:
        """The stored definition of ``workflow`` if it is known to be committed."""
        return self._definitions.get((workflow.key, workflow.version, workflow.checksum()))

    def ensure_definition(
        self, conn: Conn, notification_key: str, workflow: Workflow
    ) -> Definition:
        """The stored definition of ``workflow`` (storing it if new; a different one under
        the same key and version raises :class:`~chimeway.WorkflowVersionConflict`)."""
        key = (workflow.key, workflow.version, workflow.checksum())
        found = self._definitions.get(key)
        if found is not None:
            return found
        definition, committed = definitions.upsert(conn, notification_key, workflow)
        if committed:
            with self._lock:
                self._definitions[key] = definition
        return definition

    def steps(self, conn: Conn, definition_id: uuid.UUID) -> list[StepRow]:
        """A definition's steps in order (read from ``conn`` the first time)."""
        found = self._steps.get(definition_id)
        if found is None:
            found = definitions.steps(conn, definition_id)
            if found:
                with self._lock:
                    self._steps[definition_id] = found
                    self._step_by_id.update((s.id, s) for s in found)
        return found

    def current_step(self, conn: Conn, run: Run) -> StepRow:
        step = self._step_by_id.get(run.current_step_id)
        if step is None and self.steps(conn, run.definition_id):  # now cached
            step = self._step_by_id.get(run.current_step_id)
        if step is None:
            step = definitions.step(conn, run.current_step_id)
        if step is None:
            raise NotFound(f"step {run.current_step_id} of run {run.id} not found")
        return step

    def step_by_key(self, conn: Conn, definition_id: uuid.UUID, step_key: str) -> StepRow | None:
        return next((s for s in self.steps(conn, definition_id) if s.step_key == step_key), None)
