"""A trigger that plans one delivery no policy can apply to, written in one statement: the
common case of an app notifying one user. Every other trigger writes through the per-table
batches of :mod:`chimeway.store.events`, :mod:`~chimeway.store.runs` and
:mod:`~chimeway.store.deliveries`, planned by :mod:`chimeway.engine.planning`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.db import Conn
from chimeway.store import jobs
from chimeway.store.definitions import Definition


@dataclass(frozen=True)
class Lone:
    """A trigger's one delivery, as planning plans it when no policy can apply to it and
    its channel needs no address the recipient lacks: sent now, with the facts policy
    decides on (the run of its workflow: ``definition``, ``None`` without one)."""

    definition: Definition | None
    channel: str
    max_attempts: int
    workflow_key: str
    critical: bool
    bypass_quiet_hours: bool
    #: The profile field the channel's adapter sends to (``email``, ``phone``), if any.
    needs: str | None


@dataclass(frozen=True)
class One:
    """The event, its one notification (with the recipient's inline profile fields, if
    any), the run of its workflow (``definition``: ``None`` without one) and the one
    delivery it plans, with the facts policy decides it on."""

    tenant_id: str
    notification_key: str
    notification_version: int
    idempotency_key: str
    correlation_id: str | None
    payload: dict[str, Any]
    traceparent: str | None
    recipient_id: str
    recipient_type: str
    #: The recipient's inline profile fields (``None``: none given).
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    data: dict[str, Any] | None
    category: str | None
    assigns: dict[str, Any]
    contents: dict[str, dict[str, Any]]
    #: Its delivery, as planning plans it (:func:`chimeway.engine.planning.lone`).
    delivery: Lone

    @property
    def profile(self) -> bool:
        return bool(self.email or self.phone or self.locale or self.timezone or self.data)


@dataclass(frozen=True)
class Written:
    """``free`` false: some policy can apply (or the address is missing) and nothing was
    written. ``event_id`` ``None`` (with ``free``): the idempotency key exists already."""

    free: bool
    event_id: uuid.UUID | None
    notification_id: uuid.UUID | None
    delivery_id: uuid.UUID | None
    run_id: uuid.UUID | None
    jobs: int


def write_one(conn: Conn, one: One) -> Written:
    """Write ``one`` in one statement (``trigger_write_one``) if no policy can apply to its
    delivery; else write nothing.

    The statement's guard (``free``) is ``chimeway_policy_scope`` (migrations 0018 and 0021,
    inlined: no opt-out rule, quiet hours or cap can apply; opt-ins cannot change a verdict)
    and, when the channel's adapter needs an address (``needs``), the recipient has it,
    given inline now or in the directory.
    When it fails nothing is written and ``free`` is false: the caller plans through
    :mod:`chimeway.engine.planning`. Otherwise it writes what ``event_insert``,
    ``recipients_upsert_inline`` (when the recipient carries profile fields),
    ``notification_insert_batch``, ``run_insert_batch`` (with a workflow),
    ``delivery_insert_batch`` (a delivery policy let through: pending, ready, with its
    ``planned`` history and no evidence) and ``jobs_defer_per_id`` (Procrastinate's own
    ``procrastinate_defer_jobs_v1``, queueing lock ``<DELIVER_LOCK><delivery id>``) write
    for one row. A repeated idempotency key (even a concurrent one) inserts nothing:
    ``free`` and no ``event_id``."""
    return read(send(conn, one))


def send(conn: Conn, one: One) -> psycopg.Cursor[Written]:
    """Send :func:`write_one`'s statement for ``one`` (in pipeline mode: queue it); the
    cursor's row, read by :func:`read`, comes when its results do."""
    cur = conn.cursor(row_factory=db.dataclass_row(Written))
    try:
        cur.execute(db.query("trigger_write_one", without=left_out(one)), _params(one))
    except BaseException:
        cur.close()
        raise
    return cur


def left_out(one: One) -> tuple[str, ...]:
    """The parts of the statement ``one`` does not need (``db.query``'s ``without``): the
    read of the recipient's address when its channel needs none (``address``), the upsert of
    its profile when it carries no profile field (``profile``), the run and its history
    without a workflow (``workflow``). Left in, each still costs its tables' locks and
    executor set-up on every trigger: the first two together about 7% of the server's CPU
    for a trigger that needs neither."""
    parts = []
    if one.delivery.needs is None:
        parts.append("address")
    if not one.profile:
        parts.append("profile")
    if one.delivery.definition is None:
        parts.append("workflow")
    return tuple(parts)


def read(cur: psycopg.Cursor[Written]) -> Written:
    """The row of :func:`send`'s statement (closing its cursor)."""
    with cur:
        row = cur.fetchone()
    assert row is not None  # the guard's row is always there
    return row


def _params(one: One) -> dict[str, Any]:
    d = one.delivery
    step = None if d.definition is None else d.definition.first_step
    return {
        "tenant_id": one.tenant_id,
        "notification_key": one.notification_key,
        "notification_version": one.notification_version,
        "idempotency_key": one.idempotency_key,
        "correlation_id": one.correlation_id,
        "payload": Jsonb(one.payload),
        "traceparent": one.traceparent,
        "recipient_id": one.recipient_id,
        "recipient_type": one.recipient_type,
        "profile": one.profile,
        "email": one.email,
        "phone": one.phone,
        "locale": one.locale,
        "timezone": one.timezone,
        "data": Jsonb(one.data or {}),
        "category": one.category,
        "assigns": Jsonb(one.assigns),
        "contents": Jsonb(one.contents),
        "definition_id": None if d.definition is None else d.definition.id,
        "step_id": None if step is None else step.id,
        "step_key": None if step is None else step.step_key,
        "channel": d.channel,
        "render_data": Jsonb(one.contents.get(d.channel, {})),
        "max_attempts": d.max_attempts,
        "workflow_key": d.workflow_key,
        "critical": d.critical,
        "bypass_quiet_hours": d.bypass_quiet_hours,
        "needs": d.needs,
        "queue": jobs.QUEUES["deliver"],
        "task": jobs.TASKS["deliver"],
        "lock_prefix": jobs.DELIVER_LOCK,
    }
