"""Deliveries: rows, the delivery state machine, and attempts (design §5).

Every status move goes through :func:`transition_many`, which allows only the moves in
:data:`ALLOWED` (``UPDATE ... WHERE status = ANY(allowed_from)``) and writes the history row
in the same statement; :func:`transition` is its one-row form and :func:`claim_many` its
form for the move to ``dispatched``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from chimeway import db
from chimeway.adapters import RecipientProfile
from chimeway.db import Conn
from chimeway.errors import InvalidTransition, NotFound
from chimeway.results import Attempt, Delivery, DeliverySummary, DeliveryTransition
from chimeway.store import jobs as jobs_store
from chimeway.store.jobs import NO_JOBS, JobSpec
from chimeway.types import (
    TERMINAL_DELIVERY_STATUSES,
    AttemptOutcome,
    DeliveryReason,
    DeliveryStatus,
    ErrorClass,
    OrchestrationState,
)

S = DeliveryStatus

#: Which status may follow which. ``dispatched -> dispatched`` is a takeover of a send
#: whose worker died. ``failed -> suppressed``: policy stops a retry (the recipient opted out
#: after the first attempt). Terminal statuses lead nowhere, except that provider feedback may
#: overturn a send the provider had accepted: ``succeeded -> cancelled`` (a late bounce or
#: permanent failure) and ``succeeded -> failed`` (a late temporary failure, retried).
#: An operator's redrive (``cw.redrive_delivery``) sends a failed delivery now or a cancelled
#: one once more: ``failed -> pending`` and ``cancelled -> pending``.
#: ``pending -> digested``: a batch member's own delivery, held until its batch closed, is
#: folded into the digest's delivery (design §15).
ALLOWED: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    S.PENDING: frozenset({S.DISPATCHED, S.SUPPRESSED, S.CANCELLED, S.DIGESTED}),
    S.DISPATCHED: frozenset({S.DISPATCHED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.DISPATCHED, S.CANCELLED, S.SUPPRESSED, S.PENDING}),
    S.SUCCEEDED: frozenset({S.CANCELLED, S.FAILED}),
    S.SUPPRESSED: frozenset(),
    S.CANCELLED: frozenset({S.PENDING}),
    S.DIGESTED: frozenset(),
}


@dataclass(frozen=True)
class PlannedDelivery:
    notification_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    render_data: dict[str, Any] | None  # None: the notification's content for the channel
    max_attempts: int
    workflow_run_id: uuid.UUID | None = None
    workflow_step_id: uuid.UUID | None = None
    #: Planned ``suppressed`` for this reason (with ``context`` as evidence), not pending.
    suppressed: DeliveryReason | None = None
    context: dict[str, Any] | None = None
    #: Planned ``pending``/``deferred`` until this instant, for ``planning_reason``.
    deferred_until: dt.datetime | None = None
    planning_reason: str | None = None
    #: What policy decides it on (see :class:`chimeway.policy.DeliveryFacts`).
    category: str | None = None
    workflow_key: str | None = None
    critical: bool = False
    bypass_quiet_hours: bool = False


@dataclass(frozen=True)
class PlannedRow:
    id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    workflow_run_id: uuid.UUID | None
    status: DeliveryStatus
    orchestration_state: OrchestrationState = OrchestrationState.READY
    next_eligible_at: dt.datetime | None = None


BATCH_SIZE = 1000


def insert_many(
    conn: Conn, planned: Sequence[PlannedDelivery], *, jobs: JobSpec = NO_JOBS
) -> list[PlannedRow]:
    """Insert deliveries (each with its ``planned`` history, and the ``pending ->
    suppressed`` one of those planned suppressed, the ``deferred`` one of those planned
    deferred) in batches; duplicates are skipped. With ``jobs``, the jobs that send the
    pending ones (now, or when their deferral ends) are deferred by the same statement."""
    rows: list[PlannedRow] = []
    with conn.cursor(row_factory=db.dataclass_row(PlannedRow)) as cur:
        for start in range(0, len(planned), BATCH_SIZE):
            chunk = planned[start : start + BATCH_SIZE]
            spec = jobs
            try:
                cur.execute(
                    db.query("delivery_insert_batch"),
                    {
                        "notification_ids": [p.notification_id for p in chunk],
                        "tenant_ids": [p.tenant_id for p in chunk],
                        "recipient_ids": [p.recipient_id for p in chunk],
                        "channels": [p.channel for p in chunk],
                        "render_data": [
                            None if p.render_data is None else Jsonb(p.render_data) for p in chunk
                        ],
                        "max_attempts": [p.max_attempts for p in chunk],
                        "run_ids": [p.workflow_run_id for p in chunk],
                        "step_ids": [p.workflow_step_id for p in chunk],
                        "suppression_reasons": [p.suppressed for p in chunk],
                        "contexts": [
                            None if p.context is None else Jsonb(p.context) for p in chunk
                        ],
                        "deferred_until": [p.deferred_until for p in chunk],
                        "planning_reasons": [p.planning_reason for p in chunk],
                        "categories": [p.category for p in chunk],
                        "workflow_keys": [p.workflow_key for p in chunk],
                        "criticals": [p.critical for p in chunk],
                        "bypass_quiet_hours": [p.bypass_quiet_hours for p in chunk],
                        "defer": spec.defer,
                        "chunk": spec.chunk,
                        "queue": spec.queue,
                        "task_one": spec.task_one,
                        "task_many": spec.task_many,
                        "lock_prefix": spec.lock_prefix,
                    },
                )
            except psycopg.errors.UniqueViolation as exc:
                raise jobs_store.already_enqueued(exc, "deliver") from exc
            rows.extend(cur.fetchall())
    return rows


def get(conn: Conn, delivery_id: uuid.UUID) -> Delivery:
    with conn.cursor(row_factory=db.dataclass_row(Delivery)) as cur:
        row = cur.execute(db.query("delivery_get"), {"id": delivery_id}).fetchone()
    if row is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return row


def get_for_tenant(conn: Conn, tenant_id: str, delivery_id: uuid.UUID) -> Delivery:
    """The delivery if it belongs to ``tenant_id``; otherwise NotFound, as if it did not exist."""
    with conn.cursor(row_factory=db.dataclass_row(Delivery)) as cur:
        row = cur.execute(
            db.query("delivery_get_for_tenant"), {"id": delivery_id, "tenant_id": tenant_id}
        ).fetchone()
    if row is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return row


def lock_many(conn: Conn, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Delivery]:
    """Lock the deliveries ``FOR UPDATE`` in id order (no deadlock between two callers);
    missing ones are left out."""
    with conn.cursor(row_factory=db.dataclass_row(Delivery)) as cur:
        rows = cur.execute(db.query("delivery_lock"), {"ids": list(delivery_ids)}).fetchall()
    return {row.id: row for row in rows}


def allowed_from(to: DeliveryStatus) -> list[DeliveryStatus]:
    return [status for status, targets in ALLOWED.items() if to in targets]


@dataclass(frozen=True)
class Move:
    """One delivery's move for :func:`transition_many`."""

    delivery_id: uuid.UUID
    to: DeliveryStatus
    reason: str
    suppression_reason: DeliveryReason | None = None
    context: dict[str, Any] | None = None
    retry_at: dt.datetime | None = None
    provider_message_id: str | None = None


