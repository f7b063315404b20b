"""Delivering: claim deliveries, call their adapters, record the attempts (design §5).

Three steps, with the adapter calls between two short transactions, so no transaction or
row lock is held while a provider is slow. A ``deliver`` job carries one delivery or a chunk
of a fan-out; either way one statement claims them (held by this process, which beats while
it holds them: :mod:`chimeway.engine.liveness`), the adapter calls run side by side on their
adapters' own lanes (:mod:`chimeway.engine.senders`: a hung provider holds only its lane and
is given up at its deadline), and each small group of sends is recorded as soon as it
finished (:mod:`chimeway.engine.recording`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

import psycopg

from chimeway import logs, telemetry
from chimeway.adapters import RecipientProfile
from chimeway.db import Conn
from chimeway.engine import logbook, planning, preferences, sending
from chimeway.engine.context import Engine
from chimeway.engine.progression import drive
from chimeway.engine.recording import Sent, record, record_in
from chimeway.engine.senders import Lane
from chimeway.results import DeliverResult, Delivery
from chimeway.store import deliveries, jobs, traces
from chimeway.store.deliveries import PlannedRow
from chimeway.types import DeliveryStatus, OrchestrationState

logger = logging.getLogger(__name__)

S = DeliveryStatus

#: How often the caller looks for sends past their deadline.
WATCH = 1.0
#: The most steps of one run a job sends one after the other (chained steps).
MAX_CHAIN = 16
#: A ``deliver`` job whose delivery waited this long since it was planned takes the jobs
#: queued behind it along (:func:`_gather`).
BACKLOG_AFTER = dt.timedelta(milliseconds=20)

#: A claimed delivery (moved to dispatched), its attempt number and its recipient's profile.
_Claimed = tuple[Delivery, int, RecipientProfile | None]


def deliver(engine: Engine, delivery_id: uuid.UUID, *, chain: bool = False) -> DeliverResult:
    """Send one delivery if it is due; safe to call twice or concurrently. With ``chain``
    (a ``deliver`` job), its run's next steps that are due at once are sent too
    (:class:`_Chain`)."""
    return deliver_many(engine, [delivery_id], chain=chain)[0]


def deliver_many(
    engine: Engine, delivery_ids: Sequence[uuid.UUID], *, chain: bool = False
) -> list[DeliverResult]:
    """Send the deliveries that are due (what one ``deliver`` job does): one claim for all,
    the adapter calls side by side on their lanes, each group of finished sends recorded at
    once. Safe to call twice or concurrently; one result per distinct id, in order. With
    ``chain`` and a lone delivery of a run, its run's next steps that are due at once are
    sent after it (:class:`_Chain`)."""
    ids = list(dict.fromkeys(delivery_ids))
    if not telemetry.tracing():
        return _deliver_held(engine, ids, {}, chain=chain)
    # The sends continue their triggers' traces: the job's span is a child of the first
    # traced trigger and links the others' (a chunk may hold several triggers' deliveries).
    with engine.pool.connection() as conn:
        parents = traces.for_deliveries(conn, ids)
    traced = list(dict.fromkeys(parents[d] for d in ids if d in parents))
    with telemetry.span(
        "chimeway.deliver",
        parent=traced[0] if traced else None,
        links=traced[1:],
        deliveries=len(ids),
    ):
        job = telemetry.here()
        # A send whose trigger is the job's is a child of the job's span.
        same = telemetry.trace_id(job.traceparent) if job else None
        return _deliver_held(
            engine,
            ids,
            {d: job if telemetry.trace_id(p) == same else p for d, p in parents.items()},
            chain=chain,
        )


def _deliver_held(
    engine: Engine,
    ids: list[uuid.UUID],
    parents: Mapping[uuid.UUID, telemetry.Parent],
    *,
    chain: bool,
) -> list[DeliverResult]:
    mine, busy = engine.liveness.hold(ids)
    try:
        claimed, why_not = _claim(engine, mine)
    except BaseException:
        engine.liveness.let_go(mine, orphaned=True)
        raise
    why_not.update(dict.fromkeys(busy, "being sent by this process"))
    taken: list[uuid.UUID] = []
    try:
        if chain and any(_waited(c[0]) for c in claimed):
            # A backlog: take the one-delivery jobs queued behind this one along.
            more, why_more, taken = _gather(engine, engine.settings.delivery_batch_size - len(ids))
            claimed, why_not = [*claimed, *more], {**why_not, **why_more}
            if taken and telemetry.tracing():
                with engine.pool.connection() as conn:
                    parents = {**traces.for_deliveries(conn, taken), **parents}
        return _send_and_record(engine, ids, claimed, why_not, parents, chain=chain)
    finally:
        engine.liveness.let_go(mine + taken)


def _waited(delivery: Delivery) -> bool:
    """Claimed at least :data:`BACKLOG_AFTER` after it was planned: its job queued behind
    others (a fresh delivery's job starts within milliseconds of its commit)."""
    return delivery.status_changed_at - delivery.created_at >= BACKLOG_AFTER


def _send_and_record(
    engine: Engine,
    ids: Sequence[uuid.UUID],
    claimed: Sequence[_Claimed],
    why_not: dict[uuid.UUID, str],
    parents: Mapping[uuid.UUID, telemetry.Parent],
    *,
    chain: bool,
) -> list[DeliverResult]:
    _skipped(why_not)
    steps = chain and any(c[0].workflow_run_id is not None for c in claimed)
    chained = _Chain(engine) if steps else None
    try:
        recorded = _send_all(engine, claimed, parents, chained)
        if chained is not None:
            chained.follow(claimed, parents)
    except BaseException:
        if chained is not None:
            chained.abandon()
        raise
    return [recorded.get(d) or DeliverResult(d, "skipped", why_not.get(d, "")) for d in ids]


def _send_all(
    engine: Engine,
    claimed: Sequence[_Claimed],
    parents: Mapping[uuid.UUID, telemetry.Parent],
    chained: _Chain | None,
) -> dict[uuid.UUID, DeliverResult]:
    """Send the claimed deliveries and record each group of finished sends; with
    ``chained``, each record claims its runs' next steps into it. A group whose record
    fails does not stop the later groups' records; the first failure is raised after."""
    recorded: dict[uuid.UUID, DeliverResult] = {}
    failed: Exception | None = None
    for group in _sends(engine, claimed, parents):
        sent = [Sent(delivery, number, outcome) for (delivery, number, _), outcome in group]
        link = _Link(engine) if chained is not None else None
        try:
            recorded.update((r.delivery_id, r) for r in record(engine, sent, chain=link))
        except Exception as exc:  # record the later groups, then fail the job
            failed = failed or exc
            continue
        if chained is not None and link is not None:
            chained.adopt(link)
    if failed is not None:
        raise failed
    return recorded


def _sends(
    engine: Engine, claimed: Sequence[_Claimed], parents: Mapping[uuid.UUID, telemetry.Parent]
) -> Iterator[list[tuple[_Claimed, Any]]]:
    return engine.senders.run(
        claimed,
        lambda c: _send(engine, *c, parent=parents.get(c[0].id)),
        lambda c: _lane(engine, c[0]),
        lambda _c, lane: sending.timed_out(lane),
        lambda _c, lane: sending.never_started(lane),
        every=WATCH,
    )


class _Link:
    """One record's part of a chain (:class:`_Chain`): called in the record's transaction
    with the step deliveries its runs' advance planned for now (planning deferred no job for
    them), it claims them there; each try of the record calls it again, after forgetting
    what the earlier try claimed (rolled back, or committed with a lost reply: then the
    beat releases it, :meth:`Liveness.let_go`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.claimed: list[_Claimed] = []
        self.held: list[uuid.UUID] = []

    def __call__(self, conn: Conn, delivery_ids: list[uuid.UUID]) -> None:
        self.abandon()
        if not delivery_ids:
            return
        mine, busy = self.engine.liveness.hold(delivery_ids)
        self.held = mine
        claimant = self.engine.liveness.ensure()
        # One the claim does not take was handled by it: policy deferred, held or suppressed
        # it (with its job), or it is not sendable. One another call holds gets its job.
        self.claimed, _why_not = _claim_in(self.engine, conn, mine, claimant=claimant)
        for delivery_id in busy:
            self.engine.deferrer.deliver_if_not_queued(conn, delivery_id)

    def abandon(self) -> None:
        self.engine.liveness.let_go(self.held, orphaned=True)
        self.held, self.claimed = [], []


class _Chain:
    """Chained steps: the record of a ``deliver`` job's sends claims, in its own
    transaction, the step deliveries its runs' advance planned for now (:class:`_Link`), and
    this process sends them next, and so on for up to :data:`MAX_CHAIN` steps: a job fetch,
    a claim and a job's end fewer per step. A claimed step dies with this process like any
    send (the stuck sweep takes it over after ``stuck_after``); one policy keeps from the
    claim gets its job from policy, in that transaction. Each chained send continues the
    trace of its run's first send."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.claimed: list[_Claimed] = []
        self.held: list[uuid.UUID] = []

    def adopt(self, link: _Link) -> None:
        """The record of ``link`` committed: what it claimed is this chain's next hop."""
        self.claimed.extend(link.claimed)
        self.held.extend(link.held)

    def abandon(self) -> None:
        """Give up the claimed steps not sent (the job failed): the beat releases them."""
        self.engine.liveness.let_go(self.held, orphaned=True)
        self.held, self.claimed = [], []

    def follow(
        self, first: Sequence[_Claimed], parents: Mapping[uuid.UUID, telemetry.Parent]
    ) -> None:
        """Send and record the chained steps, hop after hop; the last hop allowed records
        without chaining (its runs' next steps get jobs)."""
        by_run = {c[0].workflow_run_id: parents.get(c[0].id) for c in first}
        hops = 0
        while self.claimed:
            claimed, held = self.claimed, self.held
            self.claimed, self.held = [], []
            hops += 1
            try:
                _send_all(
                    self.engine,
                    claimed,
                    {c[0].id: by_run.get(c[0].workflow_run_id) for c in claimed},
                    self if hops < MAX_CHAIN else None,
                )
            finally:
                self.engine.liveness.let_go(held)


def deliver_in(
    engine: Engine, conn: Conn, delivery_ids: Sequence[uuid.UUID]
) -> list[DeliverResult]:
    """What :func:`deliver_many` does, all in the caller's transaction: claim, call the
    adapters one after the other, record. The adapter calls run inside that transaction,
    so this is for tests (``chimeway.testing.drain(cw, conn=...)``), never for providers
    that may be slow. One result per distinct id, in order."""
    ids = list(dict.fromkeys(delivery_ids))
    with conn.transaction():
        claimed, why_not = _claim_in(engine, conn, ids, claimant=None)
    _skipped(why_not)
    sent = [
        Sent(delivery, number, _send(engine, delivery, number, profile))
        for delivery, number, profile in claimed
    ]
    recorded = {r.delivery_id: r for r in record_in(engine, conn, sent)}
    return [recorded.get(d) or DeliverResult(d, "skipped", why_not.get(d, "")) for d in ids]


def _claim(
    engine: Engine, delivery_ids: Sequence[uuid.UUID]
) -> tuple[list[_Claimed], dict[uuid.UUID, str]]:
    """Move the deliveries that may be sent now to ``dispatched`` (with their attempt
    numbers), and say why each other one may not. In autocommit: one statement when no
    policy can stop them; else policy's read and the claim too, in one short transaction
    when policy has something to write. None is left open around the sends. Only ids
    no other call of this process holds (:meth:`Liveness.hold`) are claimed here: one of
    them dispatched by this process lost its claim's reply and is claimed again."""
    claimant = engine.liveness.ensure()
    with engine.deliver_pool.connection() as conn:
        conn.autocommit = True
        try:
            return _claim_in(engine, conn, delivery_ids, claimant=claimant)
        finally:
            with suppress(psycopg.Error):  # a broken connection is dropped by the pool
                conn.autocommit = False


def _gather(
    engine: Engine, limit: int
) -> tuple[list[_Claimed], dict[uuid.UUID, str], list[uuid.UUID]]:
    """A backlog has formed behind a ``deliver`` job: take up to ``limit`` due ``deliver``
    jobs queued behind it (deleted) and claim their deliveries, in one transaction, so that
    a backlog of one-recipient triggers is sent in chunks like a fan-out (one fetch, claim
    and record for many). The taken ids are held (:meth:`Liveness.hold`) before the claim:
    one another call of this process holds is left to it (its job was a spare). A failure
    rolls the jobs back (a lost COMMIT reply leaves the claimed ones to the beat:
    ``orphaned``) and the job goes on with its own deliveries. The claims, why each taken
    one was not claimed, and the taken ids, now held."""
    if limit < 1:
        return [], {}, []
    claimant = engine.liveness.ensure()
    taken: list[uuid.UUID] = []
    try:
        with engine.deliver_pool.connection() as conn, conn.transaction():
            taken, _busy = engine.liveness.hold(jobs.take_deliver(conn, limit))
            claimed, why_not = _claim_in(engine, conn, taken, claimant=claimant)
    except Exception as exc:
        engine.liveness.let_go(taken, orphaned=True)
        logger.warning(
            "taking queued deliveries along failed; sending this job's own",
            extra={"action": "delivery.gather_failed", **logs.error_fields(exc)},
        )
        return [], {}, []
    return claimed, why_not, taken


def _claim_in(
    engine: Engine,
    conn: Conn,
    delivery_ids: Sequence[uuid.UUID],
    *,
    claimant: uuid.UUID | None,
) -> tuple[list[_Claimed], dict[uuid.UUID, str]]:
    """One claim statement for the deliveries no policy can stop (the common case: nothing
    to ask); policy is asked about the others (:func:`planning.admit`), which are then
    claimed as it allows."""
    found = _claim_rows(engine, conn, delivery_ids, claimant)
    ask = [delivery_id for delivery_id, claim in found.items() if claim.needs_policy]
    kept: dict[uuid.UUID, str] = {}
    if ask:
        for delivery_id in ask:
            del found[delivery_id]
        asked, kept = _claim_with_policy(engine, conn, ask, claimant)
        found.update(asked)
    why_not = {
        delivery_id: _not_sendable(engine, conn, delivery_id, claim)
        for delivery_id, claim in found.items()
        if claim.dispatched is None
    }
    why_not.update(kept)
    claimed = []
    for delivery_id in delivery_ids:
        claim = found.get(delivery_id)
        if claim is None:
            why_not.setdefault(delivery_id, "missing")  # unless policy kept it from the claim
        elif claim.dispatched is not None:
            number = claim.attempts + 1
            claimed.append((claim.dispatched, number, claim.profile))
            _log("delivery.dispatched", claim.dispatched, attempt_number=number)
    return claimed, why_not


def _claim_with_policy(
    engine: Engine, conn: Conn, delivery_ids: Sequence[uuid.UUID], claimant: uuid.UUID | None
) -> tuple[dict[uuid.UUID, deliveries.Claim], dict[uuid.UUID, str]]:
    """Ask policy about these deliveries (one read), write what it decided and claim what it
    let through; the claims, and why each delivery policy kept from the claim was kept."""
    admission = planning.admit(engine, conn, delivery_ids)
    if not admission.writes:
        found = _claim_rows(
            engine, conn, admission.claimable, claimant, admission.notes, policy_checked=True
        )
        return found, admission.why_not
    # Policy's writes, the throttles' grants and the claim share one transaction: the
    # grants' instant is the claim's, which is the attempts' start. So do the moves of the
    # runs whose deliveries it suppressed: a process that dies after the commit must not
    # leave them active for ever.
    with logbook.held(), conn.transaction():
        enacted = planning.enact(engine, conn, delivery_ids, admission)
        found = _claim_rows(
            engine, conn, enacted.claimable, claimant, admission.notes, policy_checked=True
        )
        _settle_suppressed(engine, conn, enacted.suppressed)
    return found, enacted.why_not


def _claim_rows(
    engine: Engine,
    conn: Conn,
    delivery_ids: Sequence[uuid.UUID],
    claimant: uuid.UUID | None,
    notes: dict[uuid.UUID, dict[str, Any]] | None = None,
    *,
    policy_checked: bool = False,
) -> dict[uuid.UUID, deliveries.Claim]:
    if not delivery_ids:
        return {}
    return deliveries.claim_many(
        conn,
        delivery_ids,
        engine.settings.stuck_after,
        claimant=claimant,
        max_takeovers=engine.settings.max_takeovers,
        notes=notes,
        policy_checked=policy_checked,
        throttled=list(engine.settings.throttles),
    )


def _settle_suppressed(engine: Engine, conn: Conn, suppressed: Sequence[Delivery]) -> None:
    """Deliveries policy suppressed at their claim: logged, and their runs decided now, in
    the suppression's transaction, which the caller holds (the outcome ``suppressed`` may
    lead to another step: email opted out, so an SMS)."""
    for delivery in suppressed:
        _log("delivery.suppressed", delivery, reason=str(delivery.suppression_reason))
    rows = [
        PlannedRow(d.id, d.notification_id, d.channel, d.workflow_run_id, d.status)
        for d in suppressed
        if d.workflow_run_id is not None
    ]
    if rows:
        drive.progress_planned(engine, conn, rows)


def _not_sendable(
    engine: Engine, conn: Conn, delivery_id: uuid.UUID, found: deliveries.Claim
) -> str:
    """Why a claim did not move the delivery to ``dispatched``. One sent too early (a
    re-drive, a job run before its time) makes sure a job comes back when it is due, then
    steps aside; one abandoned after too many takeovers moves its run on."""
    if found.abandoned is not None:
        _log(
            "delivery.abandoned",
            found.abandoned,
            takeovers=found.abandoned.takeovers,
            reason="abandoned",
        )
        run_id = found.abandoned.workflow_run_id
        if run_id is not None:
            with logbook.held(), conn.transaction():
                drive.progress_in(engine, conn, run_id)
        return f"abandoned after {found.abandoned.takeovers + 1} interrupted sends"
    status = found.was_status
    if status in (S.SUCCEEDED, S.SUPPRESSED, S.CANCELLED, S.DIGESTED):
        return f"terminal ({status})"
    if found.was_orchestration_state != OrchestrationState.READY:
        return f"not ready ({found.was_orchestration_state})"
    if status == S.FAILED and found.was_retry_at is not None:
        with conn.transaction():
            engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=found.was_retry_at)
        return "retry not due yet"
    if status == S.DISPATCHED:
        with conn.transaction():
            engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=found.takeover_at)
        return "being sent by another process"
    return f"cannot be dispatched from {status}"


