"""Planning: THE one place a delivery is planned (design §2, §13).

A trigger's fan-out and a run's next step both plan their deliveries here, in the caller's
transaction: the rows, their ``planned`` history and the jobs that will send them. This is
where the recipient's profile, preferences, quiet hours, caps, throttles and batching decide
whether a delivery is sent now, later or not at all, so no path can skip them.

Policy is asked twice (:mod:`chimeway.policy.decision`): by :func:`plan`, and again by
:func:`admit` when a worker is about to claim the deliveries for sending, so that a change
in between wins (an opt-out made after planning suppresses the delivery at its claim). The
claim is also where throttles grant sends (:func:`enact`), since that is when a send
happens. Each checkpoint reads what it decides on in one statement per batch.

Inside :func:`chaining` (a ``deliver`` job's record, :mod:`chimeway.engine.recording`), the
step deliveries the runs' advance plans for now get no job: the process that recorded the
steps before claims them in the same transaction and sends them itself (design §5, "chained
steps").
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from procrastinate.exceptions import AlreadyEnqueued

from chimeway import telemetry
from chimeway.db import Conn
from chimeway.dsl import RECIPIENT_ZONE, Batch
from chimeway.engine import recipients
from chimeway.engine.context import Engine
from chimeway.errors import InvalidArgument
from chimeway.notifiers import Notifier, PlannedNotification
from chimeway.policy import (
    CapCount,
    CapRule,
    DeliveryFacts,
    PreferenceRule,
    PreferenceScope,
    QuietHours,
    RecipientPolicy,
    Verdict,
    decide,
    free_instants,
)
from chimeway.policy.decision import NO_ADDRESS, THROTTLED
from chimeway.results import Delivery
from chimeway.store import clock, deliveries, digests
from chimeway.store import policy as store
from chimeway.store.deliveries import Hold, Move, PlannedDelivery, PlannedRow
from chimeway.store.triggers import Lone
from chimeway.types import DeliveryReason, DeliveryStatus, DigestState, OrchestrationState

S = DeliveryStatus

#: The step deliveries planned for now inside :func:`chaining`, else None.
_chained: ContextVar[list[uuid.UUID] | None] = ContextVar("chimeway_chained", default=None)


@contextmanager
def chaining() -> Iterator[list[uuid.UUID]]:
    """While open, :func:`plan` defers no job for the run step deliveries it plans that can
    be sent at once (not suppressed, not deferred), and puts their ids in the list: the
    caller claims them in the same transaction and sends them, or defers their jobs."""
    chained: list[uuid.UUID] = []
    token = _chained.set(chained)
    try:
        yield chained
    finally:
        _chained.reset(token)


@dataclass(frozen=True)
class DeliveryPlan:
    """A delivery to plan: a notification on a channel, or the delivery of a run's step."""

    notification_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    #: The content to send; ``None`` takes what the notification rendered for the channel
    #: when it was triggered (a workflow's later steps).
    render_data: dict[str, Any] | None
    workflow_run_id: uuid.UUID | None = None
    workflow_step_id: uuid.UUID | None = None
    #: What policy decides it on: the workflow key (the notifier key outside a workflow) and
    #: the notifier's category and flags. ``workflow_key`` ``None``: all four are those of
    #: the notification's first delivery (a workflow's later steps).
    workflow_key: str | None = None
    category: str | None = None
    critical: bool = False
    bypass_quiet_hours: bool = False


def plan(
    engine: Engine,
    conn: Conn,
    plans: Sequence[DeliveryPlan],
    *,
    now: dt.datetime | None = None,
) -> list[PlannedRow]:
    """Plan the deliveries and defer the jobs that send them, in ``conn``'s transaction.
    A delivery that exists already (same notification and channel, or same run step) is
    skipped: planning twice plans once. The planned rows, in input order, each with its
    status: ``pending`` (a job will send it: now, or at ``next_eligible_at`` when policy
    deferred it) or already terminal (``suppressed``, with its reason and evidence in the
    row and its history), which the caller acts on.

    Decisions made here, in order (:func:`chimeway.policy.decide`): the recipient's or the
    tenant's opt-outs; a channel whose adapter needs an address (``adapter.address``:
    ``"email"`` or ``"phone"``) that the recipient's profile lacks (``no_address``); caps;
    quiet hours (deferred to the window's end). ``now`` (aware) stands for the database's
    clock in tests."""
    if now is not None and now.utcoffset() is None:
        raise InvalidArgument("now: must be timezone-aware")
    with telemetry.span("chimeway.plan", deliveries=len(plans)) as span:
        lacking = _lacking_address(engine, conn, plans)
        decided = _decide_plans(conn, plans, lacking, now)
        planned = [
            _planned(engine, p, facts, verdict)
            for p, (facts, verdict) in zip(plans, decided, strict=True)
        ]
        rows = _insert(engine, conn, planned)
        suppressed = sum(p.suppressed is not None for p in planned)
        span.set(planned=len(rows), suppressed=suppressed)
        telemetry.add("chimeway.deliveries.planned", len(rows))
    return rows


