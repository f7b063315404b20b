"""Why policy suppresses a delivery: the ``suppression_reason`` planning stores (design §13)."""

from __future__ import annotations

from enum import StrEnum


class PolicyReason(StrEnum):
    """A policy suppression reason; the values are those of the delivery reason enum."""

    CHANNEL_DISABLED = "channel_disabled"
    CATEGORY_DISABLED = "category_disabled"
    WORKFLOW_DISABLED = "workflow_disabled"
    DELIVERY_CAP_REACHED = "delivery_cap_reached"
