"""The progression rules of design §6, as pure functions: no database, no clock.

Given a run (as locked by the driver), its current step, its definition's steps and the
evidence the driver read (the step's delivery and its latest attempt), each function returns
one :data:`Decision`: advance, finish (stop or complete), start a wait, elapse a wait, or a
:class:`~chimeway.results.Noop` with its reason. :mod:`.apply` writes decisions; nothing here
writes, so the rules can be tested row by row without PostgreSQL (tests/unit/test_decide.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from chimeway.dsl import ANCHOR, OnOutcome, OnSignal, Rule, Stop, WaitUntil, rule_from_dict
from chimeway.outcomes import Evidence, is_terminal, outcome_for
from chimeway.results import Completed, Delivery, Noop, ProgressResult, Stopped
from chimeway.store.definitions import StepRow
from chimeway.store.deliveries import LatestAttempt
from chimeway.store.runs import Move, Record, Run
from chimeway.types import DeliveryStatus, RunState

WAITING_REASON = "waiting_for_step_progression"
SIGNAL_REASON = "signal_received"
FEEDBACK_REASON = "reactivated_on_feedback"
BATCH_KIND = "batch"
BATCH_REASON = "batch_open"  # collecting a batch's members until it closes (design §15)
BATCH_CLOSED = "batch_closed"


@dataclass(frozen=True)
class Advance:
    """Move the active run's cursor to ``target`` and plan that step's delivery; ``prior``
    explains why (recorded before ``step_activated``). ``supersede``: the delivery of the
    step being left, which is still retrying and must stop (a rule on temporary_failure)."""

    run: Run
    target: StepRow
    status_reason: str
    status_context: dict[str, Any]
    source: str
    prior: Sequence[Record] = ()
    supersede: uuid.UUID | None = None
    #: The content of the delivery to plan (a closed batch's digest); ``None``: as the
    #: notification rendered it when triggered.
    render_data: dict[str, Any] | None = None
    #: The closed batch whose digest this step's delivery sends.
    digest_id: uuid.UUID | None = None
    #: What policy decides the delivery on (workflow_key, category, critical,
    #: bypass_quiet_hours), when the notification has no earlier delivery to take them from.
    facts: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finish:
    """End the run (stopped or completed): its move, its result and what to log."""

    move: Move
    result: Completed | Stopped
    action: str
    details: dict[str, Any] = field(default_factory=dict)
    supersede: uuid.UUID | None = None


@dataclass(frozen=True)
class StartWait:
    """Put the run to wait until ``due_at``, listening for ``signals`` meanwhile."""

    run: Run
    delivery_id: uuid.UUID
    due_at: dt.datetime
    context: dict[str, Any]
    signals: list[str]


@dataclass(frozen=True)
class ElapseWait:
    """The waiting run's wait is due: reactivate it and advance to ``target``."""

    run: Run
    target: StepRow
    from_step: str
    now: dt.datetime
    #: A batch closed (design §15): the run goes on to its first step, whose delivery sends
    #: ``render_data`` for every member of batch ``digest_id``; ``details`` explain the close.
    batch: bool = False
    render_data: dict[str, Any] | None = None
    digest_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


Decision: TypeAlias = Advance | Finish | StartWait | ElapseWait | ProgressResult


def rules(step: StepRow) -> list[Rule]:
    return [rule_from_dict(r) for r in step.config.get("progress", [])]


def after_a_signal(run: Run) -> bool:
    """The run was just resumed by a signal: it is decided on the signal, not its delivery."""
    return run.status_reason == SIGNAL_REASON


def converged(delivery: Delivery) -> bool:
    """The delivery has an outcome rules can branch on (then its latest attempt is
    evidence)."""
    return outcome_for(delivery.status, delivery.suppression_reason) is not None