def transition_many(
    conn: Conn, moves: Sequence[Move], *, only_from: Iterable[DeliveryStatus] | None = None
) -> list[Delivery]:
    """Make each move its delivery's current status allows (:data:`ALLOWED`, narrowed by
    ``only_from``), each with its history row, in one statement; the moved deliveries come
    back in input order, the others are left out and unchanged. One move per delivery."""
    if not moves:
        return []
    origins = set(ALLOWED) if only_from is None else set(only_from)
    edges = [(f, t) for f, targets in ALLOWED.items() if f in origins for t in targets]
    with conn.cursor(row_factory=db.dataclass_row(Delivery)) as cur:
        return cur.execute(
            db.query("delivery_transition"),
            {
                "ids": [m.delivery_id for m in moves],
                "to_statuses": [m.to for m in moves],
                "suppression_reasons": [m.suppression_reason for m in moves],
                "retry_at": [m.retry_at for m in moves],
                "provider_message_ids": [m.provider_message_id for m in moves],
                "reasons": [m.reason for m in moves],
                "contexts": [Jsonb(m.context or {}) for m in moves],
                "terminal": list(TERMINAL_DELIVERY_STATUSES),
                "edge_from": [f for f, _ in edges],
                "edge_to": [t for _, t in edges],
            },
        ).fetchall()