def lone(engine: Engine, notifier: Notifier, plans: Sequence[PlannedNotification]) -> Lone | None:
    """The delivery of a trigger that plans exactly one (one recipient; a workflow that
    does not start with a batch, or one channel), or ``None`` when it plans more, joins a
    batch, or its workflow's definition is not known committed yet (:func:`plan` stores it
    the first time). The one-statement trigger (:func:`chimeway.store.triggers.write_one`)
    writes it only after its guard checked that no policy can apply and the address is
    there, the two things :func:`plan` would otherwise decide; else the trigger plans
    through :func:`plan`."""
    if len(plans) != 1:
        return None
    [planned] = plans
    workflow = planned.workflow
    definition = None
    if workflow is not None:
        if workflow.batch is not None:
            return None
        definition = engine.catalog.cached(workflow)
        if definition is None:
            return None
        channel = definition.first_step.channel
    elif len(planned.channels) == 1:
        [channel] = planned.channels
    else:
        return None
    return Lone(
        definition=definition,
        channel=channel,
        max_attempts=engine.retry_policy(channel).max_attempts,
        workflow_key=workflow.key if workflow is not None else notifier.key,
        critical=notifier.critical,
        bypass_quiet_hours=notifier.bypass_quiet_hours,
        needs=engine.address_for(channel),
    )


def _insert(engine: Engine, conn: Conn, planned: Sequence[PlannedDelivery]) -> list[PlannedRow]:
    """The planned rows, with the jobs of the pending ones (now, or when their deferral
    ends) deferred by the same statement; inside :func:`chaining`, the run step deliveries
    that can be sent at once get no job and are handed to the caller (the rows then come
    back with those first)."""
    chained = _chained.get()
    now = [p for p in planned if _step_now(p)] if chained is not None else []
    if chained is None or not now:
        return _insert_with_jobs(engine, conn, planned)
    rows = deliveries.insert_many(conn, now)  # no jobs: the caller sends them
    chained.extend(
        r.id
        for r in rows
        if r.status == S.PENDING and r.orchestration_state == OrchestrationState.READY
    )
    later = [p for p in planned if not _step_now(p)]
    return rows + (_insert_with_jobs(engine, conn, later) if later else [])


def _step_now(p: PlannedDelivery) -> bool:
    return p.workflow_run_id is not None and p.suppressed is None and p.deferred_until is None


def _insert_with_jobs(
    engine: Engine, conn: Conn, planned: Sequence[PlannedDelivery]
) -> list[PlannedRow]:
    return deliveries.insert_many(
        conn,
        planned,
        jobs=engine.deferrer.plan_spec(sum(p.suppressed is None for p in planned)),
    )


def _planned(
    engine: Engine, p: DeliveryPlan, facts: DeliveryFacts, verdict: Verdict
) -> PlannedDelivery:
    return PlannedDelivery(
        notification_id=p.notification_id,
        tenant_id=p.tenant_id,
        recipient_id=p.recipient_id,
        channel=p.channel,
        render_data=p.render_data,
        max_attempts=engine.retry_policy(p.channel).max_attempts,
        workflow_run_id=p.workflow_run_id,
        workflow_step_id=p.workflow_step_id,
        suppressed=(
            DeliveryReason(verdict.reason)
            if verdict.action == "suppress" and verdict.reason
            else None
        ),
        context=verdict.context or None,
        deferred_until=verdict.until if verdict.action == "defer" else None,
        planning_reason=verdict.reason if verdict.action == "defer" else None,
        category=facts.category,
        workflow_key=facts.workflow,
        critical=facts.critical,
        bypass_quiet_hours=facts.bypass_quiet_hours,
    )


