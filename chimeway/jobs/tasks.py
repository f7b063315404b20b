"""Chimeway's Procrastinate tasks, bound to one :class:`~chimeway.app.Chimeway`.

A Blueprint is built per Chimeway instance (Procrastinate binds a blueprint's tasks to the
App they are added to). Tasks are sync: they run in the worker's threads and use the
Chimeway's connection pool. Each is idempotent: Procrastinate finishes a job in a separate
transaction, so a crash can run one twice.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import procrastinate

from chimeway import dispatch, progression
from chimeway.jobs.deferrer import QUEUES

if TYPE_CHECKING:
    from chimeway.app import Chimeway

# Infrastructure errors (database gone mid-task) are retried by Procrastinate; provider
# failures are not errors here, they are recorded attempts with their own retry ladder.
INFRA_RETRY = procrastinate.RetryStrategy(max_attempts=10, exponential_wait=2)


def build_blueprint(cw: Chimeway) -> procrastinate.Blueprint:
    blueprint = procrastinate.Blueprint()

    @blueprint.task(name="deliver", queue=QUEUES["deliver"], retry=INFRA_RETRY)
    def deliver(delivery_id: str) -> str:
        return dispatch.dispatch(cw, uuid.UUID(delivery_id)).action

    @blueprint.task(name="progress", queue=QUEUES["progress"], retry=INFRA_RETRY)
    def progress(run_id: str) -> str:
        result = progression.progress_run(cw, uuid.UUID(run_id))
        return type(result).__name__

    return blueprint
