"""The outcome mapper: every delivery status and reason, as a table (design §6)."""

from __future__ import annotations

import pytest

from chimeway.outcomes import is_terminal, outcome_for
from chimeway.types import DeliveryReason, DeliveryStatus, Outcome

CANCELLED_BRANCHABLE = {
    DeliveryReason.RETRIES_EXHAUSTED: Outcome.RETRIES_EXHAUSTED,
    DeliveryReason.PERMANENT_FAILURE: Outcome.PERMANENT_FAILURE,
    DeliveryReason.BOUNCED: Outcome.BOUNCED,
    # Dead-lettered after interrupted sends (none recorded an outcome): every try was lost.
    DeliveryReason.ABANDONED: Outcome.RETRIES_EXHAUSTED,
}

TABLE = [
    (DeliveryStatus.PENDING, None, None),
    (DeliveryStatus.DISPATCHED, None, None),
    (DeliveryStatus.SUCCEEDED, None, Outcome.DELIVERED),
    (DeliveryStatus.FAILED, None, Outcome.TEMPORARY_FAILURE),
    (DeliveryStatus.DIGESTED, None, None),
    (DeliveryStatus.CANCELLED, None, None),
    *[(DeliveryStatus.SUPPRESSED, r, Outcome.SUPPRESSED) for r in DeliveryReason],
    *[(DeliveryStatus.CANCELLED, r, CANCELLED_BRANCHABLE.get(r)) for r in DeliveryReason],
]


@pytest.mark.parametrize(("status", "reason", "expected"), TABLE)
def test_outcome_table(
    status: DeliveryStatus, reason: DeliveryReason | None, expected: Outcome | None
) -> None:
    assert outcome_for(status, reason) == expected


def test_table_covers_every_status() -> None:
    assert {row[0] for row in TABLE} == set(DeliveryStatus)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_only_a_retrying_failure_is_not_terminal(outcome: Outcome) -> None:
    assert is_terminal(outcome) is (outcome != Outcome.TEMPORARY_FAILURE)