def transition(
    conn: Conn,
    delivery_id: uuid.UUID,
    to: DeliveryStatus,
    *,
    reason: str,
    suppression_reason: DeliveryReason | None = None,
    context: dict[str, Any] | None = None,
    retry_at: dt.datetime | None = None,
    provider_message_id: str | None = None,
    only_from: Iterable[DeliveryStatus] | None = None,
    strict: bool = True,
) -> Delivery | None:
    """Move a delivery to ``to`` if its current status allows it, writing the history row
    (:func:`transition_many` for one delivery).

    ``only_from`` narrows the allowed origins (a claim takes only ``pending``/``failed``).
    When the move is not allowed: ``strict`` raises :class:`InvalidTransition`, otherwise
    ``None`` comes back and nothing changed.
    """
    move = Move(delivery_id, to, reason, suppression_reason, context, retry_at, provider_message_id)
    moved = transition_many(conn, [move], only_from=only_from)
    if moved or not strict:
        return moved[0] if moved else None
    current = get(conn, delivery_id)
    raise InvalidTransition(
        f"delivery {delivery_id} cannot move from {current.status} to {to} ({reason})"
    )


@dataclass(frozen=True)
class Claim:
    """What :func:`claim_many` found: the delivery as it was and, if it was sendable, the
    delivery moved to ``dispatched`` (or, taken over too often, to ``cancelled(abandoned)``).
    ``attempts`` counts the attempts recorded before this send (an interrupted send that was
    taken over included), so this send is attempt ``attempts + 1``."""

    was_status: DeliveryStatus
    was_orchestration_state: OrchestrationState
    was_retry_at: dt.datetime | None
    takeover_at: dt.datetime
    now: dt.datetime
    attempts: int
    dispatched: Delivery | None
    abandoned: Delivery | None = None
    #: The recipient's profile, read with the claim of a dispatched delivery (if any).
    profile: RecipientProfile | None = None
    #: Not claimed because policy must be asked first (see :func:`claim_many`).
    needs_policy: bool = False


_DELIVERY_FIELDS = [f.name for f in dataclasses.fields(Delivery)]


#: The error of the attempt a takeover records for the send it found interrupted.
INTERRUPTED = (
    "interrupted: the sending process stopped reporting before it recorded an outcome; "
    "the send may or may not have reached the provider"
)


def claim_many(
    conn: Conn,
    delivery_ids: Sequence[uuid.UUID],
    stuck_after: dt.timedelta,
    *,
    claimant: uuid.UUID | None = None,
    max_takeovers: int = 3,
    notes: dict[uuid.UUID, dict[str, Any]] | None = None,
    policy_checked: bool = False,
    throttled: Sequence[str] = (),
) -> dict[uuid.UUID, Claim]:
    """Move each delivery to ``dispatched``, held by ``claimant``, if it may be sent now, in
    one statement: the claim form of :func:`transition_many` (same guard, same history row).
    Its sendability test (ready; pending, failed and due for its retry, or dispatched by a
    claimant silent for ``stuck_after``) needs the rows' times on the database's clock. A
    takeover records the lost send as an interrupted attempt; past ``max_takeovers`` the
    delivery is cancelled as ``abandoned`` instead, with a ``progress`` job for its run (the
    caller moves the run at once; the job makes sure it moves if the caller dies first).
    ``notes`` adds evidence to a claimed delivery's history row. Missing ids are left out.

    Unless ``policy_checked``, a delivery policy could stop (any policy applies to it, its
    channel is ``throttled``, or it is deferred and now due) is not claimed: its claim says
    ``needs_policy``. A delivery dispatched by ``claimant`` itself lost its claim's reply
    (the claimant never claims one it holds): it is claimed again at once."""
    origins = allowed_from(DeliveryStatus.DISPATCHED)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            db.query("delivery_claim"),
            {
                "ids": list(delivery_ids),
                "stuck_after": stuck_after,
                "from_statuses": origins,
                "claimant": claimant,
                "max_takeovers": max_takeovers,
                "notes": Jsonb({str(k): v for k, v in (notes or {}).items()}),
                "policy_checked": policy_checked,
                "throttled": list(throttled),
                "interrupted": INTERRUPTED,
                "progress_queue": jobs_store.QUEUES["progress"],
                "progress_task": jobs_store.TASKS["progress"],
            },
        ).fetchall()
    claims = {}
    for row in rows:
        moved = None
        if row["moved"]:
            moved = Delivery(
                **{name: row[name] for name in _DELIVERY_FIELDS if name != "previous_status"},
                previous_status=row["was_status"],
            )
        dispatched = moved if moved is not None and moved.status == "dispatched" else None
        claims[row["claimed_id"]] = Claim(
            was_status=DeliveryStatus(row["was_status"]),
            was_orchestration_state=OrchestrationState(row["was_orchestration_state"]),
            was_retry_at=row["was_retry_at"],
            takeover_at=row["takeover_at"],
            now=row["db_now"],
            attempts=int(row["attempts"]),
            dispatched=dispatched,
            abandoned=moved if moved is not None and dispatched is None else None,
            profile=_profile(row) if dispatched is not None and row["has_profile"] else None,
            needs_policy=bool(row["needs_policy"]),
        )
    return claims


