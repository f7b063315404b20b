"""Every type a public Chimeway call returns, in one leaf module (re-exported by ``chimeway``).

They are plain frozen dataclasses: the engine builds them, callers read them. Row-shaped ones
(:class:`Delivery`, :class:`Attempt`, :class:`Transition`, ...) are also what the store reads
from the database; their fields follow the columns of design §4.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from chimeway.types import (
    TERMINAL_DELIVERY_STATUSES,
    AttemptOutcome,
    DeliveryReason,
    DeliveryStatus,
    ErrorClass,
    OrchestrationState,
    Outcome,
    RunState,
)

# -- trigger ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Triggered:
    """What a trigger wrote: its event and, per recipient, the rows it planned."""

    event_id: uuid.UUID
    notification_ids: list[uuid.UUID] = field(default_factory=list)
    delivery_ids: list[uuid.UUID] = field(default_factory=list)
    run_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Duplicate:
    """An event with this (tenant, idempotency key) exists: nothing was written or deferred."""

    event_id: uuid.UUID


# -- progression (design §6) --------------------------------------------------------------


@dataclass(frozen=True)
class Advanced:
    """The run moved its cursor to ``to_step`` and planned that step's delivery."""

    run_id: uuid.UUID
    to_step: str
    delivery_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Waiting:
    """The run waits until ``due_at`` (or one of its cancel signals)."""

    run_id: uuid.UUID
    due_at: dt.datetime


@dataclass(frozen=True)
class Completed:
    run_id: uuid.UUID
    terminal_reason: str


@dataclass(frozen=True)
class Stopped:
    run_id: uuid.UUID
    outcome: Outcome


@dataclass(frozen=True)
class Noop:
    """Nothing to do now; ``reason`` says why (``wait_not_due``, ``run_not_active``,
    ``prior_delivery_not_converged``, ``no_progress_rules``, ``no_matching_progress_rule``,
    ``no_active_step_delivery``, ``unknown_to_step``, ``run_not_found``)."""

    run_id: uuid.UUID
    reason: str


ProgressResult: TypeAlias = Advanced | Waiting | Completed | Stopped | Noop


# -- delivering --------------------------------------------------------------------------

DeliverAction: TypeAlias = Literal[
    "skipped", "succeeded", "retry_scheduled", "cancelled", "recorded"
]


@dataclass(frozen=True)
class DeliverResult:
    """What one delivery's ``deliver`` did: ``skipped`` (not sendable now; ``detail`` says
    why), ``succeeded``, ``retry_scheduled``, ``cancelled``, or ``recorded`` (the attempt was
    kept but the delivery had moved on meanwhile)."""

    delivery_id: uuid.UUID
    action: DeliverAction
    detail: str = ""


# -- signals (design §7) ------------------------------------------------------------------


@dataclass(frozen=True)
class Routed:
    signal_id: uuid.UUID
    resumed: list[uuid.UUID] = field(default_factory=list)
    results: list[ProgressResult] = field(default_factory=list)
    skipped: str | None = None  # why nothing was routed (missing, already routed)


@dataclass(frozen=True)
class SignalTracked:
    signal_id: uuid.UUID
    duplicate: bool = False  # the idempotency key was seen before: nothing was written
    routed: Routed | None = None  # with route="now": what routing it did


# -- recipients (design §12) ---------------------------------------------------------------


@dataclass(frozen=True)
class RecipientRecord:
    """A recipient's profile as the directory holds it (``cw.recipients.get``): personal
    data, for the code that reaches the person; never log it."""

    tenant_id: str
    recipient_id: str
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    data: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime

    def __repr__(self) -> str:  # a stray print or log line shows no address
        return f"RecipientRecord(tenant_id={self.tenant_id!r}, recipient_id={self.recipient_id!r})"


@dataclass(frozen=True)
class Forgotten:
    """What ``cw.recipients.forget`` erased: the profile (``False`` if there was none) and
    the rendered content of this many notifications and deliveries. Their ids, statuses and
    histories stay, so what was decided can still be explained."""

    tenant_id: str
    recipient_id: str
    profile_deleted: bool
    notifications_erased: int
    deliveries_erased: int


