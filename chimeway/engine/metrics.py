"""The operating figures ``GET /metrics`` exposes and the check behind ``GET /healthz``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from chimeway.engine.context import Engine
from chimeway.store import metrics
from chimeway.store.metrics import Count, Latency, Queue

#: Send latency is measured over the attempts finished this recently.
LATENCY_WINDOW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Snapshot:
    """One scrape: deliveries by channel and status, attempts by outcome, recent send
    latency by channel, jobs by queue, webhook ingress by state."""

    deliveries: list[Count]
    attempts: list[Count]
    latency: list[Latency]
    queues: list[Queue]
    ingress: list[Count]
    latency_window: dt.timedelta = LATENCY_WINDOW


def snapshot(engine: Engine, window: dt.timedelta = LATENCY_WINDOW) -> Snapshot:
    """Read every figure in one read-only transaction."""
    with engine.transaction() as conn:
        return Snapshot(
            deliveries=metrics.deliveries(conn),
            attempts=metrics.attempts(conn),
            latency=metrics.send_latency(conn, window),
            queues=metrics.queues(conn),
            ingress=metrics.ingress(conn),
            latency_window=window,
        )


def check_database(engine: Engine) -> None:
    """Raise :class:`~chimeway.DatabaseUnavailable` unless the database answers."""
    with engine.transaction() as conn:
        metrics.ping(conn)
