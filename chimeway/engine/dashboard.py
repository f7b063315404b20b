"""The operator dashboard's reads (``chimeway serve``'s ``/dashboard``), each in one read
transaction and scoped to one tenant: another tenant's run or delivery is reported exactly
like a missing one (NotFound), as in :mod:`chimeway.engine.explain`, whose explanations the
pages show. The job queues are shown as counts per queue: jobs carry ids only."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from chimeway.engine import explain
from chimeway.engine.context import Engine
from chimeway.errors import InvalidArgument, NotFound
from chimeway.inputs import identifier
from chimeway.results import DeliveryExplanation, RunExplanation, Transition
from chimeway.store import dashboard, metrics
from chimeway.store.dashboard import DeliveryRow, JobAge, StateCount
from chimeway.store.metrics import Queue
from chimeway.types import DeliveryStatus, RunState

#: The most rows a list page shows.
PAGE = 200


@dataclass(frozen=True)
class Overview:
    """A tenant at a glance, and the queues."""

    tenant_id: str
    run_states: list[StateCount]
    delivery_statuses: list[StateCount]
    queues: list[Queue]
    job_ages: list[JobAge]
    #: Open deliveries: those held in ``dispatched`` past ``stuck_after`` first, then the
    #: oldest others.
    stuck: list[DeliveryRow]
    stuck_after: dt.timedelta


@dataclass(frozen=True)
class RunPage:
    run: RunExplanation
    trace: list[Transition]
    delivery_ids: list[uuid.UUID]


def overview(engine: Engine, tenant_id: str, limit: int = 20) -> Overview:
    tenant = _tenant(tenant_id)
    stuck_after = engine.settings.stuck_after
    with engine.transaction() as conn:
        return Overview(
            tenant_id=tenant,
            run_states=dashboard.run_states(conn, tenant),
            delivery_statuses=dashboard.delivery_statuses(conn, tenant),
            queues=metrics.queues(conn),
            job_ages=dashboard.job_ages(conn, engine.settings.maintenance.stalled_after),
            stuck=dashboard.stuck_deliveries(conn, tenant, stuck_after, limit),
            stuck_after=stuck_after,
        )


def deliveries(
    engine: Engine,
    tenant_id: str,
    *,
    status: str | None = None,
    channel: str | None = None,
    recipient_id: str | None = None,
    limit: int = PAGE,
) -> list[DeliveryRow]:
    """A tenant's deliveries, newest first, filtered by status, channel and recipient."""
    tenant = _tenant(tenant_id)
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise InvalidArgument(f"status must be one of {', '.join(s.value for s in DeliveryStatus)}")
    if channel is not None:
        identifier("channel", channel, InvalidArgument)
    if recipient_id is not None:
        identifier("recipient_id", recipient_id, InvalidArgument)
    with engine.transaction() as conn:
        return dashboard.deliveries(
            conn,
            tenant,
            status=status,
            channel=channel,
            recipient_id=recipient_id,
            limit=limit,
        )


def runs(
    engine: Engine,
    tenant_id: str,
    *,
    state: str | None = None,
    workflow_key: str | None = None,
    limit: int = PAGE,
) -> list[RunExplanation]:
    """A tenant's runs, newest first, filtered by state and workflow."""
    if state is not None and state not in {s.value for s in RunState}:
        raise InvalidArgument(f"state must be one of {', '.join(s.value for s in RunState)}")
    with engine.transaction() as conn:
        return explain.list_runs(
            conn, tenant_id, state=state, workflow_key=workflow_key, limit=limit
        )


def run(engine: Engine, tenant_id: str, run_id: str) -> RunPage:
    """A run's explanation, its whole trace and its deliveries; NotFound for another
    tenant's run."""
    found = _uuid(run_id, "run")
    with engine.transaction() as conn:
        return RunPage(
            run=explain.explain_run(conn, tenant_id, found),
            trace=explain.list_traces(conn, tenant_id, found),
            delivery_ids=explain.run_delivery_ids(conn, tenant_id, found),
        )


def delivery(engine: Engine, tenant_id: str, delivery_id: str) -> DeliveryExplanation:
    """A delivery's whole story; NotFound for another tenant's delivery."""
    found = _uuid(delivery_id, "delivery")
    with engine.transaction() as conn:
        return explain.explain_delivery(conn, tenant_id, found)


def _tenant(value: str) -> str:
    return identifier("tenant_id", value, InvalidArgument)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found") from None