# -- preferences and policy (design §13) -----------------------------------------------------


@dataclass(frozen=True)
class PreferenceRecord:
    """One preference as stored: a scope (a channel; a category or a workflow, on every
    channel or on one) turned on or off for a recipient, or for every recipient of the
    tenant without a rule of their own (``recipient_id`` ``None``: the tenant's default).
    ``source`` says who set it: ``api``, ``unsubscribed:link``, or provider feedback
    (``unsubscribed:<provider>``, ``complained:<provider>``)."""

    tenant_id: str
    recipient_id: str | None
    channel: str | None
    category: str | None
    workflow: str | None
    enabled: bool
    set_at: dt.datetime
    source: str


@dataclass(frozen=True)
class QuietHoursSetting:
    """Quiet hours of a recipient, or the tenant's default (``recipient_id`` ``None``):
    ``start`` to ``end`` in local wall time (wrapping midnight when ``start > end``), in
    ``timezone`` or, when it is ``None``, the recipient's profile zone (else UTC). ``start``
    and ``end`` ``None``: explicitly none (a recipient's row then overrides the default)."""

    tenant_id: str
    recipient_id: str | None
    start: dt.time | None
    end: dt.time | None
    timezone: str | None
    set_at: dt.datetime


@dataclass(frozen=True)
class CapSetting:
    """A delivery cap of a recipient, or the tenant's default (``recipient_id`` ``None``):
    at most ``max_count`` deliveries per ``per``, on ``channel`` or on every channel
    (``None``). ``max_count`` ``None``: explicitly none (overrides the default)."""

    tenant_id: str
    recipient_id: str | None
    channel: str | None
    max_count: int | None
    per: dt.timedelta | None
    set_at: dt.datetime


@dataclass(frozen=True)
class RecipientPreferences:
    """Everything set for a recipient (``cw.preferences.get``): their own rules, quiet
    hours and caps, and the tenant's defaults that apply where they have none of their own.
    With ``recipient_id`` ``None``, only the tenant's defaults."""

    tenant_id: str
    recipient_id: str | None
    rules: list[PreferenceRecord]
    default_rules: list[PreferenceRecord]
    quiet_hours: QuietHoursSetting | None
    default_quiet_hours: QuietHoursSetting | None
    caps: list[CapSetting]
    default_caps: list[CapSetting]


# -- provider feedback (design §12) --------------------------------------------------------


@dataclass(frozen=True)
class WebhookResult:
    """What ``cw.webhooks.process`` stored: one ingress row (and its ``process_webhook``
    job) per new event; events the provider had sent before are ``duplicates``."""

    provider: str
    events: int
    ingress_ids: list[uuid.UUID] = field(default_factory=list)
    duplicates: int = 0


@dataclass(frozen=True)
class FeedbackProcessed:
    """What processing one ingress row did: ``outcome`` names it (``confirmed``,
    ``cancelled_bounced``, ``failed``, ``unchanged``, ``signal_tracked``, ``opted_out``, or
    ``ignored`` with ``detail`` saying why); ``run_result`` when a waiting run was decided
    again."""

    ingress_id: uuid.UUID
    outcome: str
    delivery_id: uuid.UUID | None = None
    detail: str = ""
    run_result: ProgressResult | None = None


# -- the in-app inbox (design §14) --------------------------------------------------------

