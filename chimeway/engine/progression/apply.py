"""Writing progression decisions, set-wise, in the caller's transaction.

However many runs were decided together (a chunk's runs, a batch of due waits), their
decisions are written in a few statements: superseded deliveries, elapsed waits, advances
(with the next step's delivery planned through :mod:`chimeway.engine.planning`), endings and
new waits, each through the guarded moves of :mod:`chimeway.store.runs` and
:mod:`chimeway.store.deliveries`. A step whose delivery planning already settled (suppressed)
is decided again at once (:func:`settle`), so its outcome branches like any other.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from chimeway.db import Conn
from chimeway.engine import digests, logbook, planning
from chimeway.engine.context import Engine
from chimeway.engine.progression import decide
from chimeway.engine.progression.decide import Advance, Decision, ElapseWait, Finish, StartWait
from chimeway.errors import InvalidTransition
from chimeway.results import Advanced, ProgressResult, Waiting
from chimeway.store import clock, deliveries, runs, signals
from chimeway.store.deliveries import PlannedRow
from chimeway.store.runs import Record, Run
from chimeway.types import DeliveryReason, DeliveryStatus, RunState

logger = logging.getLogger(__name__)


def apply(engine: Engine, conn: Conn, decisions: Sequence[Decision]) -> list[ProgressResult]:
    """Write the decisions together; one result per decision, in order."""
    results: dict[int, ProgressResult] = {}
    advances: list[tuple[int, Advance]] = []
    finishes: list[tuple[int, Finish]] = []
    waits: list[tuple[int, StartWait]] = []
    elapses: list[tuple[int, ElapseWait]] = []
    for i, decision in enumerate(decisions):
        if isinstance(decision, Advance):
            advances.append((i, decision))
        elif isinstance(decision, Finish):
            finishes.append((i, decision))
        elif isinstance(decision, StartWait):
            waits.append((i, decision))
        elif isinstance(decision, ElapseWait):
            elapses.append((i, decision))
        else:
            results[i] = decision
    _supersede(
        conn,
        [d.supersede for _, d in advances if d.supersede]
        + [d.supersede for _, d in finishes if d.supersede],
    )
    # An elapsed wait is reactivated and advanced by the advances' one update.
    advances += [(i, decide.elapsed(e)) for i, e in elapses]
    advances.sort(key=lambda pair: pair[0])
    for (i, _), result in zip(
        advances, _advance(engine, conn, [a for _, a in advances]), strict=True
    ):
        results[i] = result
    moved = runs.update_runs(conn, [f.move for _, f in finishes])
    for (i, finish), run in zip(finishes, moved, strict=True):
        log(finish.action, run, **finish.details)
        results[i] = finish.result
    for (i, _), waited in zip(
        waits, _start_waits(engine, conn, [w for _, w in waits]), strict=True
    ):
        results[i] = waited
    return [results[i] for i in range(len(decisions))]


def resume(
    engine: Engine, conn: Conn, run: Run, event_name: str, delivery_id: uuid.UUID | None
) -> ProgressResult:
    """A signal the waiting ``run`` (locked) listens for arrived: resume it and act on it
    (an ``OnSignal`` rule advances it; otherwise the cancelled wait completes it)."""
    resumed = runs.update_runs(conn, [decide.signal_move(run, event_name, delivery_id)])[0]
    log("run.signal_received", resumed, event_name=event_name)
    step = engine.catalog.current_step(conn, resumed)
    steps = engine.catalog.steps(conn, resumed.definition_id)
    return apply(engine, conn, [decide.after_signal(resumed, step, steps)])[0]


def _supersede(conn: Conn, delivery_ids: Sequence[uuid.UUID]) -> None:
    """Stop the retries of the deliveries of steps their runs are leaving."""
    moved = deliveries.transition_many(
        conn,
        [
            deliveries.Move(
                delivery_id,
                DeliveryStatus.CANCELLED,
                DeliveryReason.SUPERSEDED,
                DeliveryReason.SUPERSEDED,
            )
            for delivery_id in delivery_ids
        ],
        only_from=[DeliveryStatus.FAILED],
    )
    if len(moved) != len(delivery_ids):
        left = sorted(set(delivery_ids) - {d.id for d in moved})
        raise InvalidTransition(f"delivery {left[0]} is no longer failed; cannot supersede it")


def _advance(engine: Engine, conn: Conn, advances: Sequence[Advance]) -> list[ProgressResult]:
    """Move each run's cursor to its target, recording ``step_activated``, and plan the
    target step's delivery: a few statements for any number of runs. A run whose new
    delivery planning settled is decided again; its result is then that decision's."""
    if not advances:
        return []
    moved = runs.update_runs(
        conn,
        [
            runs.Move(
                a.run,
                RunState.ACTIVE,
                a.status_reason,
                a.status_context,
                current_step_id=a.target.id,
                records=[
                    *a.prior,
                    Record(
                        "step_activated",
                        {"step_key": a.target.step_key, "source": a.source},
                        a.target.id,
                        # After an elapsed wait's reactivation, recorded first.
                        from_state=RunState.ACTIVE,
                    ),
                ],
            )
            for a in advances
        ],
    )
    rows = planning.plan(
        engine,
        conn,
        [
            planning.DeliveryPlan(
                notification_id=a.run.notification_id,
                tenant_id=a.run.tenant_id,
                recipient_id=a.run.recipient_id,
                channel=a.target.channel,
                # As rendered when the notification was triggered (a closed batch: its
                # digest).
                render_data=a.render_data,
                workflow_run_id=a.run.id,
                workflow_step_id=a.target.id,
                **(a.facts or {}),
            )
            for a in advances
        ],
    )
    planned: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for row in rows:
        planned.setdefault(row.workflow_run_id, []).append(row.id)
    by_run = {row.workflow_run_id: row for row in rows}
    digests.fold(
        conn,
        [(a.digest_id, by_run[a.run.id]) for a in advances if a.digest_id and a.run.id in by_run],
    )
    results: list[ProgressResult] = []
    for advance, run in zip(advances, moved, strict=True):
        log("run.advanced", run, to_step=advance.target.step_key)
        results.append(Advanced(run.id, advance.target.step_key, planned.get(run.id, [])))
    settled = settle(engine, conn, {run.id: run for run in moved}, rows)
    return [settled.get(result.run_id, result) for result in results]