def active(
    run: Run,
    step: StepRow,
    steps: Sequence[StepRow],
    delivery: Delivery | None,
    attempt: LatestAttempt | None,
) -> Decision:
    """What the active run's step rules say now (design §6): the first matching
    ``OnOutcome``/``Stop`` wins; else a ``WaitUntil`` on a terminal outcome; else a terminal
    outcome completes the run; else a Noop with the reason."""
    step_rules = rules(step)
    if after_a_signal(run):
        return after_signal(run, step, steps)
    if delivery is None:
        return Noop(run.id, "no_active_step_delivery")
    outcome = outcome_for(delivery.status, delivery.suppression_reason)
    if outcome is None:
        return Noop(run.id, "prior_delivery_not_converged")
    evidence = Evidence(
        delivery_status=str(delivery.status),
        suppression_reason=delivery.suppression_reason,
        attempt_outcome=None if attempt is None else attempt.outcome,
        attempt_error_class=None if attempt is None else attempt.error_class,
    )
    base = {
        "workflow_outcome": outcome.value,
        "anchor_delivery_id": str(delivery.id),
        "from_step": step.step_key,
    }
    # The run leaves a step whose delivery still retries: those retries must stop.
    supersede = delivery.id if delivery.status == DeliveryStatus.FAILED else None
    for rule in step_rules:
        if isinstance(rule, OnOutcome) and rule.outcome == outcome:
            target = _step(steps, rule.to_step)
            if target is None:
                return Noop(run.id, "unknown_to_step")
            context = {
                **base,
                "rule_kind": "on_outcome",
                "to_step": target.step_key,
                **evidence.as_dict(),
            }
            return Advance(
                run,
                target,
                status_reason="progressed_on_delivery_outcome",
                status_context=context,
                source="progression",
                prior=[
                    Record(
                        "progressed_on_delivery_outcome", context, run.current_step_id, delivery.id
                    )
                ],
                supersede=supersede,
            )
        if isinstance(rule, Stop) and rule.outcome == outcome:
            context = {**base, "rule_kind": "stop", **evidence.as_dict()}
            return Finish(
                moving(
                    run,
                    to=RunState.STOPPED,
                    reason="workflow_stopped",
                    context=context,
                    delivery_id=delivery.id,
                    terminal_reason=f"stopped_on_{outcome.value}",
                ),
                Stopped(run.id, outcome),
                "run.stopped",
                {"outcome": outcome.value},
                supersede=supersede,
            )
    if not is_terminal(outcome):
        return Noop(run.id, "no_matching_progress_rule" if step_rules else "no_progress_rules")
    wait = next((r for r in step_rules if isinstance(r, WaitUntil)), None)
    if wait is not None:
        return start_wait(run, delivery, wait, step_rules)
    return complete(
        run,
        "implicit_completion",
        delivery.id,
        {**base, "rule_kind": "implicit_completion", **evidence.as_dict()},
    )


def start_wait(
    run: Run, delivery: Delivery, wait: WaitUntil, step_rules: Sequence[Rule]
) -> StartWait:
    """Wait ``wait.delay`` after the delivery's terminal time; listen for the wait's cancel
    signals and the events the step's ``OnSignal`` rules branch on."""
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
    events = [*wait.cancel_signals, *(r.event for r in step_rules if isinstance(r, OnSignal))]
    return StartWait(run, delivery.id, due_at, context, list(dict.fromkeys(events)))


def after_signal(run: Run, step: StepRow, steps: Sequence[StepRow]) -> Decision:
    """A signal cancelled the wait: follow the step's ``OnSignal`` rule for it, or complete
    the run (``wait_cancelled_by_signal``)."""
    event = str(run.status_context.get("event_name"))
    rule = next((r for r in rules(step) if isinstance(r, OnSignal) and r.event == event), None)
    if rule is not None:
        target = _step(steps, rule.to_step)
        if target is None:
            return Noop(run.id, "unknown_to_step")
        context = {
            "rule_kind": "on_signal",
            "event_name": event,
            "from_step": step.step_key,
            "to_step": target.step_key,
        }
        return Advance(
            run,
            target,
            status_reason="progressed_on_signal",
            status_context=context,
            source="signal",
            prior=[Record("progressed_on_signal", context, step.id)],
        )
    return complete(
        run,
        "wait_cancelled_by_signal",
        None,
        {"rule_kind": "cancel_signal", "event_name": event, "from_step": step.step_key},
    )


def wait_overturned(
    run: Run,
    step: StepRow,
    steps: Sequence[StepRow],
    delivery: Delivery,
    attempt: LatestAttempt | None,
) -> bool:
    """Provider feedback changed the outcome of the delivery a run waits after (a late
    bounce): whether the step's rules, read with the new outcome, now lead somewhere (an
    ``OnOutcome`` or ``Stop`` on it) rather than to the wait it is in. A new outcome that
    only a wait (or no rule) matches keeps the wait as it is."""
    return isinstance(active(run, step, steps, delivery, attempt), Advance | Finish)


def feedback_reactivation(run: Run, delivery_id: uuid.UUID, context: dict[str, Any]) -> Move:
    """The waiting run goes back to active to be decided on its delivery's new outcome."""
    return moving(
        run, to=RunState.ACTIVE, reason=FEEDBACK_REASON, context=context, delivery_id=delivery_id
    )


def in_batch(run: Run) -> bool:
    """The run waits for its batch to close (it started with a ``Batch``)."""
    return run.state == RunState.WAITING and run.status_context.get("rule_kind") == BATCH_KIND


def batch_open(run: Run, digest_id: uuid.UUID, closes_at: dt.datetime, **details: Any) -> Move:
    """A run that opened a batch waits, on its first step, until the batch closes."""
    context = {
        "rule_kind": BATCH_KIND,
        "digest_id": str(digest_id),
        "due_at": closes_at.isoformat(),
        **details,
    }
    return moving(
        run, to=RunState.WAITING, reason=BATCH_REASON, context=context, suspended_until=closes_at
    )