InboxStatus: TypeAlias = Literal["all", "unread", "unseen"]
InboxAction: TypeAlias = Literal["seen", "read", "archived", "unarchived", "unread"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class InboxItem:
    """A notification in its recipient's in-app inbox: the ``in_app`` content it rendered and
    its marks. ``delivered_at`` is when it reached the inbox (its in-app delivery was sent);
    the feed is ordered by it, newest first."""

    id: uuid.UUID
    category: str | None
    content: dict[str, Any]
    created_at: dt.datetime
    delivered_at: dt.datetime
    seen_at: dt.datetime | None
    read_at: dt.datetime | None
    archived_at: dt.datetime | None

    @property
    def cursor(self) -> str:
        """The item's place in the feed (opaque): ``cursor=`` lists the items after it."""
        return f"{(self.delivered_at - _EPOCH) // _MICROSECOND}.{self.id.hex}"


@dataclass(frozen=True)
class InboxPage:
    """One page of a feed, newest first; ``next_cursor`` fetches the next (older) page, and
    is ``None`` on the last one."""

    items: list[InboxItem]
    next_cursor: str | None


@dataclass(frozen=True)
class InboxCounts:
    """A recipient's unarchived items: how many are unseen, unread, and in all."""

    unseen: int
    unread: int
    total: int


@dataclass(frozen=True)
class InboxMarked:
    """What ``cw.inbox.mark`` changed: the items whose marks moved (a repeated mark changes
    none) and how many ``chimeway.notification.seen``/``read`` signals it emitted."""

    action: InboxAction
    changed: list[uuid.UUID] = field(default_factory=list)
    signals: int = 0


# -- maintenance -------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepReport:
    runs_progressed: int
    deferred_resumed: int
    deliveries_redriven: int
    timers_armed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.runs_progressed} due run(s) progressed, {self.timers_armed} timer(s) "
            f"armed, {self.deferred_resumed} deferred delivery(ies) resumed, "
            f"{self.deliveries_redriven} stuck delivery(ies) re-driven"
        )


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove), by kind (see
    :class:`~chimeway.config.Retention`). ``events`` are Chimeway events, each removed with
    everything under it; ``job_events`` are Procrastinate's events of the removed jobs."""

    dry_run: bool
    jobs: int = 0
    job_events: int = 0
    periodic_defers: int = 0
    events: int = 0
    signals: int = 0
    webhooks: int = 0
    processes: int = 0

    @property
    def total(self) -> int:
        return (
            self.jobs
            + self.job_events
            + self.periodic_defers
            + self.events
            + self.signals
            + self.webhooks
            + self.processes
        )

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{verb} {self.jobs} finished job(s) with {self.job_events} job event(s), "
            f"{self.periodic_defers} periodic-defer row(s), {self.events} event(s) with "
            f"their notifications, deliveries and runs, {self.signals} signal(s), "
            f"{self.webhooks} webhook event(s), {self.processes} silent process(es)"
        )


# -- operator actions and lookups --------------------------------------------------------


@dataclass(frozen=True)
class RunCancelled:
    """What ``cw.cancel_run`` did. ``cancelled`` is False when the run had already finished
    (``state`` says how; nothing changed); else the run is now ``stopped`` and
    ``delivery_ids`` are its deliveries that were still to be sent (pending, or failed and
    waiting for a retry), now ``cancelled(manual)``. A send already in flight is not
    recalled: its outcome is recorded, and the run stays stopped."""

    run_id: uuid.UUID
    cancelled: bool
    state: RunState
    delivery_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class DeliveryRedriven:
    """What ``cw.redrive_delivery`` did: the delivery is ``pending`` again (from
    ``previous_status``) and its ``deliver`` job was deferred in the same transaction."""

    delivery_id: uuid.UUID
    previous_status: DeliveryStatus
    previous_reason: DeliveryReason | None
    status: DeliveryStatus = DeliveryStatus.PENDING


@dataclass(frozen=True)
class DeliverySummary:
    """One delivery as an operator's lookup (``cw.find``) lists it, with the event it
    came from."""

    delivery_id: uuid.UUID
    tenant_id: str
    event_id: uuid.UUID
    notification_key: str
    idempotency_key: str
    correlation_id: str | None
    recipient_id: str
    channel: str
    status: DeliveryStatus
    suppression_reason: DeliveryReason | None
    workflow_run_id: uuid.UUID | None
    created_at: dt.datetime
    status_changed_at: dt.datetime


