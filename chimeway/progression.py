"""The progression engine (the seeds' ``Chimeway.Workflows.Progression``, design §6).

:func:`progress_in` is the one seam through which runs move: in the caller's transaction it
locks the run, then the active step's delivery, reads the delivery's outcome from the rows
and persists exactly one decision (advance, wait, stop, complete) with its transitions and
the job that must follow it, or returns a :class:`Noop` with the reason. Re-entry is always
a noop, so concurrent or repeated calls never plan a second delivery.

Many runs at once (a chunk job's runs, :func:`progress_recorded`; a batch of due waits,
:func:`progress_due_runs`) go through the same code: each run is decided on its own
(``_decide``, ``_elapse_waits``) and the decisions are written together (``_apply``,
``_advance_many``), a few statements whatever their number.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from chimeway import db, deliveries, workflows
from chimeway.deliveries import PlannedDelivery
from chimeway.dsl import ANCHOR, OnOutcome, OnSignal, Rule, Stop, WaitUntil, rule_from_dict
from chimeway.outcomes import Evidence, is_terminal, outcome_for
from chimeway.results import Advanced, Completed, Delivery, Noop, ProgressResult, Stopped, Waiting
from chimeway.types import DeliveryReason, DeliveryStatus, Outcome, RunState
from chimeway.workflows import Run, StepRow

if TYPE_CHECKING:
    from chimeway.app import Chimeway

logger = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]

WAITING_REASON = "waiting_for_step_progression"
SIGNAL_REASON = "signal_received"


def progress_run(cw: Chimeway, run_id: uuid.UUID, now: dt.datetime | None = None) -> ProgressResult:
    """Evaluate one run in its own transaction."""
    with cw.pool.connection() as conn, conn.transaction():
        return progress_in(cw, conn, run_id, now)


@dataclass(frozen=True)
class Known:
    """What the caller already holds in this transaction, so it is not read again: the
    locked run, and the step delivery it just locked and moved, with its latest attempt."""

    run: Run
    delivery: Delivery | None = None
    attempt: tuple[str, str | None] | None = None  # (outcome, error_class)


def progress_in(
    cw: Chimeway,
    conn: Conn,
    run_id: uuid.UUID,
    now: dt.datetime | None = None,
    known: Known | None = None,
) -> ProgressResult:
    """Evaluate one run in the caller's transaction (which may already hold its lock)."""
    run = known.run if known is not None else workflows.lock_run(conn, run_id)
    if run is None:
        return Noop(run_id, "run_not_found")
    clock = now or db.now(conn)
    if run.state == RunState.WAITING:
        return _waiting(cw, conn, run, clock)
    if run.state != RunState.ACTIVE:
        return Noop(run.id, "run_not_active")
    return _active(cw, conn, run, clock, known)


# -- waiting runs ----------------------------------------------------------------------------


def _waiting(cw: Chimeway, conn: Conn, run: Run, now: dt.datetime) -> ProgressResult:
    return _elapse_waits(cw, conn, [run], now)[0]


def _elapse_waits(
    cw: Chimeway, conn: Conn, runs: Sequence[Run], now: dt.datetime
) -> list[ProgressResult]:
    """Waiting runs (locked by the caller) whose wait is due move to the step the wait
    leads to, in a few statements whatever their number: a timer passes one run, the due
    sweep a batch. One result per run, in order."""
    results: dict[uuid.UUID, ProgressResult] = {}
    due: list[tuple[Run, StepRow]] = []
    for run in runs:
        if run.suspended_until is None or run.suspended_until > now:
            results[run.id] = Noop(run.id, "wait_not_due")
            continue
        target = cw.step_by_key(conn, run.definition_id, str(run.status_context.get("to_step")))
        if target is None:
            results[run.id] = Noop(run.id, "unknown_to_step")
            continue
        due.append((run, target))
    reactivated = workflows.update_runs(
        conn,
        [
            _moving(
                run,
                to=RunState.ACTIVE,
                reason="reactivated_from_wait",
                context={**run.status_context, "reactivated_at": now.isoformat()},
                delivery_id=_uuid(run.status_context.get("anchor_delivery_id")),
            )
            for run, _ in due
        ],
    )
    advances = [
        _Advance(
            run,
            target,
            status_reason="progressed_on_wait_elapsed",
            status_context={
                "rule_kind": "wait_until",
                "workflow_outcome": "wait_elapsed",
                "anchor_delivery_id": waited.status_context.get("anchor_delivery_id"),
                "from_step": cw.current_step(conn, run).step_key,
                "to_step": target.step_key,
            },
            source="wait_elapsed",
        )
        for run, (waited, target) in zip(reactivated, due, strict=True)
    ]
    for advanced in _advance_many(cw, conn, advances):
        results[advanced.run_id] = advanced
    return [results[run.id] for run in runs]


