"""What a delivery's state means to a workflow (design §6): a pure mapping.

``succeeded`` is *delivered*; ``suppressed`` is *suppressed*; a ``cancelled`` delivery with
``retries_exhausted``, ``permanent_failure`` or ``bounced`` is that outcome; a ``failed``
delivery that is still retrying is *temporary_failure* (not terminal: only an explicit rule
on it branches). Anything else (pending, dispatched, digested, other cancellations) is not
branchable yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from chimeway.types import DeliveryReason, DeliveryStatus, Outcome

_CANCELLED = {
    DeliveryReason.RETRIES_EXHAUSTED: Outcome.RETRIES_EXHAUSTED,
    DeliveryReason.PERMANENT_FAILURE: Outcome.PERMANENT_FAILURE,
    DeliveryReason.BOUNCED: Outcome.BOUNCED,
    # Dead-lettered after sends that never reported back: every attempt was lost.
    DeliveryReason.ABANDONED: Outcome.RETRIES_EXHAUSTED,
}


@dataclass(frozen=True)
class Evidence:
    """The raw facts an outcome was read from, kept in transition contexts."""

    delivery_status: str
    suppression_reason: str | None
    attempt_outcome: str | None
    attempt_error_class: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "delivery_status": self.delivery_status,
            "suppression_reason": self.suppression_reason,
            "attempt_outcome": self.attempt_outcome,
            "attempt_error_class": self.attempt_error_class,
        }


def outcome_for(status: str, suppression_reason: str | None) -> Outcome | None:
    """The branchable outcome of a delivery, or ``None`` when it is not branchable yet."""
    match DeliveryStatus(status):
        case DeliveryStatus.SUCCEEDED:
            return Outcome.DELIVERED
        case DeliveryStatus.SUPPRESSED:
            return Outcome.SUPPRESSED
        case DeliveryStatus.FAILED:
            return Outcome.TEMPORARY_FAILURE
        case DeliveryStatus.CANCELLED if suppression_reason is not None:
            return _CANCELLED.get(DeliveryReason(suppression_reason))
        case _:
            return None


def is_terminal(outcome: Outcome) -> bool:
    """Terminal outcomes can start a wait or complete a run; a retrying failure cannot."""
    return outcome is not Outcome.TEMPORARY_FAILURE