# -- rows operators read -----------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A delivery row (design §4)."""

    id: uuid.UUID
    notification_id: uuid.UUID
    tenant_id: str
    recipient_id: str
    channel: str
    status: DeliveryStatus
    suppression_reason: DeliveryReason | None
    orchestration_state: OrchestrationState
    next_eligible_at: dt.datetime | None
    planning_reason: str | None
    planning_context: dict[str, Any]
    delay_fallback: bool
    render_data: dict[str, Any]
    workflow_run_id: uuid.UUID | None
    workflow_step_id: uuid.UUID | None
    provider_message_id: str | None
    max_attempts: int
    retry_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    status_changed_at: dt.datetime
    terminal_at: dt.datetime | None
    #: The process holding it while ``dispatched``, and how often a send was taken over.
    claimed_by: uuid.UUID | None = None
    takeovers: int = 0
    #: What policy decides it on, fixed when it was planned (design §13): the notifier's
    #: category, the workflow key (the notifier key outside a workflow), and the notifier's
    #: ``critical`` and ``bypass_quiet_hours`` flags.
    category: str | None = None
    workflow_key: str | None = None
    critical: bool = False
    bypass_quiet_hours: bool = False
    previous_status: DeliveryStatus | None = None  # set only by the moves that return it

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_DELIVERY_STATUSES


@dataclass(frozen=True)
class Attempt:
    """One call of a delivery's adapter, as recorded (append-only)."""

    id: int
    delivery_id: uuid.UUID
    attempt_number: int
    outcome: AttemptOutcome
    error_class: ErrorClass | None
    error: str | None
    provider_message_id: str | None
    provider_response: dict[str, Any]
    started_at: dt.datetime
    finished_at: dt.datetime


@dataclass(frozen=True)
class DeliveryTransition:
    """One status move of a delivery, as its history row."""

    id: int
    from_status: DeliveryStatus | None
    to_status: DeliveryStatus
    reason: str
    context: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class Transition:
    """One move of a workflow run, as its history row (``list_traces``)."""

    id: int
    run_id: uuid.UUID
    step_id: uuid.UUID | None
    delivery_id: uuid.UUID | None
    from_state: RunState | None
    to_state: RunState
    reason: str
    context: dict[str, Any]
    created_at: dt.datetime
    step_key: str | None = None  # filled by list_traces


@dataclass(frozen=True)
class RunExplanation:
    """Where a run is and why (the seeds' ``explain``), plus what identifies it."""

    id: uuid.UUID
    tenant_id: str
    state: RunState
    status_reason: str | None
    current_step_name: str | None
    suspended_until: dt.datetime | None
    pending_signals: list[str]
    terminal_reason: str | None
    status_context: dict[str, Any] = field(default_factory=dict)
    workflow_key: str = ""
    workflow_version: int = 0
    recipient_id: str = ""
    notification_id: uuid.UUID | None = None
    started_at: dt.datetime | None = None
    last_transition_at: dt.datetime | None = None


@dataclass(frozen=True)
class TimelineEntry:
    at: dt.datetime
    event: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryExplanation:
    """A delivery's whole story: its rows, its timeline, and one sentence saying why it did
    or did not send."""

    delivery_id: uuid.UUID
    tenant_id: str
    event_id: uuid.UUID
    notification_id: uuid.UUID
    notification_key: str
    correlation_id: str | None
    recipient_id: str
    channel: str
    status: DeliveryStatus
    suppression_reason: DeliveryReason | None
    workflow_run_id: uuid.UUID | None
    workflow_step: str | None
    attempts: list[Attempt]
    timeline: list[TimelineEntry]
    why: str
    #: Each policy decision about it, oldest first, in one sentence with its evidence
    #: ("Not sent: ana turned email off for 'mentions' at 2026-03-01 12:03Z.").
    decisions: list[str] = field(default_factory=list)

    @property
    def sent(self) -> bool:
        return self.status == DeliveryStatus.SUCCEEDED
