"""Chimeway's Procrastinate tasks (a Blueprint over an engine) and their queues.

Jobs carry ids only. Every defer goes through :class:`~chimeway.store.jobs.Deferrer` on the
caller's connection, inside the caller's transaction (design §1.2), so a state change and the
job that must follow it commit or roll back together.
"""

from chimeway.jobs.tasks import build_blueprint
from chimeway.store.jobs import NAMESPACE, QUEUES, TASKS

__all__ = ["NAMESPACE", "QUEUES", "TASKS", "build_blueprint"]