def _send(
    engine: Engine,
    delivery: Delivery,
    attempt_number: int,
    profile: RecipientProfile | None,
    parent: telemetry.Parent = None,
) -> sending.Outcome:
    adapter = engine.adapter_for(delivery.channel)
    link = preferences.send_unsubscribe_url(engine, delivery)
    request = sending.request_for(delivery, attempt_number, profile, link)
    if not (telemetry.tracing() or telemetry.metering()):
        return sending.call(adapter, request)
    with telemetry.span(
        "chimeway.send",
        parent=parent,
        tenant_id=delivery.tenant_id,
        delivery_id=delivery.id,
        run_id=delivery.workflow_run_id,
        channel=delivery.channel,
        attempt=attempt_number,
    ) as span:
        started = time.perf_counter()
        outcome = sending.call(adapter, request)
        took = time.perf_counter() - started
        span.set(
            outcome=str(outcome.attempt_outcome),
            error_class=str(outcome.error_class) if outcome.error_class else None,
        )
    telemetry.add("chimeway.sends", channel=delivery.channel, outcome=str(outcome.attempt_outcome))
    telemetry.observe("chimeway.send.duration", took, channel=delivery.channel)
    return outcome


def _lane(engine: Engine, delivery: Delivery) -> Lane:
    return sending.lane_for(
        engine.adapter_for(delivery.channel),
        capacity=engine.settings.send_concurrency,
        timeout=engine.settings.deadline.total_seconds(),
    )


def _skipped(why_not: dict[uuid.UUID, str]) -> None:
    for delivery_id, why in why_not.items():
        logger.debug(
            "delivery skipped",
            extra={"action": "delivery.skipped", "delivery_id": str(delivery_id), "why": why},
        )


def _log(action: str, delivery: Delivery, **details: Any) -> None:
    logbook.info(
        logger,
        action.replace(".", " ").replace("_", " "),
        action=action,
        tenant_id=delivery.tenant_id,
        delivery_id=str(delivery.id),
        run_id=str(delivery.workflow_run_id) if delivery.workflow_run_id else None,
        channel=delivery.channel,
        **details,
    )
