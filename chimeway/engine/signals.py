"""Signals: app events, provider feedback and inbox reads that resume waiting runs (design §7).

:func:`track_signal` writes the signal and, in the same statement, defers its
``route_signal`` job (its NOTIFY wakes a worker at commit); or, with ``route="now"``, routes
it in the same transaction, so the resumed run's next delivery is planned before the
commit and one job hop (the delivery's) remains. Routing resumes, in the caller's
transaction, the same tenant's waiting runs of the actor that listen for the event, and
progresses each: an ``OnSignal`` rule advances it, otherwise the cancelled wait completes it.

A ``route_signal`` job routes its own signal and takes along the other signals waiting
(oldest first, up to :data:`ROUTE_BATCH`, skipping those another job holds), all set-wise:
their runs are locked and moved in a few statements, and their own jobs, not started yet,
are deleted in the same transaction. A burst of signals costs a few transactions, not a
job each; a signal whose job already started is found routed and left alone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from chimeway import telemetry
from chimeway.db import Conn
from chimeway.engine import connections, logbook
from chimeway.engine.context import Engine
from chimeway.engine.progression import apply, decide
from chimeway.errors import InvalidSignal
from chimeway.inputs import identifier, json_object
from chimeway.redaction import redact
from chimeway.results import ProgressResult, Routed, SignalTracked
from chimeway.store import jobs, runs, signals
from chimeway.store.runs import Run
from chimeway.store.signals import Signal

logger = logging.getLogger(__name__)

Route = Literal["job", "now"]
#: How many signals one routing job routes at most.
ROUTE_BATCH = 200

MAX_EVENT_NAME = 200


def validate(
    tenant_id: Any, actor_id: Any, event_name: Any, payload: Any, idempotency_key: Any
) -> dict[str, Any]:
    """The signal's payload once every argument is known to be valid; else InvalidSignal."""
    identifier("tenant_id", tenant_id, InvalidSignal)
    identifier("actor_id", actor_id, InvalidSignal)
    identifier("event_name", event_name, InvalidSignal, max_chars=MAX_EVENT_NAME)
    if idempotency_key is not None:
        identifier("idempotency_key", idempotency_key, InvalidSignal)
    return {} if payload is None else json_object("payload", payload, InvalidSignal)


def track_signal(
    engine: Engine,
    tenant_id: str,
    actor_id: str,
    event_name: str,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    conn: Conn | None = None,
    route: Route = "job",
) -> SignalTracked:
    """Record a signal and defer its routing (``route="job"``), or route it at once
    (``route="now"``), in one transaction (the caller's, with ``conn``). A repeated
    ``idempotency_key`` (per tenant) is inert."""
    body = validate(tenant_id, actor_id, event_name, payload, idempotency_key)
    if route not in ("job", "now"):
        raise InvalidSignal(f"route must be 'job' or 'now', not {route!r}")
    stored = redact(body)
    telemetry.add("chimeway.signals", event_name=event_name)
    fields = {
        "tenant_id": tenant_id,
        "actor_id": actor_id,
        "event_name": event_name,
        "payload": stored,
        "idempotency_key": idempotency_key,
    }
    with telemetry.span("chimeway.signal", tenant_id=tenant_id, event_name=event_name, route=route):
        # The caller's open transaction: the statement and its savepoint in one round trip.
        sent = (
            connections.sent_together(conn, lambda c: signals.send_with_job(c, **fields))
            if route == "job" and conn is not None
            else None
        )
        if sent is not None:
            signal_id = signals.read_id(sent)
            if signal_id is None:
                with engine.transaction(conn) as tx:
                    return _duplicate(tx, tenant_id, idempotency_key)
            return _tracked(signal_id, tenant_id, event_name, None)
        with engine.transaction(conn) as tx:
            signal_id = (
                signals.read_id(signals.send_with_job(tx, **fields))
                if route == "job"
                else signals.insert(tx, **fields)
            )
            if signal_id is None:
                return _duplicate(tx, tenant_id, idempotency_key)
            routed = None
            if route == "now":
                signal = Signal(signal_id, tenant_id, actor_id, event_name, stored, None)
                routed = _route(engine, tx, [signal], callers=conn is not None)[0]
    return _tracked(signal_id, tenant_id, event_name, routed)


def _duplicate(tx: Conn, tenant_id: str, idempotency_key: str | None) -> SignalTracked:
    assert idempotency_key is not None  # only a key makes an insert inert
    found = signals.find_by_key(tx, tenant_id, idempotency_key)
    assert found is not None
    return SignalTracked(found, duplicate=True)


def _tracked(
    signal_id: uuid.UUID, tenant_id: str, event_name: str, routed: Routed | None
) -> SignalTracked:
    logger.info(
        "signal tracked",
        extra={
            "action": "signal.tracked",
            "tenant_id": tenant_id,
            "signal_id": str(signal_id),
            "event_name": event_name,
        },
    )
    return SignalTracked(signal_id, routed=routed)