def waiting(
    run: Run,
    step: StepRow,
    steps: Sequence[StepRow],
    now: dt.datetime,
    *,
    batch_closed: bool = False,
) -> Decision:
    """A waiting run on ``now``: not due yet, or due and leading to its wait's step. A run
    collecting a batch is due when its window ended or the batch filled up
    (``batch_closed``); it then goes on to its first step (the one it is on)."""
    if in_batch(run):
        if not batch_closed and (run.suspended_until is None or run.suspended_until > now):
            return Noop(run.id, "wait_not_due")
        return ElapseWait(run, step, step.step_key, now, batch=True)
    if run.suspended_until is None or run.suspended_until > now:
        return Noop(run.id, "wait_not_due")
    target = _step(steps, str(run.status_context.get("to_step")))
    if target is None:
        return Noop(run.id, "unknown_to_step")
    return ElapseWait(run, target, step.step_key, now)


def reactivation(elapse: ElapseWait) -> Move:
    """The first half of an elapsed wait: waiting -> active, explained."""
    run = elapse.run
    if elapse.batch:
        return moving(
            run,
            to=RunState.ACTIVE,
            reason=BATCH_CLOSED,
            context={**run.status_context, **elapse.details},
        )
    return moving(
        run,
        to=RunState.ACTIVE,
        reason="reactivated_from_wait",
        context={**run.status_context, "reactivated_at": elapse.now.isoformat()},
        delivery_id=_uuid(run.status_context.get("anchor_delivery_id")),
    )


def advance_after_wait(elapse: ElapseWait, reactivated: Run) -> Advance:
    """The second half: the reactivated run advances to the wait's step (a closed batch:
    its first step, with the digest's content)."""
    if elapse.batch:
        return Advance(
            reactivated,
            elapse.target,
            status_reason="progressed_on_batch_closed",
            status_context={
                "rule_kind": BATCH_KIND,
                "workflow_outcome": BATCH_CLOSED,
                "digest_id": elapse.run.status_context.get("digest_id"),
                "from_step": elapse.from_step,
                "to_step": elapse.target.step_key,
                **elapse.details,
            },
            source=BATCH_CLOSED,
            render_data=elapse.render_data,
            digest_id=elapse.digest_id,
            facts=elapse.run.status_context.get("facts"),
        )
    return Advance(
        reactivated,
        elapse.target,
        status_reason="progressed_on_wait_elapsed",
        status_context={
            "rule_kind": "wait_until",
            "workflow_outcome": "wait_elapsed",
            "anchor_delivery_id": elapse.run.status_context.get("anchor_delivery_id"),
            "from_step": elapse.from_step,
            "to_step": elapse.target.step_key,
        },
        source="wait_elapsed",
    )


def elapsed(elapse: ElapseWait) -> Advance:
    """Both halves as one move of the waiting run: reactivated (its transition recorded
    first, ``waiting -> active``) and advanced to the wait's step, written by one guarded
    update, so a batch of due waits costs one run statement, not two."""
    advance = advance_after_wait(elapse, elapse.run)
    return dataclasses.replace(advance, prior=[*reactivation(elapse).records, *advance.prior])


def waiting_move(start: StartWait) -> Move:
    return moving(
        start.run,
        to=RunState.WAITING,
        reason=WAITING_REASON,
        context=start.context,
        delivery_id=start.delivery_id,
        suspended_until=start.due_at,
        pending_signals=start.signals,
    )


def signal_move(run: Run, event_name: str, delivery_id: uuid.UUID | None) -> Move:
    """A waiting run resumed by a signal it listens for. Only the event name is kept: a
    signal's payload never enters a run's context or trace."""
    return moving(
        run,
        to=RunState.ACTIVE,
        reason=SIGNAL_REASON,
        context={"event_name": event_name},
        delivery_id=delivery_id,
    )


def complete(
    run: Run, terminal_reason: str, delivery_id: uuid.UUID | None, context: dict[str, Any]
) -> Finish:
    move = moving(
        run,
        to=RunState.COMPLETED,
        reason="workflow_completed",
        context=context,
        delivery_id=delivery_id,
        terminal_reason=terminal_reason,
    )
    return Finish(
        move,
        Completed(run.id, terminal_reason),
        "run.completed",
        {"terminal_reason": terminal_reason},
    )


def moving(
    run: Run,
    *,
    to: RunState,
    reason: str,
    context: dict[str, Any],
    delivery_id: uuid.UUID | None = None,
    **fields: Any,
) -> Move:
    """A move whose transition's reason doubles as the run's status reason. Fields not given
    (pending signals, suspension, terminal reason) are cleared."""
    return Move(
        run,
        to,
        reason,
        context,
        records=[Record(reason, context, run.current_step_id, delivery_id)],
        **fields,
    )


def _step(steps: Sequence[StepRow], key: str) -> StepRow | None:
    return next((s for s in steps if s.step_key == key), None)


def _uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None