# -- active runs -----------------------------------------------------------------------------


def _active(
    cw: Chimeway, conn: Conn, run: Run, now: dt.datetime, known: Known | None = None
) -> ProgressResult:
    return _apply(cw, conn, [_decide(cw, conn, run, known)])[0]


def progress_recorded(cw: Chimeway, conn: Conn, known: Sequence[Known]) -> list[ProgressResult]:
    """Progress the runs whose step deliveries the caller just recorded, in its transaction
    (each run locked, then its delivery): every run is decided as :func:`progress_in` would,
    and the decisions are written set-wise (advances, endings and waits each in a few
    statements), so a job that sent many deliveries moves their runs at the cost of a few.
    One result per run, in order."""
    decisions: list[_Decision] = []
    for k in known:
        if k.run.state == RunState.ACTIVE:
            decisions.append(_decide(cw, conn, k.run, k))
        else:  # waiting (a stale step's send) or finished: the one-run path says what to do
            decisions.append(progress_in(cw, conn, k.run.id, known=k))
    return _apply(cw, conn, decisions)


@dataclass(frozen=True)
class _Advance:
    """A run (active, locked) moving its cursor to ``target``; ``prior`` explains why
    (recorded before ``step_activated``)."""

    run: Run
    target: StepRow
    status_reason: str
    status_context: dict[str, Any]
    source: str
    prior: Sequence[workflows.Record] = ()


@dataclass(frozen=True)
class _Finish:
    """A run ending (stopped, completed): its move, its result, and what to log."""

    move: workflows.Move
    result: Completed | Stopped
    action: str
    details: dict[str, Any]


@dataclass(frozen=True)
class _StartWait:
    run: Run
    delivery: Delivery
    wait: WaitUntil
    rules: Sequence[Rule]


# What a rule decided for one run, written by :func:`_apply` with the other runs' decisions.
_Decision = ProgressResult | _Advance | _Finish | _StartWait


def _apply(cw: Chimeway, conn: Conn, decisions: Sequence[_Decision]) -> list[ProgressResult]:
    """Write the decisions set-wise: advances, endings, waits. One result per decision, in
    order."""
    results: dict[int, ProgressResult] = {}
    advances: list[tuple[int, _Advance]] = []
    finishes: list[tuple[int, _Finish]] = []
    waits: list[tuple[int, _StartWait]] = []
    for i, decision in enumerate(decisions):
        if isinstance(decision, _Advance):
            advances.append((i, decision))
        elif isinstance(decision, _Finish):
            finishes.append((i, decision))
        elif isinstance(decision, _StartWait):
            waits.append((i, decision))
        else:
            results[i] = decision
    advanced = _advance_many(cw, conn, [a for _, a in advances])
    for (i, _), result in zip(advances, advanced, strict=True):
        results[i] = result
    moved = workflows.update_runs(conn, [f.move for _, f in finishes])
    for (i, finish), run in zip(finishes, moved, strict=True):
        _log(finish.action, run, **finish.details)
        results[i] = finish.result
    for (i, _), waited in zip(waits, _start_waits(cw, conn, [w for _, w in waits]), strict=True):
        results[i] = waited
    return [results[i] for i in range(len(decisions))]


