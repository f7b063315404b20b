"""Status vocabularies shared by Python and PostgreSQL.

Each ``StrEnum`` here mirrors a PostgreSQL enum type named in :data:`PG_ENUMS`;
``tests/migrations/test_migrations.py`` fails if the two disagree.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    DIGESTED = "digested"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_DELIVERY_STATUSES


TERMINAL_DELIVERY_STATUSES = frozenset(
    {
        DeliveryStatus.SUCCEEDED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.DIGESTED,
    }
)


class DeliveryReason(StrEnum):
    """Why a delivery was suppressed or cancelled."""

    RETRIES_EXHAUSTED = "retries_exhausted"
    PERMANENT_FAILURE = "permanent_failure"
    BOUNCED = "bounced"
    CHANNEL_DISABLED = "channel_disabled"
    CATEGORY_DISABLED = "category_disabled"
    DELIVERY_CAP_REACHED = "delivery_cap_reached"
    ALREADY_READ = "already_read"
    SUPERSEDED = "superseded"  # its run moved on while it was still retrying
    MANUAL = "manual"
    NO_ADDRESS = "no_address"  # the channel's adapter needs an address the profile lacks
    ABANDONED = "abandoned"  # taken over too often without an outcome: the dead-letter end
    WORKFLOW_DISABLED = "workflow_disabled"  # the recipient or tenant turned the workflow off


class OrchestrationState(StrEnum):
    READY = "ready"
    DEFERRED = "deferred"
    DIGEST_HELD = "digest_held"


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BOUNCED = "bounced"
    REJECTED = "rejected"


class ErrorClass(StrEnum):
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    BOUNCED = "bounced"
    UNKNOWN = "unknown"


class RunState(StrEnum):
    ACTIVE = "active"
    WAITING = "waiting"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


class IngressState(StrEnum):
    QUEUED = "queued"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class FeedbackStatus(StrEnum):
    """What a provider said about a message (``chimeway.feedback.FeedbackKind``), stored."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


class Outcome(StrEnum):
    """A delivery's outcome as workflow progress rules see it (design §6)."""

    DELIVERED = "delivered"
    SUPPRESSED = "suppressed"
    TEMPORARY_FAILURE = "temporary_failure"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PERMANENT_FAILURE = "permanent_failure"
    BOUNCED = "bounced"


class DigestState(StrEnum):
    """A batch of a workflow that starts with ``Batch`` (design §15)."""

    OPEN = "open"
    CLOSED = "closed"


# PostgreSQL enum type -> the StrEnum that mirrors it.
PG_ENUMS: dict[str, type[StrEnum]] = {
    "chimeway_delivery_status": DeliveryStatus,
    "chimeway_delivery_reason": DeliveryReason,
    "chimeway_orchestration_state": OrchestrationState,
    "chimeway_attempt_outcome": AttemptOutcome,
    "chimeway_error_class": ErrorClass,
    "chimeway_run_state": RunState,
    "chimeway_ingress_state": IngressState,
    "chimeway_feedback_status": FeedbackStatus,
    "chimeway_digest_state": DigestState,
}