def _profile(row: dict[str, Any]) -> RecipientProfile:
    return RecipientProfile(
        id=row["recipient_id"],
        email=row["profile_email"],
        phone=row["profile_phone"],
        locale=row["profile_locale"],
        timezone=row["profile_timezone"],
        data=row["profile_data"] or {},
    )


def transitions(conn: Conn, delivery_id: uuid.UUID) -> list[DeliveryTransition]:
    with conn.cursor(row_factory=db.dataclass_row(DeliveryTransition)) as cur:
        return cur.execute(
            db.query("delivery_transitions_list"), {"delivery_id": delivery_id}
        ).fetchall()


@dataclass(frozen=True)
class NewAttempt:
    """An attempt to append with :func:`append_attempts`."""

    delivery_id: uuid.UUID
    outcome: AttemptOutcome
    started_at: dt.datetime
    error_class: ErrorClass | None = None
    error: str | None = None
    provider_message_id: str | None = None
    provider_response: dict[str, Any] | None = None


def append_attempts(conn: Conn, new: Sequence[NewAttempt]) -> list[Attempt]:
    """Append each delivery's next attempt, in one statement and in input order; the caller
    must hold the deliveries' row locks. One attempt per delivery."""
    if not new:
        return []
    with conn.cursor(row_factory=db.dataclass_row(Attempt)) as cur:
        return cur.execute(
            db.query("attempt_append"),
            {
                "delivery_ids": [a.delivery_id for a in new],
                "outcomes": [a.outcome for a in new],
                "error_classes": [a.error_class for a in new],
                "errors": [a.error for a in new],
                "provider_message_ids": [a.provider_message_id for a in new],
                "provider_responses": [Jsonb(a.provider_response or {}) for a in new],
                "started_at": [a.started_at for a in new],
            },
        ).fetchall()


def attempts(conn: Conn, delivery_id: uuid.UUID) -> list[Attempt]:
    with conn.cursor(row_factory=db.dataclass_row(Attempt)) as cur:
        return cur.execute(db.query("attempts_list"), {"delivery_id": delivery_id}).fetchall()


@dataclass(frozen=True)
class LatestAttempt:
    outcome: AttemptOutcome
    error_class: ErrorClass | None


def latest_attempt(conn: Conn, delivery_id: uuid.UUID) -> LatestAttempt | None:
    with conn.cursor(row_factory=db.dataclass_row(LatestAttempt)) as cur:
        return cur.execute(db.query("attempt_latest"), {"delivery_id": delivery_id}).fetchone()