#: The verdict on a delivery no policy can apply to.
_SEND = Verdict("send")


def _decide_plans(
    conn: Conn,
    plans: Sequence[DeliveryPlan],
    lacking: dict[int, str],
    now: dt.datetime | None,
) -> list[tuple[DeliveryFacts, Verdict]]:
    """Each plan's facts and verdict, from one read of its recipients' policy. A batch's
    own deliveries count towards its recipients' caps, in input order."""
    read = store.for_plans(
        conn,
        [
            store.PlanInput(
                p.tenant_id,
                p.recipient_id,
                p.notification_id,
                p.channel,
                p.category,
                p.workflow_key,
                p.workflow_key is None,
            )
            for p in plans
        ],
        at=now,
    )
    asked = {row.n - 1: row for row in read}
    planned_here: Counter[tuple[str, str, str | None]] = Counter()
    decided = []
    for i, p in enumerate(plans):
        found = asked.get(i)
        if found is None:
            # No policy can apply (the read left it out): what decide() says of no policy.
            assert p.workflow_key is not None
            facts = DeliveryFacts(
                channel=p.channel,
                workflow=p.workflow_key,
                category=p.category,
                critical=p.critical,
                bypass_quiet_hours=p.bypass_quiet_hours,
            )
            need = lacking.get(i)
            decided.append(
                (
                    facts,
                    _SEND
                    if need is None
                    else Verdict("suppress", NO_ADDRESS, None, {"needs": need}),
                )
            )
            continue
        facts = (
            DeliveryFacts(
                channel=p.channel,
                workflow=p.workflow_key,
                category=p.category,
                critical=p.critical,
                bypass_quiet_hours=p.bypass_quiet_hours,
            )
            if p.workflow_key is not None
            else DeliveryFacts(
                channel=p.channel,
                workflow=found.workflow_key or p.channel,
                category=found.category,
                critical=found.critical,
                bypass_quiet_hours=found.bypass_quiet_hours,
            )
        )
        pair = (p.tenant_id, p.recipient_id)
        policy = recipient_policy(
            facts,
            found.rules,
            found.quiet,
            found.profile_timezone,
            [
                {**cap, "recent": cap["recent"] + planned_here[(*pair, cap["channel"])]}
                for cap in found.caps
            ],
        )
        verdict = decide(
            facts, policy, now=found.db_now, checkpoint="planning", lacking_address=lacking.get(i)
        )
        if verdict.action != "suppress":
            for cap in found.caps:
                if cap["channel"] in (None, p.channel):
                    planned_here[(*pair, cap["channel"])] += 1
        decided.append((facts, verdict))
    return decided


def _lacking_address(engine: Engine, conn: Conn, plans: Sequence[DeliveryPlan]) -> dict[int, str]:
    """Index of each plan whose channel needs an address its recipient has not -> the
    address field it needs. One read of the directory, only when some channel needs one."""
    needs = {channel: engine.address_for(channel) for channel in {p.channel for p in plans}}
    wanted = {(p.tenant_id, p.recipient_id) for p in plans if needs[p.channel]}
    if not wanted:
        return {}
    have = recipients.addresses(conn, wanted)
    lacking: dict[int, str] = {}
    for i, p in enumerate(plans):
        need = needs[p.channel]
        if need and need not in have.get((p.tenant_id, p.recipient_id), frozenset()):
            lacking[i] = need
    return lacking


# -- at the claim -----------------------------------------------------------------------


@dataclass
class Admission:
    """What policy says, at their claim, about deliveries a worker is about to send
    (:func:`admit`); :func:`enact` writes it. ``claimable``: the ids to claim (those to
    send, and those the claim itself will turn down and explain)."""

    claimable: list[uuid.UUID] = field(default_factory=list)
    suppress: list[Move] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    resume: list[uuid.UUID] = field(default_factory=list)
    #: Throttle key -> the deliveries that need a grant to be sent now, in order.
    throttled: dict[str, list[store.ClaimPolicy]] = field(default_factory=dict)
    #: Why each delivery policy kept from the claim was kept.
    why_not: dict[uuid.UUID, str] = field(default_factory=dict)
    #: Evidence for the claim's history row of a delivery let through (a critical bypass).
    notes: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return bool(self.suppress or self.holds or self.resume or self.throttled)