def route_signal(engine: Engine, conn: Conn, signal_id: uuid.UUID) -> Routed:
    """Resume and progress the runs waiting for this signal, in the caller's transaction;
    routing twice does nothing."""
    signal = signals.lock(conn, signal_id)
    if signal is None:
        return Routed(signal_id, skipped="missing")
    if signal.routed_at is not None:
        return Routed(signal_id, skipped="already routed")
    return _route(engine, conn, [signal])[0]


def route_pending(
    engine: Engine,
    conn: Conn,
    signal_id: uuid.UUID,
    limit: int = ROUTE_BATCH,
    *,
    callers: bool = True,
) -> list[Routed]:
    """What a ``route_signal`` job does, in the caller's transaction: route this signal and
    up to ``limit - 1`` other waiting ones (oldest first, none another router holds), and
    delete the jobs of those others that no worker has taken yet. One result per signal
    routed, oldest first. ``callers``: the transaction goes on after (else nothing of the
    session's settings needs setting back)."""
    own = signals.lock(conn, signal_id)
    batch = [own] if own is not None and own.routed_at is None else []
    others = signals.lock_pending(conn, signal_id, limit - len(batch))
    batch += others
    batch.sort(key=lambda s: (s.created_at is None, s.created_at))
    routed = _route(engine, conn, batch, callers=callers)
    jobs.delete_queued(conn, [jobs.ROUTE_LOCK + str(s.id) for s in others])
    return routed


def route_pending_now(engine: Engine, signal_id: uuid.UUID) -> list[Routed]:
    """:func:`route_pending` in a transaction of its own (what the job does)."""
    with (
        telemetry.span("chimeway.signal.route", signal_id=signal_id) as span,
        logbook.held(),
        engine.pool.connection() as conn,
        conn.transaction(),
    ):
        routed = route_pending(engine, conn, signal_id, callers=False)
        span.set(signals=len(routed))
        return routed


def _route(
    engine: Engine, conn: Conn, batch: Sequence[Signal], *, callers: bool = True
) -> list[Routed]:
    """Route these locked, unrouted signals set-wise, in order: each waiting run goes to the
    first signal it listens for (as if they were routed one after the other); the runs are
    resumed in one statement and progressed in a few (:func:`apply.apply`). A few signals
    are routed on generic plans (:func:`~chimeway.engine.connections.few_rows`), set back
    after on the caller's connection (``callers``)."""
    if not batch:
        return []
    with connections.few_rows(conn, len(batch), callers=callers):
        return _route_locked(engine, conn, batch)


def _route_locked(engine: Engine, conn: Conn, batch: Sequence[Signal]) -> list[Routed]:
    waiting = signals.lock_waiting_runs(
        conn, [(s.tenant_id, s.actor_id) for s in batch], [s.event_name for s in batch]
    )
    by_actor: dict[tuple[str, str], list[Run]] = {}
    for run in waiting:
        by_actor.setdefault((run.tenant_id, run.recipient_id), []).append(run)
    named = {s.id: _delivery_id(s.payload) for s in batch}
    existing = signals.existing_deliveries(
        conn, [(s.tenant_id, d) for s in batch if (d := named[s.id]) is not None]
    )
    taken: set[uuid.UUID] = set()
    moves: list[runs.Move] = []
    owner: dict[uuid.UUID, int] = {}
    for i, signal in enumerate(batch):
        delivery = named[signal.id]
        delivery = delivery if (signal.tenant_id, delivery) in existing else None
        for run in by_actor.get((signal.tenant_id, signal.actor_id), []):
            if run.id not in taken and signal.event_name in run.pending_signals:
                taken.add(run.id)
                owner[run.id] = i
                moves.append(decide.signal_move(run, signal.event_name, delivery))
    resumed = runs.update_runs(conn, moves)
    decisions = []
    for run in resumed:
        apply.log("run.signal_received", run, event_name=batch[owner[run.id]].event_name)
        step = engine.catalog.current_step(conn, run)
        steps = engine.catalog.steps(conn, run.definition_id)
        decisions.append(decide.after_signal(run, step, steps))
    progressed = apply.apply(engine, conn, decisions)
    signals.mark_routed(conn, [s.id for s in batch])
    results: list[tuple[list[uuid.UUID], list[ProgressResult]]] = [([], []) for _ in batch]
    for run, result in zip(resumed, progressed, strict=True):
        ids, outcomes = results[owner[run.id]]
        ids.append(run.id)
        outcomes.append(result)
    return [
        Routed(signal.id, ids, outcomes)
        for signal, (ids, outcomes) in zip(batch, results, strict=True)
    ]


def _delivery_id(payload: dict[str, Any]) -> uuid.UUID | None:
    """The payload's ``delivery_id``, when it is one (whose tenant the caller checks)."""
    try:
        return uuid.UUID(str(payload.get("delivery_id")))
    except ValueError:
        return None