def lock_step_delivery(conn: Conn, run_id: uuid.UUID, step_id: uuid.UUID) -> Delivery | None:
    """Lock a run step's delivery ``FOR UPDATE`` (after the run: lock order run, then
    delivery); ``None`` if the step has none."""
    with conn.cursor(row_factory=db.dataclass_row(Delivery)) as cur:
        return cur.execute(
            db.query("step_delivery_lock"), {"run_id": run_id, "step_id": step_id}
        ).fetchone()


@dataclass(frozen=True)
class Header:
    """A delivery with its notification, event and step, for explaining it."""

    id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    status: DeliveryStatus
    suppression_reason: DeliveryReason | None
    orchestration_state: str
    next_eligible_at: dt.datetime | None
    planning_reason: str | None
    planning_context: dict[str, Any]
    category: str | None
    workflow_key: str | None
    critical: bool
    retry_at: dt.datetime | None
    provider_message_id: str | None
    max_attempts: int
    workflow_run_id: uuid.UUID | None
    created_at: dt.datetime
    status_changed_at: dt.datetime
    terminal_at: dt.datetime | None
    notification_id: uuid.UUID
    notification_created_at: dt.datetime
    event_id: uuid.UUID
    notification_key: str
    correlation_id: str | None
    idempotency_key: str
    event_created_at: dt.datetime
    step_key: str | None


def explain_header(conn: Conn, tenant_id: str, delivery_id: uuid.UUID) -> Header | None:
    """Tenant-scoped: another tenant's delivery is ``None``, exactly like a missing one."""
    with conn.cursor(row_factory=db.dataclass_row(Header)) as cur:
        return cur.execute(
            db.query("delivery_explain_header"), {"id": delivery_id, "tenant_id": tenant_id}
        ).fetchone()


@dataclass(frozen=True)
class Hold:
    """Policy holds a delivery until ``until`` (``reason``: ``quiet_hours``, ``throttled``)."""

    delivery_id: uuid.UUID
    until: dt.datetime
    reason: str
    context: dict[str, Any]


def hold_many(conn: Conn, holds: Sequence[Hold]) -> list[uuid.UUID]:
    """Hold each delivery until its instant, in one statement: a pending one becomes
    ``deferred`` until then, a failed one has its retry moved there; each with a
    ``deferred`` history row. The held ids (others had moved on)."""
    if not holds:
        return []
    rows = conn.execute(
        db.query("deliveries_hold"),
        {
            "ids": [h.delivery_id for h in holds],
            "until": [h.until for h in holds],
            "reasons": [h.reason for h in holds],
            "contexts": [Jsonb(h.context) for h in holds],
        },
    ).fetchall()
    return [row[0] for row in rows]