def _decide(cw: Chimeway, conn: Conn, run: Run, known: Known | None = None) -> _Decision:
    """What the active ``run``'s step rules say to do now (design §6)."""
    step = cw.current_step(conn, run)
    rules = _rules(step)
    if run.status_reason == SIGNAL_REASON:
        return _after_signal(cw, conn, run, step, rules)
    known_delivery = known.delivery if known is not None else None
    attempt: tuple[str, str | None] | None = None
    delivery: Delivery | None
    if (
        known is not None
        and known_delivery is not None
        and known_delivery.workflow_step_id == step.id
    ):
        delivery, attempt = known_delivery, known.attempt  # locked and moved by the caller
    else:
        delivery = _lock_step_delivery(conn, run, step)
    if delivery is None:
        return Noop(run.id, "no_active_step_delivery")
    outcome = outcome_for(delivery.status, delivery.suppression_reason)
    if outcome is None:
        return Noop(run.id, "prior_delivery_not_converged")
    evidence = _evidence(conn, delivery, attempt)
    base = {
        "workflow_outcome": outcome.value,
        "anchor_delivery_id": str(delivery.id),
        "from_step": step.step_key,
    }
    for rule in rules:
        if isinstance(rule, OnOutcome) and rule.outcome == outcome:
            return _on_outcome(cw, conn, run, delivery, rule, base, evidence)
        if isinstance(rule, Stop) and rule.outcome == outcome:
            return _stop(conn, run, delivery, outcome, base, evidence)
    if not is_terminal(outcome):
        reason = "no_matching_progress_rule" if rules else "no_progress_rules"
        return Noop(run.id, reason)
    wait = next((r for r in rules if isinstance(r, WaitUntil)), None)
    if wait is not None:
        return _StartWait(run, delivery, wait, rules)
    return _complete(
        run,
        "implicit_completion",
        delivery.id,
        {**base, "rule_kind": "implicit_completion", **evidence.as_dict()},
    )


def _on_outcome(
    cw: Chimeway,
    conn: Conn,
    run: Run,
    delivery: Delivery,
    rule: OnOutcome,
    base: dict[str, Any],
    evidence: Evidence,
) -> _Advance | Noop:
    target = cw.step_by_key(conn, run.definition_id, rule.to_step)
    if target is None:
        return Noop(run.id, "unknown_to_step")
    context = {**base, "rule_kind": "on_outcome", "to_step": target.step_key, **evidence.as_dict()}
    _supersede_if_retrying(conn, delivery)
    return _Advance(
        run,
        target,
        status_reason="progressed_on_delivery_outcome",
        status_context=context,
        source="progression",
        prior=[
            workflows.Record(
                "progressed_on_delivery_outcome", context, run.current_step_id, delivery.id
            )
        ],
    )


def _stop(
    conn: Conn,
    run: Run,
    delivery: Delivery,
    outcome: Outcome,
    base: dict[str, Any],
    evidence: Evidence,
) -> _Finish:
    context = {**base, "rule_kind": "stop", **evidence.as_dict()}
    _supersede_if_retrying(conn, delivery)
    move = _moving(
        run,
        to=RunState.STOPPED,
        reason="workflow_stopped",
        context=context,
        delivery_id=delivery.id,
        terminal_reason=f"stopped_on_{outcome.value}",
    )
    return _Finish(move, Stopped(run.id, outcome), "run.stopped", {"outcome": outcome.value})