@dataclass(frozen=True)
class Enacted:
    """What :func:`enact` did: the ids to claim now, the deliveries it suppressed, and why
    each delivery it kept from the claim was kept."""

    claimable: list[uuid.UUID]
    suppressed: list[Delivery]
    why_not: dict[uuid.UUID, str]


def admit(engine: Engine, conn: Conn, delivery_ids: Sequence[uuid.UUID]) -> Admission:
    """Ask policy again about deliveries about to be claimed (one read): a pending delivery
    (ready, or deferred and due) or a failed one due for its retry is decided as at planning
    (the later change wins); those allowed on a throttled channel then need a grant. Others
    (already sent or sending, terminal, not due) go to the claim, which explains them."""
    admission = Admission()
    for row in store.for_deliveries(conn, delivery_ids):
        now = row.db_now
        due_deferred = (
            row.status == S.PENDING
            and row.orchestration_state == OrchestrationState.DEFERRED
            and row.next_eligible_at is not None
            and row.next_eligible_at <= now
        )
        to_send = (
            row.status == S.PENDING and row.orchestration_state == OrchestrationState.READY
        ) or due_deferred
        retry = row.status == S.FAILED and (row.retry_at is None or row.retry_at <= now)
        if not (to_send or retry):
            stale = row.status == S.DISPATCHED and (
                row.status_changed_at + engine.settings.stuck_after <= now
            )
            key = engine.settings.throttle_key(row.channel)
            if stale and key is not None:  # a takeover is a send too
                admission.throttled.setdefault(key, []).append(row)
            else:
                admission.claimable.append(row.id)
            continue
        facts = DeliveryFacts(
            channel=row.channel,
            workflow=row.workflow_key or row.channel,
            category=row.category,
            critical=row.critical,
            bypass_quiet_hours=row.bypass_quiet_hours,
        )
        verdict = decide(
            facts,
            recipient_policy(facts, row.rules, row.quiet, row.profile_timezone, row.caps),
            now=now,
            checkpoint="claim",
        )
        if verdict.action == "suppress":
            assert verdict.reason is not None
            reason = DeliveryReason(verdict.reason)
            admission.suppress.append(Move(row.id, S.SUPPRESSED, reason, reason, verdict.context))
            admission.why_not[row.id] = f"suppressed ({reason})"
        elif verdict.action == "defer":
            assert verdict.until is not None and verdict.reason is not None
            admission.holds.append(Hold(row.id, verdict.until, verdict.reason, verdict.context))
            admission.why_not[row.id] = f"held until {verdict.until.isoformat()} ({verdict.reason})"
        else:
            if verdict.context:
                admission.notes[row.id] = verdict.context
            if due_deferred:
                admission.resume.append(row.id)
            key = engine.settings.throttle_key(row.channel)
            if key is None:
                admission.claimable.append(row.id)
            else:
                admission.throttled.setdefault(key, []).append(row)
    return admission


