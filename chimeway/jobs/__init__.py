"""Chimeway's Procrastinate tasks and the sync deferrer that schedules them.

Jobs carry ids only. Every defer goes through :class:`Deferrer` on the caller's connection,
inside the caller's transaction (design §1.2), so a state change and the job that must follow
it commit or roll back together.
"""

from chimeway.jobs.deferrer import NAMESPACE, QUEUES, TASKS, Deferrer
from chimeway.jobs.tasks import build_blueprint

__all__ = ["NAMESPACE", "QUEUES", "TASKS", "Deferrer", "build_blueprint"]