def _start_waits(cw: Chimeway, conn: Conn, starts: Sequence[_StartWait]) -> list[ProgressResult]:
    """Put the runs to wait, with their timers: a few statements whatever their number. One
    result per run, in order."""
    if not starts:
        return []
    moves, dues, listens = [], [], []
    for start in starts:
        run, delivery, wait = start.run, start.delivery, start.wait
        anchor = delivery.terminal_at or delivery.updated_at
        due_at = anchor + wait.delay
        context = {
            "rule_kind": "wait_until",
            "anchor": ANCHOR,
            "anchor_delivery_id": str(delivery.id),
            "anchor_delivery_status": str(delivery.status),
            "anchor_timestamp": anchor.isoformat(),
            "due_at": due_at.isoformat(),
            "to_step": wait.to_step,
        }
        # A waiting run listens for its cancel signals and for the events its OnSignal
        # rules branch on.
        events = [*wait.cancel_signals, *(r.event for r in start.rules if isinstance(r, OnSignal))]
        signals = list(dict.fromkeys(events))
        moves.append(
            _moving(
                run,
                to=RunState.WAITING,
                reason=WAITING_REASON,
                context=context,
                delivery_id=delivery.id,
                suspended_until=due_at,
                pending_signals=signals,
            )
        )
        dues.append(due_at)
        listens.append(signals)
    waiting = workflows.update_runs(conn, moves)
    horizon = db.now(conn) + cw.maintenance.timer_horizon
    # Later waits get their timers from a sweep when they come within the horizon.
    cw.jobs.timers(
        conn, [(r.id, due) for r, due in zip(waiting, dues, strict=True) if due <= horizon]
    )
    for run, due_at in zip(waiting, dues, strict=True):
        _log("run.waiting", run, due_at=due_at.isoformat())
    # A signal that came while the step was still sending (the user read the in-app notice
    # before its delivery was recorded) found no waiting run: it counts now.
    early = _signals_seen(
        conn, [(s.run, events) for s, events in zip(starts, listens, strict=True)]
    )
    results: list[ProgressResult] = []
    for i, (run, due_at) in enumerate(zip(waiting, dues, strict=True)):
        if i in early:
            results.append(resume_on_signal(cw, conn, run, early[i], None))
        else:
            results.append(Waiting(run.id, due_at))
    return results


def _signals_seen(conn: Conn, runs: Sequence[tuple[Run, list[str]]]) -> dict[int, str]:
    """For each run (by position) that listens for events: the earliest such signal from
    its recipient since its step began, if any, in one statement."""
    listening = [(i, run, events) for i, (run, events) in enumerate(runs) if events]
    if not listening:
        return {}
    rows = conn.execute(
        db.query("signals_seen_since"),
        {
            "tenant_ids": [run.tenant_id for _, run, _ in listening],
            "actor_ids": [run.recipient_id for _, run, _ in listening],
            "events": [Jsonb(events) for _, _, events in listening],
            "since": [run.last_transition_at for _, run, _ in listening],
        },
    ).fetchall()
    return {listening[n - 1][0]: event for n, event in rows}


def resume_on_signal(
    cw: Chimeway, conn: Conn, run: Run, event_name: str, delivery_id: uuid.UUID | None
) -> ProgressResult:
    """A signal the waiting ``run`` listens for arrived: resume it and act on it (an
    ``OnSignal`` rule advances it; otherwise the cancelled wait completes it). Only the
    event name is kept: a signal's payload never enters a run's context or trace."""
    context = {"event_name": event_name}
    resumed = _move(
        conn,
        run,
        to=RunState.ACTIVE,
        reason=SIGNAL_REASON,
        context=context,
        delivery_id=delivery_id,
    )
    _log("run.signal_received", resumed, event_name=event_name)
    step = cw.current_step(conn, resumed)
    return _apply(cw, conn, [_after_signal(cw, conn, resumed, step, _rules(step))])[0]


def _after_signal(
    cw: Chimeway, conn: Conn, run: Run, step: StepRow, rules: Sequence[Rule]
) -> _Decision:
    """A signal cancelled the wait: follow the step's OnSignal rule, or complete the run."""
    event = str(run.status_context.get("event_name"))
    rule = next((r for r in rules if isinstance(r, OnSignal) and r.event == event), None)
    if rule is not None:
        target = cw.step_by_key(conn, run.definition_id, rule.to_step)
        if target is None:
            return Noop(run.id, "unknown_to_step")
        context = {
            "rule_kind": "on_signal",
            "event_name": event,
            "from_step": step.step_key,
            "to_step": target.step_key,
        }
        return _Advance(
            run,
            target,
            status_reason="progressed_on_signal",
            status_context=context,
            source="signal",
            prior=[workflows.Record("progressed_on_signal", context, step.id)],
        )
    return _complete(
        run,
        "wait_cancelled_by_signal",
        None,
        {"rule_kind": "cancel_signal", "event_name": event, "from_step": step.step_key},
    )