def settle(
    engine: Engine, conn: Conn, moved: dict[uuid.UUID, Run], rows: Sequence[PlannedRow]
) -> dict[uuid.UUID, ProgressResult]:
    """Decide again, at once, the runs (locked, as ``moved`` holds them) whose newly planned
    step delivery is already terminal: planning suppressed it, so no send will record it
    and progress the run. Their results by run id; the others are left out."""
    decisions: list[Decision] = []
    for row in rows:
        run = moved.get(row.workflow_run_id) if row.workflow_run_id else None
        if run is None or not DeliveryStatus(row.status).terminal:
            continue
        step = engine.catalog.current_step(conn, run)
        delivery = deliveries.lock_step_delivery(conn, run.id, step.id)
        attempt = deliveries.latest_attempt(conn, delivery.id) if delivery else None
        steps = engine.catalog.steps(conn, run.definition_id)
        decisions.append(decide.active(run, step, steps, delivery, attempt))
    return {result.run_id: result for result in apply(engine, conn, decisions)}


def _start_waits(engine: Engine, conn: Conn, starts: Sequence[StartWait]) -> list[ProgressResult]:
    """Put the runs to wait, with their timers: a few statements whatever their number.
    Waits due beyond the timer horizon get their timers from a later sweep."""
    if not starts:
        return []
    waiting = runs.update_runs(conn, [decide.waiting_move(s) for s in starts])
    horizon = clock.now(conn) + engine.settings.maintenance.timer_horizon
    engine.deferrer.timers(
        conn,
        [(run.id, s.due_at) for run, s in zip(waiting, starts, strict=True) if s.due_at <= horizon],
    )
    for run, start in zip(waiting, starts, strict=True):
        log("run.waiting", run, due_at=start.due_at.isoformat())
    # A signal that came while the step was still sending (the user read the in-app notice
    # before its delivery was recorded) found no waiting run: it counts now.
    early = signals.seen_since(
        conn,
        [
            signals.Listening(
                s.run.tenant_id, s.run.recipient_id, s.signals, s.run.last_transition_at
            )
            if s.signals
            else None
            for s in starts
        ],
    )
    return [
        resume(engine, conn, run, early[i], None) if i in early else Waiting(run.id, start.due_at)
        for i, (run, start) in enumerate(zip(waiting, starts, strict=True))
    ]


def log(action: str, run: Run, **details: Any) -> None:
    """Log a run's move once the transaction that made it commits."""
    logbook.info(
        logger,
        action.replace(".", " "),
        action=action,
        tenant_id=run.tenant_id,
        run_id=str(run.id),
        **details,
    )