def resume_many(conn: Conn, delivery_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Deferred deliveries become ready now (with their history rows); the resumed ids."""
    if not delivery_ids:
        return []
    rows = conn.execute(db.query("deliveries_resume"), {"ids": list(delivery_ids)}).fetchall()
    return [row[0] for row in rows]


def resume_deferred(conn: Conn, limit: int) -> list[uuid.UUID]:
    """Deferred deliveries whose time has come become ready (with their history rows),
    skipping rows another sweeper holds; their ids."""
    rows = conn.execute(db.query("deliveries_deferred_due_resume"), {"limit": limit}).fetchall()
    return [row[0] for row in rows]


def stuck(
    conn: Conn, *, pending_after: dt.timedelta, dispatched_after: dt.timedelta, limit: int
) -> list[uuid.UUID]:
    """Deliveries whose job was lost: ready ones waiting too long (outside any queued
    chunk), overdue retries, and dispatched ones whose worker went silent."""
    rows = conn.execute(
        db.query("deliveries_stuck_list"),
        {"pending_after": pending_after, "dispatched_after": dispatched_after, "limit": limit},
    ).fetchall()
    return [row[0] for row in rows]


def waiting_by_channel(conn: Conn) -> dict[str, int]:
    """Channel -> deliveries a worker will still send (pending, dispatched, failed)."""
    rows = conn.execute(db.query("deliveries_waiting_by_channel")).fetchall()
    return {str(channel): int(waiting) for channel, waiting in rows}


def release(conn: Conn, delivery_ids: Sequence[uuid.UUID], claimant: uuid.UUID) -> None:
    """``claimant`` gives up its hold on these dispatched deliveries."""
    conn.execute(db.query("deliveries_release"), {"ids": list(delivery_ids), "claimant": claimant})


@dataclass(frozen=True)
class NewRecord:
    """A send to record with :func:`record_many`: its attempt (``number`` is the one its
    claim gave), and the move its outcome makes if the delivery is still dispatched for
    that attempt."""

    delivery_id: uuid.UUID
    number: int
    outcome: AttemptOutcome
    started_at: dt.datetime
    error_class: ErrorClass | None
    error: str | None
    provider_message_id: str | None
    response: dict[str, Any]
    to: DeliveryStatus
    reason: str
    suppression_reason: DeliveryReason | None = None
    retry_delay: dt.timedelta | None = None
    exhausted: bool = False  # dispatched -> failed -> cancelled(retries_exhausted)
    context: dict[str, Any] | None = None


@dataclass(frozen=True)
class Recorded:
    """What :func:`record_many` did with one send."""

    delivery_id: uuid.UUID
    was_status: DeliveryStatus | None  # None: the delivery no longer exists
    attempt: LatestAttempt | None
    attempt_number: int | None
    moved: Delivery | None  # the delivery after its move; None: kept as evidence only
    replayed: bool = False  # recorded already (a record retried after a lost COMMIT reply)


def record_many(conn: Conn, records: Sequence[NewRecord]) -> list[Recorded]:
    """Append the sends' attempts and move their deliveries, in one statement (the record
    form of :func:`transition_many`); one result per send, in input order."""
    if not records:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            db.query("delivery_record"),
            {
                "ids": [r.delivery_id for r in records],
                "numbers": [r.number for r in records],
                "outcomes": [r.outcome for r in records],
                "error_classes": [r.error_class for r in records],
                "errors": [r.error for r in records],
                "provider_message_ids": [r.provider_message_id for r in records],
                "responses": [Jsonb(r.response) for r in records],
                "started_at": [r.started_at for r in records],
                "to_statuses": [r.to for r in records],
                "reasons": [r.reason for r in records],
                "suppression_reasons": [r.suppression_reason for r in records],
                "retry_delays": [r.retry_delay for r in records],
                "exhausted": [r.exhausted for r in records],
                "contexts": [Jsonb(r.context or {}) for r in records],
            },
        ).fetchall()
    out = []
    for row in rows:
        moved = None
        if row["moved"]:
            moved = Delivery(
                **{name: row[name] for name in _DELIVERY_FIELDS if name != "previous_status"},
                previous_status=DeliveryStatus.DISPATCHED,
            )
        attempt = None
        if row["recorded_outcome"] is not None:
            attempt = LatestAttempt(row["recorded_outcome"], row["recorded_error_class"])
        out.append(
            Recorded(
                delivery_id=row["input_id"],
                was_status=None if row["was_status"] is None else DeliveryStatus(row["was_status"]),
                attempt=attempt,
                attempt_number=row["recorded_number"],
                moved=moved,
                replayed=row["replayed"],
            )
        )
    return out


#: What :func:`find` can look deliveries up by.
FIND_KEYS = ("recipient_id", "idempotency_key", "correlation_id")


def find(
    conn: Conn,
    tenant_id: str,
    *,
    key: str | None,
    value: str | None,
    status: DeliveryStatus | None,
    limit: int,
) -> list[DeliverySummary]:
    """A tenant's deliveries whose recipient, event idempotency key or event correlation id
    (``key``, one of :data:`FIND_KEYS`) is ``value`` (``key`` ``None``: all of them),
    optionally of one ``status``, newest first; each key has the query that uses its index.
    Another tenant's rows never match."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "status": status, "limit": limit}
    if key == "recipient_id":
        query = db.query("deliveries_find_recipient")
    elif key == "idempotency_key":
        query = db.query("deliveries_find_idempotency_key")
    elif key == "correlation_id":
        query = db.query("deliveries_find_correlation_id")
    else:
        assert key is None, key
        query = db.query("deliveries_find_tenant")
    if key is not None:
        params[key] = value
    with conn.cursor(row_factory=db.dataclass_row(DeliverySummary)) as cur:
        return cur.execute(query, params).fetchall()