def _complete(
    run: Run,
    terminal_reason: str,
    delivery_id: uuid.UUID | None,
    context: dict[str, Any],
) -> _Finish:
    move = _moving(
        run,
        to=RunState.COMPLETED,
        reason="workflow_completed",
        context=context,
        delivery_id=delivery_id,
        terminal_reason=terminal_reason,
    )
    details = {"terminal_reason": terminal_reason}
    return _Finish(move, Completed(run.id, terminal_reason), "run.completed", details)


def _advance_many(cw: Chimeway, conn: Conn, advances: Sequence[_Advance]) -> list[Advanced]:
    """Move each run's cursor to its target, recording ``step_activated``; plan the target
    step's delivery and defer its job: four statements for any number of runs."""
    if not advances:
        return []
    moved = workflows.update_runs(
        conn,
        [
            workflows.Move(
                a.run,
                RunState.ACTIVE,
                a.status_reason,
                a.status_context,
                current_step_id=a.target.id,
                records=[
                    *a.prior,
                    workflows.Record(
                        "step_activated",
                        {"step_key": a.target.step_key, "source": a.source},
                        a.target.id,
                    ),
                ],
            )
            for a in advances
        ],
    )
    rows = deliveries.insert_many(
        conn,
        [
            PlannedDelivery(
                notification_id=a.run.notification_id,
                tenant_id=a.run.tenant_id,
                recipient_id=a.run.recipient_id,
                channel=a.target.channel,
                render_data=None,  # as rendered when the notification was triggered
                max_attempts=cw.retry_policy(a.target.channel).max_attempts,
                workflow_run_id=a.run.id,
                workflow_step_id=a.target.id,
            )
            for a in advances
        ],
    )
    cw.jobs.deliver(conn, [r.id for r in rows])
    planned: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for row in rows:
        planned.setdefault(row.workflow_run_id, []).append(row.id)
    results = []
    for advance, run in zip(advances, moved, strict=True):
        _log("run.advanced", run, to_step=advance.target.step_key)
        results.append(Advanced(run.id, advance.target.step_key, planned.get(run.id, [])))
    return results


# -- due sweeps ------------------------------------------------------------------------------

#: How many other due waits a timer that fires takes along (one set-wise batch).
TAKE_ALONG = 200


def progress_timer(
    cw: Chimeway, run_id: uuid.UUID, now: dt.datetime | None = None
) -> ProgressResult:
    """What a ``progress`` job does: progress its run and, when that advanced it (its wait
    elapsed), every other wait due by then (up to :data:`TAKE_ALONG`), set-wise as the due
    sweep does.
    Waits fall due in bursts (a fan-out's runs all waited the same delay); one timer job
    each would queue them behind each other, while their own timers, when they run, find
    their runs moved on and do nothing."""
    result = progress_run(cw, run_id, now)
    if isinstance(result, Advanced):
        progress_due_runs(cw, now, limit=TAKE_ALONG, batch_size=TAKE_ALONG)
    return result


def progress_due_runs(
    cw: Chimeway,
    now: dt.datetime | None = None,
    limit: int = 10_000,
    batch_size: int = 200,
) -> list[ProgressResult]:
    """Progress waiting runs whose wait is due: batches claimed with SKIP LOCKED, so any
    number of sweepers can run at once; one transaction per batch, moved set-wise by the
    same code that moves one run on its timer. If a batch fails, its runs are retried one
    by one, each in a savepoint: a run that fails is logged and left for the next sweep;
    the others go on."""
    results: list[ProgressResult] = []
    tried: list[uuid.UUID] = []
    while len(results) < limit:
        size = min(batch_size, limit - len(results))
        with cw.pool.connection() as conn, conn.transaction():
            with conn.cursor(row_factory=db.dataclass_row(Run)) as cur:
                claimed = cur.execute(
                    db.query("runs_due_claim"), {"now": now, "limit": size, "skip": tried}
                ).fetchall()
            tried.extend(run.id for run in claimed)
            results.extend(_elapse_claimed(cw, conn, claimed, now or db.now(conn)))
        if len(claimed) < size:
            break
    return results