def enact(engine: Engine, conn: Conn, delivery_ids: Sequence[uuid.UUID], a: Admission) -> Enacted:
    """Write what :func:`admit` decided, in ``conn``'s transaction, which the caller ends
    after claiming the ids returned: throttle keys are taken first, then the deliveries'
    rows (both in a fixed order, so claimers cannot deadlock); suppressions, holds and
    resumptions are written; each throttle grants what it can at the transaction's instant
    (the claim's, hence the attempts' start) and the rest is held until its next free
    instants. Jobs come back for every delivery held."""
    keys = sorted(a.throttled)
    for key in keys:
        store.throttle_lock(conn, key)
    deliveries.lock_many(conn, delivery_ids)
    suppressed = deliveries.transition_many(conn, a.suppress, only_from=[S.PENDING, S.FAILED])
    holds = list(a.holds)
    claimable = list(a.claimable)
    why_not = dict(a.why_not)
    takeovers: dict[uuid.UUID, dt.datetime] = {}
    for key in keys:
        waiting = a.throttled[key]
        throttle = next(t for c, t in engine.settings.throttles.items() if (t.key or c) == key)
        grant = store.throttle_grant(
            conn, key, wanted=len(waiting), limit=throttle.limit, per=throttle.per
        )
        claimable += [row.id for row in waiting[: grant.granted]]
        rest = waiting[grant.granted :]
        instants = free_instants(
            [*grant.recent, (grant.db_now, grant.granted)] if grant.granted else grant.recent,
            now=grant.db_now,
            limit=throttle.limit,
            per=throttle.per,
            count=len(rest),
        )
        for row, until in zip(rest, instants, strict=True):
            context = {
                "rule": THROTTLED,
                "key": key,
                "limit": throttle.limit,
                "per_seconds": throttle.per.total_seconds(),
                "until": until.isoformat(),
                "checkpoint": "claim",
            }
            if row.status == S.DISPATCHED:
                takeovers[row.id] = until
            else:
                holds.append(Hold(row.id, until, THROTTLED, context))
            why_not[row.id] = f"throttled until {until.isoformat()}"
    granted = set(claimable)
    deliveries.resume_many(conn, [d for d in a.resume if d in granted])
    held = set(deliveries.hold_many(conn, holds))
    later: defaultdict[dt.datetime, list[uuid.UUID]] = defaultdict(list)
    for hold in holds:
        if hold.delivery_id in held:
            later[hold.until].append(hold.delivery_id)
    for delivery_id, until in takeovers.items():
        engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=until)
    schedule(engine, conn, later)
    return Enacted(claimable, suppressed, why_not)


def schedule(engine: Engine, conn: Conn, later: dict[dt.datetime, list[uuid.UUID]]) -> None:
    """Deliver jobs at each instant for its deliveries (those planned together share
    chunks); a delivery whose lone job is queued already has it pulled forward instead."""
    for at in sorted(later):
        ids = later[at]
        try:
            with conn.transaction():
                engine.deferrer.deliver(conn, ids, schedule_at=at)
        except AlreadyEnqueued:
            for delivery_id in ids:
                engine.deferrer.deliver_if_not_queued(conn, delivery_id, schedule_at=at)


# -- the policy read, as the pure core takes it -------------------------------------------


def recipient_policy(
    facts: DeliveryFacts,
    rules: Iterable[dict[str, Any]],
    quiet: dict[str, Any] | None,
    profile_timezone: str | None,
    caps: Iterable[dict[str, Any]],
) -> RecipientPolicy:
    """A recipient's policy for one delivery, from the JSON a policy read returns (see
    :class:`chimeway.store.policy.PlanPolicy`). Only the rules that can apply to the
    delivery (by channel, category and workflow) are kept: most rules of a recipient are
    about other things, and the claim of every delivery builds this."""
    own: list[PreferenceRule] = []
    defaults: list[PreferenceRule] = []
    for rule in rules:
        if (
            (rule["channel"] is None or rule["channel"] == facts.channel)
            and (rule["category"] is None or rule["category"] == facts.category)
            and (rule["workflow"] is None or rule["workflow"] == facts.workflow)
        ):
            (own if rule["recipient"] else defaults).append(
                PreferenceRule(
                    _scope(rule["channel"], rule["category"], rule["workflow"]),
                    enabled=bool(rule["enabled"]),
                    set_at=dt.datetime.fromisoformat(rule["set_at"]),
                    source=rule["source"],
                )
            )
    quiet_hours = None
    if quiet is not None and quiet["start"] is not None:
        quiet_hours = _quiet_hours(
            quiet["start"], quiet["end"], quiet["timezone"] or profile_timezone
        )
    return RecipientPolicy(
        recipient_rules=tuple(own),
        tenant_rules=tuple(defaults),
        caps=tuple(
            CapCount(
                _cap(int(cap["max_count"]), float(cap["per_seconds"]), cap["channel"]),
                int(cap["recent"]),
                "recipient" if cap["recipient"] else "tenant",
            )
            for cap in caps
            if cap["channel"] is None or cap["channel"] == facts.channel
        ),
        quiet_hours=quiet_hours,
        quiet_hours_owner="recipient" if quiet and quiet["recipient"] else "tenant",
    )


# The same few scopes, caps and windows come back for every delivery of a batch: they are
# immutable, so each is built (and checked) once.


