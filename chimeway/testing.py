"""Helpers for testing code that uses Chimeway (public, documented in docs/testing.md).

* :func:`drain` runs every due Chimeway job in this process, through Procrastinate's own
  worker, until none is left; so a test can trigger, drain, and assert on the results.
* :class:`RecordingAdapter` records what would have been sent and can be scripted to fail.
* :func:`make_run` builds one workflow run in any state (active on any step with its delivery
  in any status, waiting, completed, stopped), through the same guarded moves as the engine;
  :func:`seed_waiting_runs` builds many waiting runs at once, server-side (benchmarks).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chimeway.adapters import DeliveryFailure, DeliveryRequest, Sent
from chimeway.app import Chimeway
from chimeway.db import Conn
from chimeway.dsl import OnSignal, WaitUntil, Workflow
from chimeway.engine import deliver, signals, webhooks
from chimeway.engine.progression import decide, progress_timer_in
from chimeway.errors import InvalidArgument
from chimeway.outcomes import outcome_for
from chimeway.store import clock, deliveries, events, factories, jobs, runs
from chimeway.store.definitions import Definition
from chimeway.store.deliveries import NewAttempt, PlannedDelivery
from chimeway.store.factories import Seeded, WaitingSeed
from chimeway.store.jobs import QUEUES, TASKS
from chimeway.store.runs import Move, Record, Run
from chimeway.types import (
    AttemptOutcome,
    DeliveryReason,
    DeliveryStatus,
    ErrorClass,
    Outcome,
    RunState,
)

Scripted = Sent | DeliveryFailure | Exception


class RecordingAdapter:
    """An adapter that sends nothing and remembers every request.

    ``script`` (or :meth:`then`) lists what the next calls return or raise, in order; once it
    runs out, calls succeed. The sends of a fan-out's chunk run side by side, so which of
    them takes which answer is arbitrary: script a fan-out with ``send_concurrency=1`` on the
    ``Chimeway`` under test, or key the answers by recipient in an adapter of your own.
    ``sent`` holds the requests that succeeded, ``requests`` all.
    """

    def __init__(self, script: Iterable[Scripted] = ()) -> None:
        self._script: deque[Scripted] = deque(script)
        self._lock = threading.Lock()
        self.requests: list[DeliveryRequest] = []
        self.sent: list[DeliveryRequest] = []

    def then(self, *results: Scripted) -> RecordingAdapter:
        with self._lock:
            self._script.extend(results)
        return self

    def deliver(self, request: DeliveryRequest) -> Sent:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.popleft() if self._script else None
            if scripted is None or isinstance(scripted, Sent):
                self.sent.append(request)
        if isinstance(scripted, Exception):
            raise scripted
        return scripted or Sent(provider_message_id=f"recorded-{request.delivery_id}")

    def sent_to(self, recipient_id: str) -> list[DeliveryRequest]:
        return [r for r in self.sent if r.recipient_id == recipient_id]


def due_jobs(cw: Chimeway, queues: Iterable[str] | None = None, conn: Conn | None = None) -> int:
    """How many jobs in ``queues`` (default: Chimeway's) are due now (seen from ``conn``'s
    transaction when given)."""
    names = list(queues or set(QUEUES.values()))
    if conn is not None:
        return jobs.due_count(conn, names)
    with cw.pool.connection() as own:
        return jobs.due_count(own, names)


def drain(
    cw: Chimeway,
    queues: Iterable[str] | None = None,
    max_rounds: int = 50,
    conn: Conn | None = None,
    *,
    tenant_id: str | None = None,
    event_ids: Iterable[uuid.UUID | str] | None = None,
) -> None:
    """Run every due job in ``queues`` (default: Chimeway's), including the jobs those jobs
    defer, until none is due. Jobs scheduled in the future are left alone.

    Without ``conn``, through Procrastinate's own worker, on committed rows. With ``conn``,
    inside that connection's transaction (what the jobs would do, done by the engine on
    ``conn``; a job that raises raises here): tests can then run in a transaction they roll
    back, as Django's ``TestCase`` does. Adapters are called inside that transaction.

    ``tenant_id`` and ``event_ids`` scope the drain to the jobs about that tenant's rows
    and about those events' deliveries and runs (a signal belongs to a tenant, so with
    ``event_ids`` the signals of those events' tenants are routed); other jobs (other
    tenants', other tests', maintenance and your own tasks) are left queued. A chunk job
    whose deliveries are partly in scope sends only those and stays queued for the rest.
    A scoped drain runs the jobs in this process through the engine, each in a transaction
    of its own (or in ``conn``'s), and a job that raises raises here."""
    names = sorted(set(queues or QUEUES.values()))
    scope = None
    if tenant_id is not None or event_ids is not None:
        scope = _Scope(
            tenant_id,
            None if event_ids is None else frozenset(_event_id(e) for e in event_ids),
        )
    if conn is not None:
        _drain_in(cw, conn, names, max_rounds, scope)
        return
    if scope is not None:
        _drain_scoped(cw, names, max_rounds, scope)
        return
    for _ in range(max_rounds):
        if due_jobs(cw, names) == 0:
            _raise_failures(cw, names)
            return
        cw.procrastinate.run_worker(
            queues=names,
            wait=False,
            install_signal_handlers=False,
            listen_notify=False,
            concurrency=1,
        )
    raise RuntimeError(f"jobs were still due after {max_rounds} rounds of draining")


def _event_id(value: uuid.UUID | str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument(f"event_ids must be event ids, got {value!r}") from None


@dataclass(frozen=True)
class _Scope:
    tenant_id: str | None
    event_ids: frozenset[uuid.UUID] | None


@dataclass(frozen=True)
class _Work:
    """A due job to run: its task and the ids in scope; ``whole``: all of its ids are."""

    job_id: int
    task: str
    ids: list[uuid.UUID]
    whole: bool


#: Task -> the kind of row its job names, and the argument that names it (or them).
_SUBJECT_ARGS = {
    TASKS["deliver"]: ("delivery", "delivery_id"),
    TASKS["deliver_many"]: ("delivery", "delivery_ids"),
    TASKS["progress"]: ("run", "run_id"),
    TASKS["route_signal"]: ("signal", "signal_id"),
    TASKS["process_webhook"]: ("ingress", "ingress_id"),
}


def _ids(job: jobs.QueuedJob) -> list[uuid.UUID]:
    _, arg = _SUBJECT_ARGS[job.task_name]
    value = job.args[arg]
    return [uuid.UUID(v) for v in (value if isinstance(value, list) else [value])]


def _select(conn: Conn, due: list[jobs.QueuedJob], scope: _Scope | None) -> list[_Work]:
    """The work among ``due`` jobs that is in ``scope`` (all of it without one)."""
    if scope is None:
        return [
            _Work(j.id, j.task_name, _ids(j) if j.task_name in _SUBJECT_ARGS else [], True)
            for j in due
        ]
    known = [j for j in due if j.task_name in _SUBJECT_ARGS]
    named: dict[str, list[uuid.UUID]] = {"delivery": [], "run": [], "signal": [], "ingress": []}
    for job in known:
        named[_SUBJECT_ARGS[job.task_name][0]].extend(_ids(job))
    found = jobs.subjects(
        conn,
        delivery_ids=named["delivery"],
        run_ids=named["run"],
        signal_ids=named["signal"],
        ingress_ids=named["ingress"],
        event_ids=sorted(scope.event_ids or ()),
    )
    tenants = {s.tenant_id for s in found if s.kind == "event"}
    owners = {(s.kind, s.id): s for s in found if s.kind != "event"}

    def admits(subject: jobs.Subject | None) -> bool:
        if subject is None or (
            scope.tenant_id is not None and subject.tenant_id != scope.tenant_id
        ):
            return False
        if scope.event_ids is None:
            return True
        if subject.event_id is None:  # a signal: routed for its tenant
            return subject.tenant_id in tenants
        return subject.event_id in scope.event_ids

    work = []
    for job in known:
        kind = _SUBJECT_ARGS[job.task_name][0]
        ids = _ids(job)
        wanted = [i for i in ids if admits(owners.get((kind, i)))]
        if wanted:
            work.append(_Work(job.id, job.task_name, wanted, len(wanted) == len(ids)))
    return work


def _run(cw: Chimeway, conn: Conn, work: _Work, *, scoped: bool) -> None:
    """Do what ``work``'s job does, in ``conn``'s transaction."""
    engine = cw.engine
    if work.task in (TASKS["deliver"], TASKS["deliver_many"]):
        deliver.deliver_in(engine, conn, work.ids)
    elif work.task == TASKS["progress"]:
        progress_timer_in(engine, conn, work.ids[0], take_along=not scoped)
    elif work.task == TASKS["route_signal"]:
        signals.route_signal(engine, conn, work.ids[0])
    elif work.task == TASKS["process_webhook"]:
        webhooks.process_ingress(engine, conn, work.ids[0])
    else:
        raise RuntimeError(f"drain(conn=...) cannot run {work.task} jobs in a transaction")


def _drain_in(
    cw: Chimeway, conn: Conn, queues: list[str], max_rounds: int, scope: _Scope | None = None
) -> None:
    kept: set[int] = set()  # partly in scope: their in-scope ids are done
    for _ in range(max_rounds):
        due = [j for j in jobs.lock_due(conn, queues) if j.id not in kept]
        work = _select(conn, due, scope)
        if not work:
            return
        for item in work:
            if item.whole:
                jobs.delete(conn, item.job_id)
            else:
                kept.add(item.job_id)
            _run(cw, conn, item, scoped=scope is not None)
    raise RuntimeError(f"jobs were still due after {max_rounds} rounds of draining")


def _drain_scoped(cw: Chimeway, queues: list[str], max_rounds: int, scope: _Scope) -> None:
    """A scoped drain on committed rows: each round takes the due jobs in scope off the
    queue in one transaction, then does their work, each in a transaction of its own
    (sends outside any, as a worker does)."""
    engine = cw.engine
    kept: set[int] = set()
    for _ in range(max_rounds):
        with engine.transaction() as conn:
            due = [j for j in jobs.lock_due(conn, queues) if j.id not in kept]
            work = _select(conn, due, scope)
            for item in work:
                if item.whole:
                    jobs.delete(conn, item.job_id)
                else:
                    kept.add(item.job_id)
        if not work:
            return
        for item in work:
            if item.task in (TASKS["deliver"], TASKS["deliver_many"]):
                deliver.deliver_many(engine, item.ids)
            else:
                with engine.transaction() as conn:
                    _run(cw, conn, item, scoped=True)
    raise RuntimeError(f"jobs were still due after {max_rounds} rounds of draining")


def _raise_failures(cw: Chimeway, queues: list[str]) -> None:
    """A task that raised is either failed or waiting for its retry: a test must hear of it."""
    with cw.pool.connection() as conn:
        failing = jobs.failing(conn, queues)
    if failing:
        listed = ", ".join(f"{job.task_name}[{job.id}] ({job.status})" for job in failing)
        raise AssertionError(f"jobs failed while draining: {listed}")


# -- factories -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MadeRun:
    """A run :func:`make_run` built, and the delivery of each step it reached."""

    run_id: uuid.UUID
    notification_id: uuid.UUID
    event_id: uuid.UUID
    delivery_ids: dict[str, uuid.UUID] = field(default_factory=dict)


_TERMINAL_ON_SEND = {
    DeliveryReason.BOUNCED: (AttemptOutcome.BOUNCED, ErrorClass.BOUNCED),
    DeliveryReason.PERMANENT_FAILURE: (AttemptOutcome.REJECTED, ErrorClass.PERMANENT),
    DeliveryReason.RETRIES_EXHAUSTED: (AttemptOutcome.FAILED, ErrorClass.TEMPORARY),
}


def make_run(
    cw: Chimeway,
    workflow: Workflow,
    *,
    state: RunState | str = RunState.ACTIVE,
    step: str | None = None,
    delivery: DeliveryStatus | str | None = None,
    reason: DeliveryReason | str | None = None,
    due_at: dt.datetime | None = None,
    tenant_id: str = "t",
    recipient_id: str = "u1",
    notification_key: str = "factory",
    contents: Mapping[str, dict[str, Any]] | None = None,
    conn: Conn | None = None,
) -> MadeRun:
    """A run of ``workflow`` in the given ``state``, on ``step`` (default: the first), whose
    step delivery has status ``delivery`` (default: ``pending`` for an active run,
    ``succeeded`` otherwise; ``reason`` for ``cancelled``/``suppressed``). Earlier steps'
    deliveries succeeded. A ``waiting`` run waits until ``due_at`` (default: an hour from
    now) on its step's ``WaitUntil``; a ``stopped`` run stopped on its delivery's outcome.
    Every row is written through the engine's guarded moves, with the jobs that would follow
    (a pending delivery's ``deliver`` job, a wait's timer), in one transaction (the caller's,
    with ``conn``)."""
    target_state = RunState(state)
    status = DeliveryStatus(
        delivery
        or (DeliveryStatus.PENDING if target_state == RunState.ACTIVE else DeliveryStatus.SUCCEEDED)
    )
    why = DeliveryReason(reason) if reason is not None else None
    engine = cw.engine
    with engine.transaction(conn) as tx:
        event_id = events.insert(
            tx,
            tenant_id=tenant_id,
            notification_key=notification_key,
            notification_version=1,
            idempotency_key=f"factory-{uuid.uuid4()}",
            correlation_id=None,
            payload={},
        )
        assert event_id is not None
        channels = dict.fromkeys(s.channel for s in workflow.steps)
        body = dict(contents or {c: {"factory": True} for c in channels})
        [notification_id] = events.insert_notifications(
            tx, event_id, tenant_id, None, [events.NewNotification(recipient_id, "user", {}, body)]
        )
        definition = engine.catalog.ensure_definition(tx, notification_key, workflow)
        started = runs.create_initial_runs(
            tx, tenant_id, [runs.NewRun(notification_id, recipient_id, definition)]
        )
        run = runs.get(tx, started[notification_id])
        keys = [s.step_key for s in definition.steps]
        wanted = step or keys[0]
        if wanted not in keys:
            raise InvalidArgument(f"workflow {workflow.key!r} has no step {wanted!r}")
        made: dict[str, uuid.UUID] = {}
        for key in keys[: keys.index(wanted) + 1]:
            if key != keys[0]:
                run = _advance_to(tx, run, definition, key)
            made[key] = _plan(engine.retry_policy, tx, run, definition, key)
            last = key == wanted
            _converge(
                tx, made[key], status if last else DeliveryStatus.SUCCEEDED, why if last else None
            )
        current = deliveries.get(tx, made[wanted])
        if current.status == DeliveryStatus.PENDING:
            engine.deferrer.deliver(tx, [current.id])
        _settle(engine, tx, run, definition, current, target_state, due_at)
    return MadeRun(run.id, notification_id, event_id, made)


def _advance_to(tx: Conn, run: Run, definition: Definition, key: str) -> Run:
    target = definition.step(key)
    assert target is not None
    return runs.update_runs(
        tx,
        [
            Move(
                run,
                RunState.ACTIVE,
                "progressed_on_delivery_outcome",
                {"rule_kind": "factory", "to_step": key},
                current_step_id=target.id,
                records=[
                    Record("step_activated", {"step_key": key, "source": "factory"}, target.id)
                ],
            )
        ],
    )[0]


def _plan(retry: Any, tx: Conn, run: Run, definition: Definition, key: str) -> uuid.UUID:
    target = definition.step(key)
    assert target is not None
    [row] = deliveries.insert_many(
        tx,
        [
            PlannedDelivery(
                notification_id=run.notification_id,
                tenant_id=run.tenant_id,
                recipient_id=run.recipient_id,
                channel=target.channel,
                render_data=None,
                max_attempts=retry(target.channel).max_attempts,
                workflow_run_id=run.id,
                workflow_step_id=target.id,
            )
        ],
    )
    return row.id


def _converge(
    tx: Conn, delivery_id: uuid.UUID, status: DeliveryStatus, reason: DeliveryReason | None
) -> None:
    """Move a pending delivery to ``status`` along the state machine, with the attempt a
    send would have recorded."""
    if status == DeliveryStatus.PENDING:
        return
    if status == DeliveryStatus.SUPPRESSED:
        _move(tx, delivery_id, status, "factory", reason or DeliveryReason.MANUAL)
        return
    if status == DeliveryStatus.CANCELLED and reason not in _TERMINAL_ON_SEND:
        _move(tx, delivery_id, status, "factory", reason or DeliveryReason.MANUAL)
        return
    _move(tx, delivery_id, DeliveryStatus.DISPATCHED, "dispatched")
    if status == DeliveryStatus.DISPATCHED:
        return
    started = clock.now(tx)
    if status == DeliveryStatus.SUCCEEDED:
        attempt = NewAttempt(delivery_id, AttemptOutcome.SUCCEEDED, started)
    elif status == DeliveryStatus.FAILED:
        attempt = NewAttempt(delivery_id, AttemptOutcome.FAILED, started, ErrorClass.TEMPORARY)
    elif status == DeliveryStatus.CANCELLED and reason is not None:
        outcome, error_class = _TERMINAL_ON_SEND[reason]
        attempt = NewAttempt(delivery_id, outcome, started, error_class)
    else:
        raise InvalidArgument(f"make_run cannot build a delivery in status {status!r}")
    deliveries.lock_many(tx, [delivery_id])
    deliveries.append_attempts(tx, [attempt])
    _move(tx, delivery_id, status, "factory", reason)


def _move(
    tx: Conn,
    delivery_id: uuid.UUID,
    to: DeliveryStatus,
    why: str,
    reason: DeliveryReason | None = None,
) -> None:
    moved = deliveries.transition_many(
        tx, [deliveries.Move(delivery_id, to, why, reason if to.terminal else None)]
    )
    if not moved:
        raise InvalidArgument(f"make_run cannot move a delivery to {to} ({reason})")


def _settle(
    engine: Any,
    tx: Conn,
    run: Run,
    definition: Definition,
    current: Any,
    state: RunState,
    due_at: dt.datetime | None,
) -> None:
    if state == RunState.ACTIVE:
        return
    step = next(s for s in definition.steps if s.id == run.current_step_id)
    rules = decide.rules(step)
    if state == RunState.WAITING:
        wait = next((r for r in rules if isinstance(r, WaitUntil)), None)
        if wait is None or not current.terminal:
            raise InvalidArgument(
                f"a waiting run needs a WaitUntil on step {step.step_key!r} and a delivery "
                f"with an outcome (it is {current.status})"
            )
        start = decide.start_wait(run, current, wait, rules)
        when = due_at or clock.now(tx) + dt.timedelta(hours=1)
        context = {**start.context, "due_at": when.isoformat()}
        [waiting] = runs.update_runs(
            tx,
            [decide.waiting_move(decide.StartWait(run, current.id, when, context, start.signals))],
        )
        if when <= clock.now(tx) + engine.settings.maintenance.timer_horizon:
            engine.deferrer.timers(tx, [(waiting.id, when)])
        return
    if state == RunState.COMPLETED:
        move = decide.complete(
            run, "implicit_completion", current.id, {"rule_kind": "factory"}
        ).move
    elif state == RunState.STOPPED:
        outcome = _outcome(current)
        move = decide.moving(
            run,
            to=RunState.STOPPED,
            reason="workflow_stopped",
            context={"rule_kind": "factory", "workflow_outcome": outcome},
            delivery_id=current.id,
            terminal_reason=f"stopped_on_{outcome}",
        )
    else:
        move = decide.moving(run, to=state, reason="factory", context={}, delivery_id=current.id)
    runs.update_runs(tx, [move])


def _outcome(current: Any) -> str:
    found: Outcome | None = outcome_for(current.status, current.suppression_reason)
    return found.value if found is not None else str(current.status)


def seeded_run_id(i: int) -> uuid.UUID:
    """The id :func:`seed_waiting_runs` gave its ``i``-th run (0-based)."""
    return uuid.UUID(hashlib.md5(f"r{i}".encode()).hexdigest())


def seed_waiting_runs(
    cw: Chimeway,
    workflow: Workflow,
    *,
    runs_count: int,
    due: int,
    spread: dt.timedelta = dt.timedelta(hours=24),
    notification_key: str = "factory",
    contents: Mapping[str, dict[str, Any]] | None = None,
    tenant_id: str = "t",
    fast: bool = False,
) -> list[Seeded]:
    """``runs_count`` runs waiting after their delivered first step, built server-side with
    ``generate_series`` (a million in a couple of minutes): ``due`` of them are due now, the
    others fall due evenly over ``spread``; waits due within the timer horizon have their
    timer job. The first step needs a ``WaitUntil``. Run ids: :func:`seeded_run_id`.
    ``fast`` skips per-row trigger work while seeding (needs a superuser), then checks that
    every foreign key holds. Then VACUUM ANALYZE. Rows written per table, with timings."""
    if not 1 <= due <= runs_count:
        raise InvalidArgument(f"due must be between 1 and runs_count, not {due}")
    first = workflow.steps[0]
    wait = next((r for r in first.progress if isinstance(r, WaitUntil)), None)
    if wait is None:
        raise InvalidArgument(f"step {first.key!r} of {workflow.key!r} has no WaitUntil")
    signals = [*wait.cancel_signals, *(r.event for r in first.progress if isinstance(r, OnSignal))]
    engine = cw.engine
    with engine.transaction() as tx:
        definition = engine.catalog.ensure_definition(tx, notification_key, workflow)
    seed = WaitingSeed(
        tenant_id=tenant_id,
        notification_key=notification_key,
        definition_id=definition.id,
        step_id=definition.first_step.id,
        step_key=first.key,
        channel=first.channel,
        to_step=wait.to_step,
        signals=list(dict.fromkeys(signals)),
        contents=dict(contents or {s.channel: {"factory": True} for s in workflow.steps}),
        runs=runs_count,
        stride=runs_count // due,
        spread=spread,
        horizon=engine.settings.maintenance.timer_horizon,
    )
    with engine.pool.connection() as conn:
        conn.autocommit = True
        try:
            if fast:
                factories.fast_on(conn)
            done = factories.seed_waiting(conn, seed)
            if fast:
                factories.fast_off(conn)
                left = factories.orphans(conn)
                if left:
                    raise AssertionError(f"seeding left {left} row(s) without their parent")
            started = dt.datetime.now(dt.UTC)
            factories.analyze(conn)
            took = (dt.datetime.now(dt.UTC) - started).total_seconds()
        finally:
            conn.autocommit = False
    return [*done, Seeded("VACUUM ANALYZE", 0, took)]


__all__ = [
    "MadeRun",
    "RecordingAdapter",
    "Seeded",
    "drain",
    "due_jobs",
    "make_run",
    "seed_waiting_runs",
    "seeded_run_id",
]