def _elapse_claimed(
    cw: Chimeway, conn: Conn, claimed: Sequence[Run], now: dt.datetime
) -> list[ProgressResult]:
    try:
        with conn.transaction():
            return _elapse_waits(cw, conn, claimed, now)
    except Exception:
        logger.warning(
            "progressing a batch of due runs failed; retrying them one by one",
            exc_info=True,
            extra={"action": "runs.batch_failed", "runs": len(claimed)},
        )
    results: list[ProgressResult] = []
    for run in claimed:
        try:
            with conn.transaction():
                results.append(progress_in(cw, conn, run.id, now))
        except Exception:
            logger.exception(
                "progressing a due run failed; the next sweep tries again",
                extra={"action": "run.progress_failed", "run_id": str(run.id)},
            )
    return results


# -- helpers ---------------------------------------------------------------------------------


def _move(
    conn: Conn,
    run: Run,
    *,
    to: RunState,
    reason: str,
    context: dict[str, Any],
    delivery_id: uuid.UUID | None = None,
    **fields: Any,
) -> Run:
    """Change the run's state (guarded, :func:`workflows.update_runs`) and append the
    transition that explains it."""
    moving = _moving(run, to=to, reason=reason, context=context, delivery_id=delivery_id, **fields)
    return workflows.update_runs(conn, [moving])[0]


def _moving(
    run: Run,
    *,
    to: RunState,
    reason: str,
    context: dict[str, Any],
    delivery_id: uuid.UUID | None = None,
    **fields: Any,
) -> workflows.Move:
    """A move whose transition's reason doubles as the run's status reason. Fields not given
    (pending signals, suspension, terminal reason) are cleared."""
    return workflows.Move(
        run,
        to,
        reason,
        context,
        records=[workflows.Record(reason, context, run.current_step_id, delivery_id)],
        **fields,
    )


def _rules(step: StepRow) -> list[Rule]:
    return [rule_from_dict(r) for r in step.config.get("progress", [])]


def _supersede_if_retrying(conn: Conn, delivery: Delivery) -> None:
    """The run leaves a step whose delivery still retries (a rule on temporary_failure):
    stop those retries, or the old step would still send after the run moved on."""
    if delivery.status == DeliveryStatus.FAILED:
        deliveries.transition(
            conn,
            delivery.id,
            DeliveryStatus.CANCELLED,
            reason=DeliveryReason.SUPERSEDED,
            suppression_reason=DeliveryReason.SUPERSEDED,
        )


def _lock_step_delivery(conn: Conn, run: Run, step: StepRow) -> Delivery | None:
    with conn.cursor(row_factory=db.dataclass_row(Delivery)) as cur:
        return cur.execute(
            db.query("step_delivery_lock"), {"run_id": run.id, "step_id": step.id}
        ).fetchone()


def _evidence(
    conn: Conn, delivery: Delivery, attempt: tuple[str, str | None] | None = None
) -> Evidence:
    latest = (
        attempt or conn.execute(db.query("attempt_latest"), {"delivery_id": delivery.id}).fetchone()
    )
    outcome = error_class = None
    if latest is not None:
        outcome, error_class = latest
    return Evidence(
        delivery_status=str(delivery.status),
        suppression_reason=delivery.suppression_reason,
        attempt_outcome=outcome,
        attempt_error_class=error_class,
    )


def _uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


def _log(action: str, run: Run, **details: Any) -> None:
    logger.info(
        action.replace(".", " "),
        extra={"action": action, "tenant_id": run.tenant_id, "run_id": str(run.id), **details},
    )
