"""The progression rules of design §6, row by row, with no database: a run, its step, the
step's delivery and its latest attempt in; one decision out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest

from chimeway import (
    Completed,
    Noop,
    OnOutcome,
    OnSignal,
    Step,
    Stop,
    Stopped,
    WaitUntil,
    Workflow,
)
from chimeway.dsl import Rule
from chimeway.engine.progression import decide
from chimeway.engine.progression.decide import Advance, ElapseWait, Finish, StartWait
from chimeway.results import Delivery
from chimeway.store.definitions import StepRow
from chimeway.store.deliveries import LatestAttempt
from chimeway.store.runs import Run
from chimeway.types import (
    AttemptOutcome,
    DeliveryReason,
    DeliveryStatus,
    ErrorClass,
    OrchestrationState,
    Outcome,
    RunState,
)

T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
DEFINITION = uuid.uuid4()


def steps_of(*rules: Rule, extra: tuple[Step, ...] = ()) -> list[StepRow]:
    """Step rows of a workflow whose first step ``a`` carries ``rules``; steps ``b`` and
    ``c`` follow (so rules may lead to them)."""
    workflow = Workflow(
        key="w",
        version=1,
        steps=[
            Step("a", channel="in_app", progress=list(rules)),
            Step("b", channel="email"),
            Step("c", channel="sms"),
            *extra,
        ],
    )
    return [
        StepRow(uuid.uuid4(), DEFINITION, r["step_key"], r["step_order"], r["channel"], r["config"])
        for r in workflow.step_rows()
    ]


def run_on(step: StepRow, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": "t",
        "definition_id": DEFINITION,
        "notification_id": uuid.uuid4(),
        "recipient_id": "u1",
        "current_step_id": step.id,
        "state": RunState.ACTIVE,
        "status_reason": "step_activated",
        "status_context": {},
        "suspended_until": None,
        "pending_signals": [],
        "terminal_reason": None,
        "started_at": T0,
        "last_transition_at": T0,
    }
    values.update(fields)
    return Run(**values)


def delivery(
    step: StepRow, status: DeliveryStatus, reason: DeliveryReason | None = None
) -> Delivery:
    terminal = status in (
        DeliveryStatus.SUCCEEDED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.DIGESTED,
    )
    return Delivery(
        id=uuid.uuid4(),
        notification_id=uuid.uuid4(),
        tenant_id="t",
        recipient_id="u1",
        channel=step.channel,
        status=status,
        suppression_reason=reason,
        orchestration_state=OrchestrationState.READY,
        next_eligible_at=None,
        planning_reason=None,
        planning_context={},
        delay_fallback=False,
        render_data={},
        workflow_run_id=uuid.uuid4(),
        workflow_step_id=step.id,
        provider_message_id=None,
        max_attempts=5,
        retry_at=None,
        created_at=T0,
        updated_at=T0 + dt.timedelta(seconds=2),
        status_changed_at=T0 + dt.timedelta(seconds=2),
        terminal_at=T0 + dt.timedelta(seconds=1) if terminal else None,
    )


SENT = LatestAttempt(AttemptOutcome.SUCCEEDED, None)


def decide_a(
    *rules: Rule,
    status: DeliveryStatus = DeliveryStatus.SUCCEEDED,
    reason: DeliveryReason | None = None,
    attempt: LatestAttempt | None = SENT,
) -> tuple[decide.Decision, Run, Delivery, list[StepRow]]:
    steps = steps_of(*rules)
    run = run_on(steps[0])
    sent = delivery(steps[0], status, reason)
    return decide.active(run, steps[0], steps, sent, attempt), run, sent, steps


# -- which outcome a delivery gives (design §6 outcome mapping) -------------------------

OUTCOMES = [
    (DeliveryStatus.SUCCEEDED, None, Outcome.DELIVERED),
    (DeliveryStatus.SUPPRESSED, DeliveryReason.CHANNEL_DISABLED, Outcome.SUPPRESSED),
    (DeliveryStatus.CANCELLED, DeliveryReason.RETRIES_EXHAUSTED, Outcome.RETRIES_EXHAUSTED),
    (DeliveryStatus.CANCELLED, DeliveryReason.PERMANENT_FAILURE, Outcome.PERMANENT_FAILURE),
    (DeliveryStatus.CANCELLED, DeliveryReason.BOUNCED, Outcome.BOUNCED),
    (DeliveryStatus.FAILED, None, Outcome.TEMPORARY_FAILURE),
]


@pytest.mark.parametrize(("status", "reason", "outcome"), OUTCOMES)
def test_an_on_outcome_rule_advances_on_its_outcome(
    status: DeliveryStatus, reason: DeliveryReason | None, outcome: Outcome
) -> None:
    decision, run, sent, steps = decide_a(
        OnOutcome(outcome=outcome.value, to_step="b"), status=status, reason=reason
    )
    assert isinstance(decision, Advance)
    assert (decision.run, decision.target) == (run, steps[1])
    assert decision.status_reason == "progressed_on_delivery_outcome"
    assert decision.source == "progression"
    assert decision.status_context == {
        "workflow_outcome": outcome.value,
        "anchor_delivery_id": str(sent.id),
        "from_step": "a",
        "rule_kind": "on_outcome",
        "to_step": "b",
        "delivery_status": str(status),
        "suppression_reason": reason,
        "attempt_outcome": "succeeded",
        "attempt_error_class": None,
    }
    [prior] = decision.prior
    assert (prior.reason, prior.step_id, prior.delivery_id) == (
        "progressed_on_delivery_outcome",
        steps[0].id,
        sent.id,
    )
    # Leaving a step whose delivery still retries stops those retries.
    assert decision.supersede == (sent.id if status == DeliveryStatus.FAILED else None)


@pytest.mark.parametrize(("status", "reason", "outcome"), OUTCOMES)
def test_a_stop_rule_stops_on_its_outcome(
    status: DeliveryStatus, reason: DeliveryReason | None, outcome: Outcome
) -> None:
    decision, run, sent, _ = decide_a(Stop(outcome=outcome.value), status=status, reason=reason)
    assert isinstance(decision, Finish)
    assert decision.result == Stopped(run.id, outcome)
    assert decision.move.state == RunState.STOPPED
    assert decision.move.terminal_reason == f"stopped_on_{outcome.value}"
    assert decision.move.status_reason == "workflow_stopped"
    assert decision.move.records[0].delivery_id == sent.id
    assert decision.supersede == (sent.id if status == DeliveryStatus.FAILED else None)


def test_the_first_matching_rule_wins() -> None:
    stop_first, *_ = decide_a(
        Stop(outcome="bounced"),
        OnOutcome(outcome="bounced", to_step="b"),
        status=DeliveryStatus.CANCELLED,
        reason=DeliveryReason.BOUNCED,
    )
    assert isinstance(stop_first, Finish)
    advance_first, _, _, steps = decide_a(
        OnOutcome(outcome="bounced", to_step="c"),
        Stop(outcome="bounced"),
        OnOutcome(outcome="bounced", to_step="b"),
        status=DeliveryStatus.CANCELLED,
        reason=DeliveryReason.BOUNCED,
    )
    assert isinstance(advance_first, Advance)
    assert advance_first.target == steps[2]


def test_rules_on_other_outcomes_are_passed_over() -> None:
    decision, run, _, _ = decide_a(
        OnOutcome(outcome="bounced", to_step="b"), Stop(outcome="permanent_failure")
    )
    assert isinstance(decision, Finish)
    assert decision.result == Completed(run.id, "implicit_completion")


def test_a_terminal_outcome_with_no_rule_completes_the_run() -> None:
    decision, run, sent, _ = decide_a()
    assert isinstance(decision, Finish)
    assert decision.result == Completed(run.id, "implicit_completion")
    assert decision.move.state == RunState.COMPLETED
    assert decision.move.terminal_reason == "implicit_completion"
    assert decision.move.status_context == {
        "workflow_outcome": "delivered",
        "anchor_delivery_id": str(sent.id),
        "from_step": "a",
        "rule_kind": "implicit_completion",
        "delivery_status": "succeeded",
        "suppression_reason": None,
        "attempt_outcome": "succeeded",
        "attempt_error_class": None,
    }


def test_a_wait_starts_only_on_a_terminal_outcome() -> None:
    wait = WaitUntil(delay=dt.timedelta(minutes=30), to_step="b", cancel_signals=["read"])
    waited, run, sent, _ = decide_a(wait, OnSignal(event="clicked", to_step="c"))
    assert isinstance(waited, StartWait)
    assert sent.terminal_at is not None
    assert waited.due_at == sent.terminal_at + dt.timedelta(minutes=30)
    assert waited.signals == ["read", "clicked"]
    assert waited.context == {
        "rule_kind": "wait_until",
        "anchor": "prior_delivery_terminal_at",
        "anchor_delivery_id": str(sent.id),
        "anchor_delivery_status": "succeeded",
        "anchor_timestamp": sent.terminal_at.isoformat(),
        "due_at": waited.due_at.isoformat(),
        "to_step": "b",
    }
    retrying, run, _, _ = decide_a(
        wait,
        status=DeliveryStatus.FAILED,
        attempt=LatestAttempt(AttemptOutcome.FAILED, ErrorClass.TEMPORARY),
    )
    assert retrying == Noop(run.id, "no_matching_progress_rule")


def test_a_signal_listened_for_twice_is_listed_once() -> None:
    wait = WaitUntil(delay=dt.timedelta(minutes=1), to_step="b", cancel_signals=["read"])
    decision, *_ = decide_a(wait, OnSignal(event="read", to_step="c"))
    assert isinstance(decision, StartWait)
    assert decision.signals == ["read"]


def test_a_wait_move_suspends_the_run_until_due() -> None:
    wait = WaitUntil(delay=dt.timedelta(minutes=5), to_step="b", cancel_signals=["read"])
    decision, _, sent, _ = decide_a(wait)
    assert isinstance(decision, StartWait)
    move = decide.waiting_move(decision)
    assert (move.state, move.status_reason) == (RunState.WAITING, "waiting_for_step_progression")
    assert (move.suspended_until, list(move.pending_signals)) == (decision.due_at, ["read"])
    assert move.records[0].delivery_id == sent.id


# -- every Noop reason ------------------------------------------------------------------


def test_no_delivery_for_the_step_is_a_noop() -> None:
    steps = steps_of()
    run = run_on(steps[0])
    assert decide.active(run, steps[0], steps, None, None) == Noop(
        run.id, "no_active_step_delivery"
    )


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (DeliveryStatus.PENDING, None),
        (DeliveryStatus.DISPATCHED, None),
        (DeliveryStatus.DIGESTED, None),
        (DeliveryStatus.CANCELLED, DeliveryReason.SUPERSEDED),
        (DeliveryStatus.CANCELLED, DeliveryReason.MANUAL),
    ],
)
def test_a_delivery_without_an_outcome_is_not_converged(
    status: DeliveryStatus, reason: DeliveryReason | None
) -> None:
    decision, run, sent, _ = decide_a(
        OnOutcome(outcome="delivered", to_step="b"), status=status, reason=reason, attempt=None
    )
    assert decision == Noop(run.id, "prior_delivery_not_converged")
    assert not decide.converged(sent)


def test_a_retrying_delivery_without_rules_is_a_noop() -> None:
    decision, run, _, _ = decide_a(status=DeliveryStatus.FAILED)
    assert decision == Noop(run.id, "no_progress_rules")


def test_a_retrying_delivery_with_rules_for_other_outcomes_is_a_noop() -> None:
    decision, run, _, _ = decide_a(Stop(outcome="bounced"), status=DeliveryStatus.FAILED)
    assert decision == Noop(run.id, "no_matching_progress_rule")


def test_a_rule_to_a_step_the_definition_lacks_is_a_noop() -> None:
    steps = steps_of(OnOutcome(outcome="delivered", to_step="b"))
    run = run_on(steps[0])
    without_b = [s for s in steps if s.step_key != "b"]
    decision = decide.active(
        run, steps[0], without_b, delivery(steps[0], DeliveryStatus.SUCCEEDED), SENT
    )
    assert decision == Noop(run.id, "unknown_to_step")


def test_missing_evidence_is_recorded_as_none() -> None:
    decision, *_ = decide_a(OnOutcome(outcome="delivered", to_step="b"), attempt=None)
    assert isinstance(decision, Advance)
    assert decision.status_context["attempt_outcome"] is None
    assert decision.status_context["attempt_error_class"] is None


# -- after a signal ---------------------------------------------------------------------


def resumed_by(event: str, *rules: Rule) -> tuple[decide.Decision, Run, list[StepRow]]:
    steps = steps_of(*rules)
    run = run_on(steps[0], status_reason="signal_received", status_context={"event_name": event})
    return decide.active(run, steps[0], steps, None, None), run, steps


def test_an_on_signal_rule_advances_on_its_event() -> None:
    wait = WaitUntil(delay=dt.timedelta(hours=1), to_step="b", cancel_signals=["read"])
    decision, _, steps = resumed_by("clicked", wait, OnSignal(event="clicked", to_step="c"))
    assert isinstance(decision, Advance)
    assert decision.target == steps[2]
    assert (decision.status_reason, decision.source) == ("progressed_on_signal", "signal")
    assert decision.status_context == {
        "rule_kind": "on_signal",
        "event_name": "clicked",
        "from_step": "a",
        "to_step": "c",
    }
    assert decision.supersede is None


def test_a_cancel_signal_without_a_rule_completes_the_run() -> None:
    wait = WaitUntil(delay=dt.timedelta(hours=1), to_step="b", cancel_signals=["read"])
    decision, run, _ = resumed_by("read", wait, OnSignal(event="clicked", to_step="c"))
    assert isinstance(decision, Finish)
    assert decision.result == Completed(run.id, "wait_cancelled_by_signal")
    assert decision.move.status_context == {
        "rule_kind": "cancel_signal",
        "event_name": "read",
        "from_step": "a",
    }


def test_an_on_signal_rule_to_a_missing_step_is_a_noop() -> None:
    wait = WaitUntil(delay=dt.timedelta(hours=1), to_step="b")
    steps = steps_of(wait, OnSignal(event="clicked", to_step="c"))
    run = run_on(
        steps[0], status_reason="signal_received", status_context={"event_name": "clicked"}
    )
    assert decide.after_signal(run, steps[0], steps[:2]) == Noop(run.id, "unknown_to_step")


def test_a_signal_move_keeps_only_the_event_name() -> None:
    steps = steps_of()
    run = run_on(steps[0], state=RunState.WAITING, suspended_until=T0)
    move = decide.signal_move(run, "read", None)
    assert (move.state, move.status_reason, move.status_context) == (
        RunState.ACTIVE,
        "signal_received",
        {"event_name": "read"},
    )
    assert move.suspended_until is None and list(move.pending_signals) == []


# -- waiting runs -----------------------------------------------------------------------


def waiting_run(steps: list[StepRow], due: dt.datetime, to_step: str = "b") -> Run:
    return run_on(
        steps[0],
        state=RunState.WAITING,
        status_reason="waiting_for_step_progression",
        status_context={"to_step": to_step, "anchor_delivery_id": str(uuid.uuid4())},
        suspended_until=due,
    )


def test_a_wait_not_due_is_a_noop() -> None:
    steps = steps_of()
    run = waiting_run(steps, T0)
    before = T0 - dt.timedelta(microseconds=1)
    assert decide.waiting(run, steps[0], steps, before) == Noop(run.id, "wait_not_due")


def test_a_due_wait_elapses_to_its_step() -> None:
    steps = steps_of()
    run = waiting_run(steps, T0)
    decision = decide.waiting(run, steps[0], steps, T0)
    assert decision == ElapseWait(run, steps[1], "a", T0)
    assert isinstance(decision, ElapseWait)
    move = decide.reactivation(decision)
    assert (move.state, move.status_reason) == (RunState.ACTIVE, "reactivated_from_wait")
    assert move.status_context == {**run.status_context, "reactivated_at": T0.isoformat()}
    assert str(move.records[0].delivery_id) == run.status_context["anchor_delivery_id"]
    reactivated = dataclasses.replace(run, state=RunState.ACTIVE)
    advance = decide.advance_after_wait(decision, reactivated)
    assert (advance.run, advance.target, advance.source) == (reactivated, steps[1], "wait_elapsed")
    assert advance.status_context == {
        "rule_kind": "wait_until",
        "workflow_outcome": "wait_elapsed",
        "anchor_delivery_id": run.status_context["anchor_delivery_id"],
        "from_step": "a",
        "to_step": "b",
    }


def test_an_elapsed_wait_is_one_move_recording_its_reactivation_first() -> None:
    steps = steps_of()
    run = waiting_run(steps, T0)
    decision = decide.waiting(run, steps[0], steps, T0)
    assert isinstance(decision, ElapseWait)
    one = decide.elapsed(decision)
    reactivation = decide.reactivation(decision)
    two = decide.advance_after_wait(decision, run)
    # The waiting run itself, moved straight to the wait's step by one guarded update.
    assert (one.run, one.target, one.source) == (run, steps[1], "wait_elapsed")
    assert one.status_context == two.status_context
    assert list(one.prior) == [*reactivation.records, *two.prior]
    assert one.prior[0].reason == "reactivated_from_wait"


def test_a_due_wait_to_a_missing_step_is_a_noop() -> None:
    steps = steps_of()
    run = waiting_run(steps, T0, to_step="nowhere")
    assert decide.waiting(run, steps[0], steps, T0) == Noop(run.id, "unknown_to_step")


def test_a_waiting_run_without_a_due_time_is_not_due() -> None:
    steps = steps_of()
    run = dataclasses.replace(waiting_run(steps, T0), suspended_until=None)
    assert decide.waiting(run, steps[0], steps, T0) == Noop(run.id, "wait_not_due")


# -- provider feedback on a waiting run -------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "overturned"),
    [
        ((OnOutcome(outcome="bounced", to_step="b"), WaitUntil(delay=60, to_step="c")), True),
        ((Stop(outcome="bounced"), WaitUntil(delay=60, to_step="c")), True),
        ((WaitUntil(delay=60, to_step="c"),), False),  # only the wait matches: it goes on
        ((OnOutcome(outcome="suppressed", to_step="b"), WaitUntil(delay=60, to_step="c")), False),
    ],
)
def test_a_late_bounce_overturns_a_wait_only_when_a_rule_names_it(
    rules: tuple[Rule, ...], overturned: bool
) -> None:
    steps = steps_of(*rules)
    waiting = run_on(
        steps[0],
        state=RunState.WAITING,
        status_reason=decide.WAITING_REASON,
        suspended_until=T0 + dt.timedelta(hours=1),
    )
    bounced = delivery(steps[0], DeliveryStatus.CANCELLED, DeliveryReason.BOUNCED)
    assert decide.wait_overturned(waiting, steps[0], steps, bounced, SENT) is overturned


def test_the_feedback_reactivation_explains_itself_and_clears_the_wait() -> None:
    steps = steps_of(WaitUntil(delay=60, to_step="c", cancel_signals=["x"]))
    waiting = run_on(
        steps[0],
        state=RunState.WAITING,
        status_reason=decide.WAITING_REASON,
        suspended_until=T0,
        pending_signals=["x"],
    )
    delivery_id = uuid.uuid4()
    move = decide.feedback_reactivation(waiting, delivery_id, {"feedback_kind": "bounced"})
    assert (move.state, move.status_reason) == (RunState.ACTIVE, "reactivated_on_feedback")
    assert (move.suspended_until, list(move.pending_signals)) == (None, [])
    [record] = move.records
    assert (record.reason, record.delivery_id, record.context) == (
        "reactivated_on_feedback",
        delivery_id,
        {"feedback_kind": "bounced"},
    )


# -- a run collecting a batch (design §15) -----------------------------------------------


def batch_run(step: StepRow, **fields: Any) -> Run:
    digest = uuid.uuid4()
    opened = decide.batch_open(run_on(step), digest, T0 + dt.timedelta(minutes=10), channel="b")
    assert opened.state == RunState.WAITING
    assert opened.status_reason == decide.BATCH_REASON
    assert opened.suspended_until == T0 + dt.timedelta(minutes=10)
    assert opened.pending_signals == ()  # no signal ends a batch
    return run_on(
        step,
        state=RunState.WAITING,
        status_reason=opened.status_reason,
        status_context=opened.status_context,
        suspended_until=opened.suspended_until,
        **fields,
    )


def test_a_batch_is_not_due_before_its_window_ends_unless_it_filled_up() -> None:
    steps = steps_of()
    run = batch_run(steps[0])
    assert decide.in_batch(run)
    early = T0 + dt.timedelta(minutes=9)
    assert decide.waiting(run, steps[0], steps, early) == Noop(run.id, "wait_not_due")
    full = decide.waiting(run, steps[0], steps, early, batch_closed=True)
    assert isinstance(full, ElapseWait) and full.batch and full.target == steps[0]
    due = decide.waiting(run, steps[0], steps, T0 + dt.timedelta(minutes=10))
    assert isinstance(due, ElapseWait) and due.batch


def test_a_closed_batch_goes_on_to_its_first_step_with_the_digest() -> None:
    steps = steps_of()
    run = batch_run(steps[0])
    due = decide.waiting(run, steps[0], steps, T0 + dt.timedelta(minutes=10))
    assert isinstance(due, ElapseWait)
    digest = uuid.uuid4()
    closed = dataclasses.replace(
        due,
        render_data={"subject": "3 new"},
        digest_id=digest,
        details={"close_reason": "window_elapsed", "members": 3},
    )
    move = decide.reactivation(closed)
    assert (move.state, move.status_reason) == (RunState.ACTIVE, decide.BATCH_CLOSED)
    assert move.status_context["close_reason"] == "window_elapsed"
    advance = decide.advance_after_wait(closed, run_on(steps[0]))
    assert isinstance(advance, Advance)
    assert advance.target == steps[0]
    assert (advance.render_data, advance.digest_id) == ({"subject": "3 new"}, digest)
    assert advance.source == decide.BATCH_CLOSED
    assert advance.status_context["members"] == 3


def test_a_plain_wait_is_not_a_batch() -> None:
    steps = steps_of(WaitUntil(delay=dt.timedelta(hours=1), to_step="b"))
    run = run_on(
        steps[0],
        state=RunState.WAITING,
        status_context={"rule_kind": "wait_until", "to_step": "b"},
        suspended_until=T0,
    )
    assert not decide.in_batch(run)
    elapsed = decide.waiting(run, steps[0], steps, T0, batch_closed=True)
    assert isinstance(elapsed, ElapseWait) and not elapsed.batch and elapsed.target == steps[1]