@functools.lru_cache(maxsize=4096)
def _scope(channel: str | None, category: str | None, workflow: str | None) -> PreferenceScope:
    return PreferenceScope(channel, category, workflow)


@functools.lru_cache(maxsize=1024)
def _cap(max_count: int, per_seconds: float, channel: str | None) -> CapRule:
    return CapRule(max_count, dt.timedelta(seconds=per_seconds), channel)


@functools.lru_cache(maxsize=1024)
def _quiet_hours(start: str, end: str, zone: str | None) -> QuietHours:
    """The window in its own zone, else the recipient's, else UTC (a zone the server does
    not know, written before its tzdata lost it, counts as UTC rather than stop planning)."""
    begins, ends = dt.time.fromisoformat(start), dt.time.fromisoformat(end)
    if zone:
        try:
            return QuietHours(begins, ends, zone)
        except InvalidArgument:
            pass
    return QuietHours(begins, ends, "UTC")


# -- batching (digests, design §15) -------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    """A triggered notification whose workflow starts with a ``Batch``: it joins its
    recipient's open batch (its ``batch_key``) or opens one. ``channel`` and the flags are
    those of the workflow's first step, which will send the digest."""

    notification_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    workflow_key: str
    batch: Batch
    batch_key: str
    channel: str
    category: str | None = None
    critical: bool = False
    bypass_quiet_hours: bool = False


@dataclass(frozen=True)
class Batched:
    """Where a :class:`BatchPlan` went: the digest it opened or joined and, joined, its own
    held delivery."""

    digest: digests.Joined
    delivery_id: uuid.UUID | None


def join_batches(
    engine: Engine, conn: Conn, plans: Sequence[BatchPlan], *, now: dt.datetime | None = None
) -> list[Batched]:
    """Decide, in ``conn``'s transaction, the batch each notification goes into: the open
    batch of its (tenant, workflow, recipient, batch key), which it joins (no run of its
    own; its own delivery is held until the batch closes, then ``digested``), or a new one
    that closes at the end of the window counted from now (a fixed length, or the next
    daily local time in the recipient's zone). Exactly one batch per key is open however
    many triggers run at once (a unique index, not a read). The join that reaches
    ``max_items`` closes the batch and queues its run's timer now. The joined (or opened)
    digests, in input order; the caller starts the runs of those ``opened``."""
    if not plans:
        return []
    at = now or clock.now(conn)
    daily = {
        (p.tenant_id, p.recipient_id)
        for p in plans
        if p.batch.daily is not None and p.batch.daily.tz == RECIPIENT_ZONE
    }
    zones = recipients.timezones(conn, daily) if daily else {}
    order = sorted(
        range(len(plans)),
        key=lambda i: (
            plans[i].tenant_id,
            plans[i].workflow_key,
            plans[i].recipient_id,
            plans[i].batch_key,
        ),
    )
    wants = [
        digests.Want(
            tenant_id=p.tenant_id,
            workflow_key=p.workflow_key,
            recipient_id=p.recipient_id,
            batch_key=p.batch_key,
            closes_at=p.batch.closes_at(at, zones.get((p.tenant_id, p.recipient_id))),
            max_items=p.batch.max_items,
        )
        for p in (plans[i] for i in order)
    ]
    found = dict(zip(order, digests.join(conn, wants), strict=True))
    joined = [found[i] for i in range(len(plans))]
    added = digests.add_members(
        conn,
        [
            digests.NewMember(
                digest_id=j.id,
                position=j.position,
                notification_id=p.notification_id,
                tenant_id=p.tenant_id,
                recipient_id=p.recipient_id,
                channel=p.channel,
                max_attempts=engine.retry_policy(p.channel).max_attempts,
                category=p.category,
                workflow_key=p.workflow_key,
                critical=p.critical,
                bypass_quiet_hours=p.bypass_quiet_hours,
            )
            for p, j in zip(plans, joined, strict=True)
        ],
    )
    for j in joined:
        if not j.opened and j.state == DigestState.CLOSED and j.run_id is not None:
            engine.deferrer.progress(conn, j.run_id, schedule_at=at)  # full: close it now
    held = {m.notification_id: m.delivery_id for m in added}
    return [Batched(j, held.get(p.notification_id)) for p, j in zip(plans, joined, strict=True)]
